"""Enumeration benchmarks on PostgreSQL with real `celery worker` processes (docs/benchmarks.md).

    .venv/bin/python -m benchmarks.enumeration all                 # the three, full sizes
    .venv/bin/python -m benchmarks.enumeration throughput --dirs 200 --files-per-dir 100
    .venv/bin/python -m benchmarks.enumeration throughput --fanout 3 --depth 8  # a deep tree
    .venv/bin/python -m benchmarks.enumeration rss --big-dir-files 20000
    .venv/bin/python -m benchmarks.enumeration recovery --repeat 3
    .venv/bin/python -m benchmarks.enumeration profile --dirs 2000  # py-spy on workers + cProfile
    .venv/bin/python -m benchmarks.enumeration profile --on-cpu     # py-spy's on-CPU samples only
    .venv/bin/python -m benchmarks.enumeration bound --repeat 3     # what per-entry work allows

throughput  two workers enumerate DIRS x FILES_PER_DIR files; compared with the floor in the same
            run (`find -printf | psql \\copy` into a plain table). Target: >= 0.5x the floor.
rss         one `-P solo` worker lists one directory of BIG_DIR_FILES files; its VmHWM.
            Target: <= 150 MB.
recovery    both workers are SIGKILLed (whole process groups) once half the files are found, and
            two fresh ones started. Target: <= 1.15x the uninterrupted run, each timed as
            the reference is, from workers ready: the seconds with no worker at all (the
            SIGKILL to the first fresh worker's " ready.") are left out, and printed with
            the wall clock's ratio.
profile     not a measurement: py-spy on both workers of a run, then the engine in this process
            under cProfile (statements and transactions per directory).
bound       not a run of Census: the CPU of the per-entry work alone (listing, COPY rows, their
            COPY into a table with the output table's keys) beside the floor, and the best
            ratio any Census of this design could reach on this machine's cores.

This process plays beat: it runs the Reaper as often as beat's schedule does (every 15 s) while
it follows a session; the recovery benchmark runs it every second, in its uninterrupted
reference runs as in those that kill workers, so that it measures the engine's recovery, not
beat's period. The database (default census_bench) is created and migrated when needed and
its enumeration tables are emptied before every run; the Redis database (default 12) is
flushed before every run.
Generated trees live under --base (default /tmp/census-bench) and are reused when present.

Every figure is printed with the load average beside it. The exit status is non-zero only on an
error: a run that did not finish, or an output that does not match the tree. A missed target is
a FAIL line, not an error.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.report import cpu_probe, cpu_times, load_average, say, steal_share, verdict

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/census_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/12"
CLK_TCK = os.sysconf("SC_CLK_TCK")

THROUGHPUT_TARGET = 0.5  # Census files/s >= this x the floor's
RSS_TARGET_BYTES = 150_000_000  # 150 MB
RECOVERY_TARGET = 1.15  # interrupted working time <= this x the uninterrupted run
# The Reaper's period where a worker is killed (recovery, the resumed rss run), and in the
# uninterrupted runs compared with them: a dead worker's tasks are taken back within a second.
REAP_EVERY_AFTER_A_KILL = 1.0


LOG_STAMP = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}")  # a log line's time, local


class BenchError(Exception):
    """The benchmark could not produce a trustworthy figure."""


# --- trees -------------------------------------------------------------------------------------
@dataclass
class Tree:
    root: Path
    directories: int  # below the root (the root is the target, not a found object)
    files: int

    @property
    def entries(self) -> int:
        return self.directories + self.files


def _create_files(directory: str, count: int) -> None:
    width = max(3, len(str(count - 1)))
    for j in range(count):
        fd = os.open(
            os.path.join(directory, f"f{j:0{width}d}.dat"), os.O_CREAT | os.O_EXCL | os.O_WRONLY
        )
        if j % 7:
            os.write(fd, b"x" * (j % 7))
        os.close(fd)


def _materialise(base: Path, name: str, layout: dict, build) -> Path:
    """Build a tree once (into NAME.partial, then renamed) and reuse it while its layout matches."""
    root = base / name
    marker = base / f"{name}.layout.json"
    if root.exists():
        if marker.exists() and json.loads(marker.read_text()) == layout:
            say(f"reusing {root} ({layout})")
            return root
        raise BenchError(f"{root} exists but not with layout {layout}: remove it first")
    base.mkdir(parents=True, exist_ok=True)
    partial = base / f"{name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    say(f"generating {root} ({layout}) ...")
    started = time.monotonic()
    partial.mkdir()
    build(str(partial))
    os.rename(partial, root)
    marker.write_text(json.dumps(layout))
    say(f"generated in {time.monotonic() - started:.1f}s")
    # Written back before any run, so that no run's listing competes with the kernel writing
    # the new tree's inodes out.
    started = time.monotonic()
    os.sync()
    say(f"written back in {time.monotonic() - started:.1f}s")
    return root


def tree_ensure(base: Path, dirs: int, files_per_dir: int) -> Path:
    """DIRS directories directly under the root, FILES_PER_DIR files in each; ASCII names."""
    name = "tree-1m" if (dirs, files_per_dir) == (10_000, 100) else f"tree-{dirs}x{files_per_dir}"
    width = max(5, len(str(dirs - 1)))

    def build(root: str) -> None:
        for i in range(dirs):
            directory = os.path.join(root, f"d{i:0{width}d}")
            os.mkdir(directory)
            _create_files(directory, files_per_dir)

    layout = {"directories": dirs, "files_per_directory": files_per_dir, "version": 1}
    return _materialise(base, name, layout, build)


def deep_tree_ensure(base: Path, fanout: int, depth: int, files_per_dir: int) -> Path:
    """FANOUT subdirectories in every directory down to DEPTH levels, FILES_PER_DIR files in each
    directory below the root: a deep tree where no directory has subdirectories enough to fill a
    task."""

    def build(root: str) -> None:
        level = [root]
        for _ in range(depth):
            below = []
            for parent in level:
                for i in range(fanout):
                    directory = os.path.join(parent, f"s{i}")
                    os.mkdir(directory)
                    _create_files(directory, files_per_dir)
                    below.append(directory)
            level = below

    layout = {"fanout": fanout, "depth": depth, "files_per_directory": files_per_dir, "version": 1}
    return _materialise(base, f"deep-{fanout}x{depth}x{files_per_dir}", layout, build)


def big_dir_ensure(base: Path, files: int) -> Path:
    """One directory holding FILES files and nothing else."""
    layout = {"directories": 0, "files": files, "version": 1}
    return _materialise(base, f"bigdir-{files}", layout, lambda root: _create_files(root, files))


def tree_count(root: Path) -> Tree:
    """The ground truth: every entry below the root, without following symlinks."""
    directories = files = 0
    stack = [os.fsencode(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    directories += 1
                    stack.append(entry.path)
                else:
                    files += 1
    return Tree(root, directories, files)


# --- processes ---------------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of one process (not its children)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_group(pgid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def memory_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


class Worker:
    """A real `celery worker` in a process group of its own, logging to a file."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        logdir: Path,
        *,
        solo: bool = False,
        cwd: Path = REPO,
        concurrency: int = 1,
    ):
        self.name = name
        self.log = logdir / f"{name}.log"
        from tests.fixtures.workers import celery_worker_command

        command = celery_worker_command(
            name,
            queues="enumerate,default",
            concurrency=concurrency,
            pool="solo" if solo else None,
            host="census-bench",
        )
        self._log_file = open(self.log, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise BenchError(f"worker {self.name} exited; see {self.log}")
        return b" ready." in self.log.read_bytes()

    def ready_at(self) -> float | None:
        """When the worker logged " ready.", in seconds of the epoch (its log's millisecond
        stamp, local time as `logging` writes it); None before then."""
        for line in self.log.read_bytes().splitlines():
            if b" ready." in line and (stamp := LOG_STAMP.search(line)):
                at = dt.datetime.strptime(stamp.group().decode(), "%Y-%m-%d %H:%M:%S,%f")
                return at.timestamp()
        return None

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise BenchError(f"worker {self.name} not ready after {timeout}s; see {self.log}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The worker's processes. Cached: scanning all of /proc every second cost the benchmark
        more CPU than the poll itself on a machine running many processes, CPU the workers then
        lacked. Rescanned when a cached process has gone, or after 10 s (a new pool child)."""
        if self.proc.poll() is not None:
            return []
        now = time.monotonic()
        cached, at = getattr(self, "_pids", ([], 0.0))
        gone = not all(os.path.exists(f"/proc/{pid}") for pid in cached)
        if len(cached) < 2 or now - at > 10 or gone:
            cached = process_group(self.proc.pid)
            self._pids = (cached, now)
        return cached

    def pool_children(self) -> list[int]:
        return [pid for pid in self.pids() if pid != self.proc.pid]

    def kill(self) -> None:
        """SIGKILL the whole process group: parent and pool child, a machine that died."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        self._log_file.close()


class CpuMeter:
    """CPU seconds spent in a window by the workers and by PostgreSQL's backends of our database.

    Sampled every second while a session is followed (and just before a kill), so a process that
    ends in the window counts up to its last sample.
    """

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.baseline: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        self.rusage_start = resource.getrusage(resource.RUSAGE_SELF)
        self._sample(baseline=True)

    def _backend_pids(self) -> list[int]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [row[0] for row in cursor.fetchall()]

    def _sample(self, baseline: bool = False) -> None:
        groups = {"workers": [p for w in self.workers for p in w.pids()]}
        groups["postgres"] = self._backend_pids()
        for label, pids in groups.items():
            for pid in pids:
                cpu = process_cpu(pid)
                if cpu is None:
                    continue
                key = (label, pid)
                if key not in self.baseline:
                    self.baseline[key] = cpu if baseline else 0.0
                self.last[key] = cpu

    sample = _sample

    def totals(self) -> dict[str, float]:
        out = Counter()
        for key, cpu in self.last.items():
            out[key[0]] += cpu - self.baseline[key]
        now = resource.getrusage(resource.RUSAGE_SELF)
        out["benchmark"] = (now.ru_utime + now.ru_stime) - (
            self.rusage_start.ru_utime + self.rusage_start.ru_stime
        )
        return {k: round(v, 1) for k, v in out.items()}


# --- database and broker -----------------------------------------------------------------------
def configure(args: argparse.Namespace) -> None:
    """Point this process at the benchmark database and broker, then start Django."""
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["CELERY_BROKER_URL"] = args.broker_url
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("LOG_FORMAT", "text")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.pop("CENSUS_TEST_PAUSE_LISTING", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.conf import settings

    # The Reaper here uses the workers' lease, as beat would with the same environment.
    settings.CENSUS = {**settings.CENSUS, "LEASE_SECONDS": args.lease}


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "CELERY_BROKER_URL": args.broker_url,
        "CENSUS_LEASE_SECONDS": str(args.lease),
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
    }
    env.pop("CENSUS_TEST_PAUSE_LISTING", None)
    for item in args.worker_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def database_prepare(args: argparse.Namespace) -> None:
    """Create the database when it is missing, and migrate it."""
    from django.core.management import call_command

    url = args.database_url
    name = url.rsplit("/", 1)[1]
    server = url.rsplit("/", 1)[0] + "/postgres"
    exists = subprocess.run(
        ["psql", "-X", "-Atq", server, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not exists:
        say(f"creating database {name}")
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    call_command("migrate", verbosity=0)


def reset(args: argparse.Namespace) -> None:
    """Empty the enumeration tables and the broker's database: every run starts from nothing."""
    import redis
    from django.apps import apps
    from django.db import connection

    tables = [m._meta.db_table for m in apps.get_app_config("enumeration").get_models()]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        cursor.execute("CHECKPOINT")  # no checkpoint of the previous run's writes inside this one
    redis.Redis.from_url(args.broker_url).flushdb()


def pg_stats() -> dict[str, int]:
    """This database's cumulative counters (flushed by backends at most every second)."""
    from django.db import connection

    connection.close()
    time.sleep(1.5)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        row = cursor.fetchone()
    keys = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted", "wal")
    return dict(zip(keys, row, strict=True))


def wal_position() -> int:
    """Bytes of WAL the whole cluster has written so far (other databases' writes included)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
        return cursor.fetchone()[0]


# --- following a session -----------------------------------------------------------------------
class StatementCounter:
    """Counts this process's own SQL statements (the poller and the Reaper)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def _reaper_period() -> float:
    """The Reaper's period in beat's schedule (``enumeration.schedule``)."""
    from enumeration.schedule import PERIODIC_JOBS

    return next(
        job.every_seconds for job in PERIODIC_JOBS if job.task == "enumeration.tasks.reap_tasks"
    )


def follow(session_id, *, timeout: float, meter: CpuMeter, reap_every: float, on_tick=None):
    """Poll the session every 0.1 s until it is no longer active, sampling the processes' CPU
    every second; run the Reaper every ``reap_every`` seconds, as beat would."""
    from enumeration.models import SessionState
    from enumeration.models.sessions import ACTIVE_SESSION_STATUSES
    from enumeration.services.sessions import tasks_reap

    deadline = time.monotonic() + timeout
    last_reap = last_sample = time.monotonic()
    while True:
        session = SessionState.objects.get(pk=session_id)
        if session.status not in ACTIVE_SESSION_STATUSES:
            return session
        if on_tick:
            on_tick(session)
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"session still {session.status} after {timeout}s")
        if now - last_reap >= reap_every:
            tasks_reap()
            last_reap = now
        if now - last_sample >= 1:
            meter.sample()
            last_sample = now
        time.sleep(0.1)


def verify(session, tree: Tree) -> list[str]:
    """The session's output against the ground truth. Returns the problems found."""
    from django.db import connection
    from django.db.models import Count

    from enumeration.choices import SessionStatus
    from enumeration.models import Batch, StagedOutputRecord, TaskOutputRecord

    problems = []
    if session.status != SessionStatus.COMPLETED:
        problems.append(f"session ended {session.status}: {session.failure_reason}")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), count(DISTINCT object_key) FROM {TaskOutputRecord._meta.db_table} "
            "WHERE session_id = %s",
            [session.pk],
        )
        records, distinct = cursor.fetchone()
    by_type = Counter(
        dict(
            TaskOutputRecord.objects.filter(session=session)
            .values_list("record_type")
            .annotate(n=Count("pk"))
        )
    )
    checks = [
        ("output records", records, tree.entries),
        ("distinct keys", distinct, tree.entries),
        ("FILE records", by_type.get("FILE", 0), tree.files),
        ("DIRECTORY records", by_type.get("DIRECTORY", 0), tree.directories),
        ("session files_found", session.files_found, tree.files),
        ("session directories_found", session.directories_found, tree.directories),
        (
            "batches (one per directory and the root)",
            Batch.objects.filter(session=session).count(),
            tree.directories + 1,
        ),
        ("staged rows left", StagedOutputRecord.objects.filter(session=session).count(), 0),
    ]
    for what, got, want in checks:
        if got != want:
            problems.append(f"{what}: {got:,}, expected {want:,}")
    say(
        f"  verified: {records:,} output records ({by_type.get('FILE', 0):,} files + "
        f"{by_type.get('DIRECTORY', 0):,} directories; ground truth {tree.files:,} + "
        f"{tree.directories:,} = {tree.entries:,}), {distinct:,} distinct keys"
        + ("" if not problems else f"; PROBLEMS: {problems}")
    )
    return problems


@dataclass
class RunResult:
    label: str
    seconds: float
    files: int
    entries: int
    files_per_s: float
    load_before: str
    load_after: str
    cpu_seconds: dict[str, float]
    pg: dict[str, int]
    own_statements: int
    events: dict[str, float] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)
    session_db_seconds: float = 0.0
    steal: float | None = None  # the share of the machine's CPU time stolen during the run


def _steal(before: list[int]) -> str:
    share = steal_share(before, cpu_times())
    return "" if share is None else f", steal {share:.0%}"


def census_run(
    args: argparse.Namespace,
    tree: Tree,
    label: str,
    *,
    workers: int = 2,
    solo: bool = False,
    kill_at: float | None = None,
    py_spy_dir: Path | None = None,
    reap_every: float | None = None,
) -> RunResult:
    """One session from enumerate_target() to its end, with real workers; verified. The Reaper
    runs every ``reap_every`` seconds (by default, beat's period)."""
    from django.db import connection

    from enumeration.services.sessions import enumerate_target

    reset(args)
    logdir = args.base / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    env = worker_env(args)
    started: list[Worker] = []
    spies: list[subprocess.Popen] = []

    def spawn(name: str) -> Worker:
        return Worker(
            name, env, logdir, solo=solo, cwd=args.worker_repo, concurrency=args.concurrency
        )

    try:
        for i in range(1, workers + 1):
            started.append(spawn(f"{label}-w{i}"))
        for w in started:
            w.wait_ready()
        time.sleep(2)  # let the start-up's resume_active_sessions message go by
        idle = memory_status(started[0].pid) if solo else {}
        if py_spy_dir is not None:
            spies = py_spy_start(started, py_spy_dir, label, on_cpu=args.on_cpu)
        pg_before = pg_stats()
        meter = CpuMeter(started)
        events: dict[str, float] = {}
        counter = StatementCounter()
        load_before = load_average()
        times_before = cpu_times()
        t0 = time.monotonic()
        t0_epoch = time.time()

        def on_tick(session) -> None:
            if kill_at is None or "killed" in events:
                fresh = started[-workers:]
                if (
                    "killed" in events
                    and "fresh_ready" not in events
                    and all(w.ready() for w in fresh)
                ):
                    # From their logs' stamps, not this 0.1 s poll: the first fresh worker
                    # ready ends the time in which nothing could run, the last one the restart.
                    ready = [w.ready_at() - t0_epoch for w in fresh]
                    events["first_fresh_ready"] = round(min(ready), 3)
                    events["fresh_ready"] = round(max(ready), 3)
                return
            if session.files_found >= kill_at * tree.files:
                meter.sample()
                for w in started:
                    w.kill()
                events["killed"] = round(time.monotonic() - t0, 3)
                events["files_found_at_kill"] = session.files_found
                say(
                    f"  SIGKILL to both workers' process groups at {events['killed']}s "
                    f"({session.files_found:,} files found); starting two fresh workers"
                )
                for i in range(1, workers + 1):
                    started.append(spawn(f"{label}-fresh{i}"))
                meter.workers = started

        with connection.execute_wrapper(counter):
            session = enumerate_target(path=str(tree.root))
            session = follow(
                session.pk,
                timeout=args.timeout,
                meter=meter,
                on_tick=on_tick,
                reap_every=reap_every or _reaper_period(),
            )
        seconds = time.monotonic() - t0
        load_after = load_average()
        steal = steal_share(times_before, cpu_times())
        meter.sample()
        memory = {}
        if solo:
            memory = {f"idle_{k}": v for k, v in idle.items()}
            memory.update({f"after_{k}": v for k, v in memory_status(started[0].pid).items()})
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(timeout=60)
        for w in started:
            w.stop()
        pg_after = pg_stats()
        problems = verify(session, tree)
        if problems:
            raise BenchError(f"{label}: the output does not match the tree: {problems}")
        if "killed" in events:
            requeued = sum(
                w.log.read_bytes().count(b"'completed'") for w in started[-workers:]
            )  # tasks finished by the fresh workers
            events["tasks_completed_by_fresh_workers"] = requeued
        return RunResult(
            label=label,
            seconds=round(seconds, 2),
            files=tree.files,
            entries=tree.entries,
            files_per_s=round(tree.files / seconds),
            load_before=load_before,
            load_after=load_after,
            cpu_seconds=meter.totals(),
            pg={k: pg_after[k] - pg_before[k] for k in pg_after},
            own_statements=counter.count,
            events=events,
            memory=memory,
            session_db_seconds=round(
                (session.completed_at - session.created_at).total_seconds(), 2
            ),
            steal=None if steal is None else round(steal, 3),
        )
    finally:
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
        for w in started:
            w.stop()


def describe(run: RunResult) -> None:
    cpu = run.cpu_seconds
    say(
        f"  {run.label}: {run.files:,} files ({run.entries:,} entries) in {run.seconds:.1f}s = "
        f"{run.files_per_s:,} files/s  [load {run.load_before} -> {run.load_after}"
        f"{'' if run.steal is None else f', steal {run.steal:.0%}'}]"
    )
    say(
        f"  CPU seconds: workers {cpu.get('workers', 0)}, PostgreSQL backends "
        f"{cpu.get('postgres', 0)}, this process {cpu.get('benchmark', 0)} "
        f"(wall {run.seconds:.1f}s x 2 cores = {2 * run.seconds:.0f} core-s)"
    )
    say(
        f"  PostgreSQL: {run.pg['xact_commit']:,} commits, {run.pg['tup_inserted']:,} rows "
        f"inserted, {run.pg['tup_updated']:,} updated, {run.pg['tup_deleted']:,} deleted, "
        f"{run.pg['wal'] / 1e6:,.0f} MB of WAL (cluster-wide) = "
        f"{run.pg['wal'] / run.entries:,.0f} bytes per entry "
        f"(this process's own statements: {run.own_statements:,})"
    )


# --- the floor ---------------------------------------------------------------------------------
def floor_run(args: argparse.Namespace, tree: Tree) -> dict:
    """`find -printf` piped into `psql \\copy` into a plain table made fresh for the run."""
    psql = ["psql", "-X", "-v", "ON_ERROR_STOP=1", args.database_url]
    subprocess.run(
        [
            *psql,
            "-q",
            "-c",
            "SET client_min_messages = warning; DROP TABLE IF EXISTS bench_floor; "
            "CREATE TABLE bench_floor (path text, size bigint, mtime double precision)",
        ],
        check=True,
    )
    pipeline = (
        f"find {shlex.quote(str(tree.root))} -printf '%p\\t%s\\t%T@\\n' | "
        f"{shlex.join(psql)} -c " + shlex.quote("\\copy bench_floor(path,size,mtime) FROM STDIN")
    )
    load_before = load_average()
    times_before = cpu_times()
    wal_before = wal_position()
    t0 = time.monotonic()
    out = subprocess.run(
        ["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, text=True, check=True
    )
    seconds = time.monotonic() - t0
    load_after = load_average()
    steal = _steal(times_before)
    wal = wal_position() - wal_before
    match = re.search(r"COPY (\d+)", out.stdout)
    rows = int(match.group(1)) if match else -1
    if rows != tree.entries + 1:  # find prints the root too
        raise BenchError(f"floor copied {rows} rows, expected {tree.entries + 1}: {out.stderr}")
    subprocess.run([*psql, "-q", "-c", "DROP TABLE bench_floor"], check=True)
    result = {
        "command": pipeline,
        "seconds": round(seconds, 2),
        "rows": rows,
        "files_per_s": round(tree.files / seconds),
        "load_before": load_before,
        "load_after": load_after,
        "wal": wal,
    }
    say(
        f"  floor: {rows:,} rows ({tree.files:,} files) in {seconds:.2f}s = "
        f"{result['files_per_s']:,} files/s, {wal / 1e6:,.0f} MB of WAL (cluster-wide) "
        f"[load {load_before} -> {load_after}{steal}]"
    )
    return result


# --- profiling ---------------------------------------------------------------------------------
def py_spy_start(
    workers: list[Worker], outdir: Path, label: str, on_cpu: bool = False
) -> list[subprocess.Popen]:
    """py-spy (raw collapsed stacks) on each worker's process doing the work: wall time, idle
    included, or with ``on_cpu`` only the samples of a thread on a CPU."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        raise BenchError(f"{py_spy} not found: `.venv/bin/pip install py-spy` (not a requirement)")
    outdir.mkdir(parents=True, exist_ok=True)
    spies = []
    for w in workers:
        for pid in w.pool_children() or [w.pid]:
            spies.append(
                subprocess.Popen(
                    [
                        str(py_spy),
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        "100",
                        *([] if on_cpu else ["--idle"]),
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--output",
                        str(outdir / f"{label}-{w.name}-{pid}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    time.sleep(1)
    return spies


# Where a worker's wall time goes, by the innermost Python frame of each sample (first match).
# py-spy names frames "Class.function (path:line)"; the caller decides between the SQL kinds.
def _categorise(stack: str, leaf: str, copy_leaves: tuple[str, ...]) -> str:
    if any(s in leaf for s in ("billiard/connection.py", "kombu/", "/selectors.py")):
        return "idle: waiting for a message"
    if "pipeline_advance" in stack:
        return "Pipeliner after the task (its SQL and Python)"
    if "._commit (" in leaf:
        return "COMMIT round trips (WAL flush)"
    if leaf.endswith(copy_leaves):
        return "COPY round trips"
    if "._execute (" in leaf or "DatabaseErrorWrapper" in leaf:
        return "other SQL statement round trips"
    if "list_unit" in stack:
        return "listing: scandir, stat, hashing, Entry"
    if leaf.startswith(("_binary_rows ", "_copy_rows ", "_text_field ", "_entry_fields ")):
        return "building the COPY rows"
    return "other Python (ORM, engine, Celery, logging)"


def py_spy_summary(outdir: Path, label: str, repo: Path) -> dict:
    """Categories of wall time and the busiest engine functions over every worker's samples."""
    engine = repo / "enumeration" / "services" / "engine.py"
    copy_leaves = tuple(
        f"(enumeration/services/engine.py:{n})"
        for n, line in enumerate(engine.read_text().splitlines(), 1)
        if "copy_expert" in line
    )
    categories: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for path in sorted(outdir.glob(f"{label}-*.txt")):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            n = int(count)
            total += n
            categories[_categorise(stack, frames[-1], copy_leaves)] += n
            for function in {f.rsplit(":", 1)[0] + ")" for f in frames}:
                inclusive[function] += n
    if not total:
        raise BenchError(f"py-spy recorded nothing in {outdir}")
    share = {k: round(100 * v / total, 1) for k, v in categories.most_common()}
    say(f"  py-spy: {total:,} samples over the workers (wall time, idle included)")
    for name, pct in share.items():
        say(f"    {pct:5.1f}%  {name}")
    top = [
        (k, round(100 * v / total, 1))
        for k, v in inclusive.most_common()
        if "(enumeration/" in k or "(django/db/" in k
    ][:20]
    say("  engine and Django DB functions (inclusive share of samples):")
    for name, pct in top:
        say(f"    {pct:5.1f}%  {name}")
    return {"samples": total, "categories": share, "inclusive_top": top}


def cprofile_run(args: argparse.Namespace, tree: Tree) -> dict:
    """The engine in this process (the embedded default's loop) under cProfile: calls per unit."""
    from enumeration.services.inprocess import session_drain
    from enumeration.services.sessions import enumerate_target

    reset(args)
    before = pg_stats()
    load_before = load_average()
    profiler = cProfile.Profile()
    t0 = time.monotonic()
    session = enumerate_target(path=str(tree.root))
    profiler.enable()
    session = session_drain(session_id=session.pk, idle_sleep=0.1)
    profiler.disable()
    seconds = time.monotonic() - t0
    load_after = load_average()
    after = pg_stats()
    problems = verify(session, tree)
    if problems:
        raise BenchError(f"cProfile run: the output does not match the tree: {problems}")
    stats = pstats.Stats(profiler)
    calls = Counter()
    for (filename, _, name), (_, ncalls, *_rest) in stats.stats.items():
        if "psycopg2" in name or filename == "~":
            for key in ("execute", "copy_expert", "commit"):
                if f"'{key}' of 'psycopg2" in name:
                    calls[key] += ncalls
    units = tree.directories + 1
    commits = after["xact_commit"] - before["xact_commit"]
    result = {
        "seconds": round(seconds, 2),
        "files_per_s": round(tree.files / seconds),
        "load_before": load_before,
        "load_after": load_after,
        "units": units,
        "transactions_per_unit": round(commits / units, 2),
        "statements_per_unit": round((calls["execute"] + calls["copy_expert"]) / units, 2),
        "copy_per_unit": round(calls["copy_expert"] / units, 2),
        "explicit_commits_per_unit": round(calls["commit"] / units, 2),
    }
    say(
        f"  cProfile (one process, no Celery): {tree.files:,} files in {seconds:.1f}s = "
        f"{result['files_per_s']:,} files/s under the profiler  [load {load_before} -> "
        f"{load_after}]"
    )
    say(
        f"  per directory: {result['transactions_per_unit']} transactions (pg_stat_database), "
        f"{result['statements_per_unit']} statements incl. {result['copy_per_unit']} COPY "
        f"(psycopg2 calls), {result['explicit_commits_per_unit']} explicit COMMITs"
    )
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
    dump = args.base / "profile" / "cprofile.txt"
    dump.parent.mkdir(parents=True, exist_ok=True)
    dump.write_text(text.getvalue())
    profiler.dump_stats(str(dump.with_suffix(".prof")))
    lines = [ln for ln in text.getvalue().splitlines() if re.match(r"\s+\d", ln)][:12]
    say("  top functions by own time (ncalls tottime percall cumtime percall function):")
    for ln in lines:
        say(f"    {ln.strip()}")
    result["top_tottime"] = lines
    return result


# --- the benchmarks ----------------------------------------------------------------------------
def bench_throughput(args: argparse.Namespace, results: dict) -> None:
    if args.fanout:
        say(
            f"\n== throughput: deep tree, {args.fanout} subdirectories x {args.depth} levels, "
            f"{args.files_per_dir} files in each directory, {args.workers} worker(s) x "
            f"{args.concurrency} process(es) =="
        )
        root = deep_tree_ensure(args.base, args.fanout, args.depth, args.files_per_dir)
    else:
        say(
            f"\n== throughput: {args.dirs:,} directories x {args.files_per_dir} files, "
            f"{args.workers} worker(s) x {args.concurrency} process(es) =="
        )
        root = tree_ensure(args.base, args.dirs, args.files_per_dir)
    tree = tree_count(root)
    say(
        f"  ground truth (os.scandir walk): {tree.files:,} files + {tree.directories:,} directories"
    )
    # On a shared machine the floor alone varies by half from one run to the next: with
    # --repeat N, N floors and N Census runs alternate and the ratio is of their medians.
    pairs = []
    for _ in range(args.repeat):
        floor = floor_run(args, tree)
        run = census_run(args, tree, "throughput", workers=args.workers)
        describe(run)
        ratio = floor["seconds"] / run.seconds  # the same files: the ratio of the rates
        if args.repeat > 1:
            say(f"  ratio Census/floor = {ratio:.3f}")
        pairs.append({"floor": floor, "census": asdict(run), "ratio": round(ratio, 3)})
    floor_s = statistics.median(p["floor"]["seconds"] for p in pairs)
    census_s = statistics.median(p["census"]["seconds"] for p in pairs)
    # The pairs' median: each pair ran side by side, so a pair's ratio is not moved by the
    # machine's speed drifting between pairs as a ratio of the two medians is.
    ratio = statistics.median(p["ratio"] for p in pairs)
    ok = ratio >= THROUGHPUT_TARGET
    if len(pairs) > 1:
        each = ", ".join(f"{p['ratio']:.3f}" for p in pairs)
        say(
            f"  medians over {len(pairs)} pairs: floor {floor_s:.2f}s, Census {census_s:.2f}s "
            f"(pairs: {each})"
        )
    say(
        f"  ratio Census/floor = {ratio:.3f}, the pairs' median (target >= {THROUGHPUT_TARGET}): "
        f"{verdict(ok)}"
    )
    results["throughput"] = {
        "floor": pairs[-1]["floor"],
        "census": pairs[-1]["census"],
        "pairs": pairs,
        "median_floor_s": round(floor_s, 2),
        "median_census_s": round(census_s, 2),
        "ratio": round(ratio, 3),
        "verdict": verdict(ok),
    }


def bench_rss(args: argparse.Namespace, results: dict) -> None:
    say(f"\n== peak RSS: one -P solo worker lists one directory of {args.big_dir_files:,} files ==")
    tree = tree_count(big_dir_ensure(args.base, args.big_dir_files))
    run = census_run(args, tree, "rss", workers=1, solo=True)
    describe(run)
    peak = run.memory["after_VmHWM"]
    idle = run.memory["idle_VmRSS"]
    ok = peak <= RSS_TARGET_BYTES
    say(
        f"  idle worker VmRSS {idle / 1e6:.1f} MB (VmHWM {run.memory['idle_VmHWM'] / 1e6:.1f} MB);"
        f" peak VmHWM after the listing {peak / 1e6:.1f} MB ({peak / 2**20:.1f} MiB)"
        f" (target <= {RSS_TARGET_BYTES / 1e6:.0f} MB): {verdict(ok)}"
    )
    resumed = _rss_resumed(args, tree)
    ok_resumed = resumed["after_VmHWM"] <= RSS_TARGET_BYTES
    say(
        f"  resumed: a -P solo worker SIGKILLed with {resumed['items_resumed']:,} entries staged;"
        f" its successor's peak VmHWM {resumed['after_VmHWM'] / 1e6:.1f} MB"
        f" (target <= {RSS_TARGET_BYTES / 1e6:.0f} MB): {verdict(ok_resumed)}"
    )
    results["rss"] = {
        "run": asdict(run),
        "resumed": resumed,
        "verdict": verdict(ok and ok_resumed),
    }


def _rss_resumed(args: argparse.Namespace, tree: Tree) -> dict:
    """The big directory listed by a solo worker, SIGKILLed once half of it is staged (the test
    hook pauses the listing there), then resumed by a fresh solo worker: that one's peak memory,
    which would grow with what was staged if the exclusion set were held in memory."""
    from enumeration.models import Batch
    from enumeration.services.sessions import enumerate_target

    reset(args)
    logdir = args.base / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    env = worker_env(args)
    from django.conf import settings

    batch_size = int(env.get("CENSUS_LISTING_BATCH_SIZE", settings.CENSUS["LISTING_BATCH_SIZE"]))
    batches = tree.files // 2 // batch_size
    marker = args.base / "rss-paused"
    marker.unlink(missing_ok=True)
    paused = {**env, "CENSUS_TEST_PAUSE_LISTING": f"{tree.root.name}:{batches}:600:{marker}"}
    started = [Worker("rss-first", paused, logdir, solo=True, cwd=args.worker_repo)]
    try:
        started[0].wait_ready()
        time.sleep(2)  # let the start-up's resume_active_sessions message go by
        session = enumerate_target(path=str(tree.root))
        deadline = time.monotonic() + args.timeout
        while not marker.exists():
            if time.monotonic() > deadline or started[0].proc.poll() is not None:
                raise BenchError(f"the listing never paused; see {started[0].log}")
            time.sleep(0.1)
        started[0].kill()
        started.append(Worker("rss-resume", env, logdir, solo=True, cwd=args.worker_repo))
        started[1].wait_ready()
        session = follow(
            session.pk,
            timeout=args.timeout,
            meter=CpuMeter(started[1:]),
            reap_every=REAP_EVERY_AFTER_A_KILL,
        )
        memory = {f"after_{k}": v for k, v in memory_status(started[1].pid).items()}
    finally:
        for w in started:
            w.stop()
    problems = verify(session, tree)
    if problems:
        raise BenchError(f"rss resumed: the output does not match the tree: {problems}")
    resumed = Batch.objects.filter(session=session).order_by("-items_resumed").first()
    if resumed is None or not resumed.items_resumed:
        raise BenchError("rss resumed: the successor resumed nothing; see its log")
    return {**memory, "items_resumed": resumed.items_resumed}


def bench_recovery(args: argparse.Namespace, results: dict) -> None:
    say(
        f"\n== recovery: SIGKILL both workers at {args.kill_at:.0%} of the files, two fresh ones "
        f"(lease {args.lease}s) =="
    )
    tree = tree_count(tree_ensure(args.base, args.dirs, args.files_per_dir))
    # The reference is an uninterrupted run with the Reaper as often as in the interrupted one
    # (every second), not the throughput run (beat's period).
    fixed = (
        {"seconds": args.reference_seconds, "source": "--reference-seconds"}
        if args.reference_seconds
        else None
    )
    # Runs of the same code vary by about 15 % here, as much as the margin the target allows:
    # with --repeat N, N uninterrupted and N interrupted runs alternate, and the median of the
    # pairs' ratios is the verdict.
    pairs = []
    for _ in range(args.repeat):
        if fixed is None:
            ref = census_run(args, tree, "reference", reap_every=REAP_EVERY_AFTER_A_KILL)
            describe(ref)
            reference = {
                "seconds": ref.seconds,
                "source": "an uninterrupted run just before",
                "run": asdict(ref),
            }
        else:
            reference = fixed
        run = census_run(
            args, tree, "recovery", kill_at=args.kill_at, reap_every=REAP_EVERY_AFTER_A_KILL
        )
        describe(run)
        if "killed" not in run.events:
            raise BenchError(
                f"the session ended before {args.kill_at:.0%} of its files were found, so "
                "nothing was killed: use a larger tree (--dirs)"
            )
        if "first_fresh_ready" not in run.events:
            raise BenchError("the session ended before a fresh worker was ready")
        # The reference is timed from both workers ready; the interrupted run is timed the same
        # way: from the SIGKILL until a fresh worker is ready no worker exists, and that time
        # (the supervisor's, the machine's, Python's start) is not the run's. What is left is the
        # work before the kill, the resumed work, and the engine's own cost of the crash: work
        # lost and done again, the dead workers' tasks taken back.
        down = run.events["first_fresh_ready"] - run.events["killed"]
        working = run.seconds - down
        ratio = working / reference["seconds"]
        wall = run.seconds / reference["seconds"]
        say(
            f"  killed at {run.events['killed']:.2f}s; fresh workers ready at "
            f"{run.events['first_fresh_ready']:.2f}s and {run.events['fresh_ready']:.2f}s: "
            f"no worker for {down:.2f}s"
        )
        say(
            f"  working time {working:.2f}s (wall {run.seconds:.2f}s less {down:.2f}s) vs "
            f"uninterrupted {reference['seconds']:.2f}s ({reference['source']}) = {ratio:.3f}x; "
            f"wall clock {wall:.3f}x"
        )
        pairs.append(
            {
                "reference": reference,
                "run": asdict(run),
                "no_worker_s": round(down, 3),
                "working_s": round(working, 3),
                "ratio": round(ratio, 3),
                "wall_ratio": round(wall, 3),
            }
        )
    interrupted = statistics.median(p["working_s"] for p in pairs)
    uninterrupted = statistics.median(p["reference"]["seconds"] for p in pairs)
    ratio = statistics.median(p["ratio"] for p in pairs)  # as throughput's: the pairs' median
    wall = statistics.median(p["wall_ratio"] for p in pairs)
    ok = ratio <= RECOVERY_TARGET
    each = ", ".join(f"{p['ratio']:.3f}" for p in pairs)
    walls = ", ".join(f"{p['wall_ratio']:.3f}" for p in pairs)
    say(
        f"  recovery over {len(pairs)} pair(s): median working time {interrupted:.2f}s "
        f"interrupted vs {uninterrupted:.2f}s uninterrupted; pairs {each}, median {ratio:.3f}x "
        f"(target <= {RECOVERY_TARGET}): {verdict(ok)}; wall clock, the restart counted: "
        f"{walls}, median {wall:.3f}x"
    )
    results["recovery"] = {
        "pairs": pairs,
        "median_working_s": round(interrupted, 2),
        "median_uninterrupted_s": round(uninterrupted, 2),
        "ratio": round(ratio, 3),
        "wall_ratio": round(wall, 3),
        "verdict": verdict(ok),
    }


def bench_profile(args: argparse.Namespace, results: dict) -> None:
    say(f"\n== profile (not a measurement): {args.dirs:,} x {args.files_per_dir} ==")
    tree = tree_count(tree_ensure(args.base, args.dirs, args.files_per_dir))
    outdir = args.base / "profile"
    for old in outdir.glob("profile-*.txt"):
        old.unlink()
    if Path(sys.executable).with_name("py-spy").exists():
        run = census_run(args, tree, "profile", py_spy_dir=outdir)
        describe(run)
        spy = py_spy_summary(outdir, "profile", args.worker_repo)
    else:
        # py-spy is not a requirement: without it, profile the engine in this process only.
        say("  py-spy not installed: the workers are not sampled, only the cProfile run below")
        run = census_run(args, tree, "profile")
        describe(run)
        spy = {}
    results["profile"] = {"run": asdict(run), "py_spy": spy, "cprofile": cprofile_run(args, tree)}


def _listing_units(root: Path) -> list[bytes]:
    """Every directory of the tree, the root first, as the workers get them (bytes)."""
    units, stack = [], [os.fsencode(root)]
    while stack:
        unit = stack.pop()
        units.append(unit)
        with os.scandir(unit) as entries:
            stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
    return units


def _bare_listing(units: list[bytes]) -> None:
    """The least a Python lister of this design does per entry: one ``DirEntry`` and one
    ``lstat`` (for a file's size and time), nothing kept."""
    for unit in units:
        with os.scandir(unit) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    entry.stat(follow_symlinks=False)


def _process_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _per_entry_cpu(args: argparse.Namespace, tree: Tree, units: list[bytes]) -> dict[str, float]:
    """CPU seconds, in this process and one PostgreSQL backend, of each piece of per-entry work
    on ``tree`` (``bench_bound``)."""
    import uuid
    from types import SimpleNamespace

    from django.conf import settings
    from django.db import connection, transaction

    from enumeration.conf import engine_settings
    from enumeration.connectors.compiled import BUILT
    from enumeration.connectors.filesystem import FilesystemConnector
    from enumeration.connectors.keys import encode_key
    from enumeration.models import TaskOutputRecord
    from enumeration.models.fields import uuid7
    from enumeration.services.engine import _ROW_COLUMNS, _binary_rows, _RowGroup

    cfg = engine_settings()
    started = _process_seconds()
    _bare_listing(units)
    bare = _process_seconds() - started

    def list_and_encode(compiled: bool) -> tuple[list[bytes], float, float]:
        """List every unit and encode its rows, grouped into commits as the workers group
        them (each unit its own batch id), holding one commit's entries at a time as a worker
        does: the COPY payloads, and the CPU seconds of the listing and of the encoding."""
        settings.CENSUS = {**saved, "COMPILED_LISTING": compiled}
        connector = FilesystemConnector(compiled_listing=compiled)
        task = SimpleNamespace(session_id=uuid.uuid4(), pk=uuid.uuid4())
        copies, group, size, next_id, entries = [], [], 0, 1, 0
        listing = encoding = 0.0
        for number, unit in enumerate(units, 1):
            started = _process_seconds()
            found = [
                e
                for batch in connector.list_unit(unit, batch_size=cfg.listing_batch_size)
                for e in batch
            ]
            listing += _process_seconds() - started
            group.append(_RowGroup(encode_key(unit), uuid7(), found))
            size += len(found)
            if size >= cfg.group_commit_entries or number == len(units):
                started = _process_seconds()
                copies.append(_binary_rows(task, group, iter(range(next_id, next_id + size))))
                encoding += _process_seconds() - started
                next_id += size
                entries += size
                group, size = [], 0
        if entries != tree.entries:
            raise BenchError(
                f"the connector listed {entries:,} entries, the tree has {tree.entries:,}"
            )
        return copies, listing, encoding

    saved = settings.CENSUS
    try:
        copies, listing, encoding = list_and_encode(compiled=False)
        compiled_listing = compiled_encoding = None
        if BUILT:
            compiled_copies, compiled_listing, compiled_encoding = list_and_encode(compiled=True)
            if [len(c) for c in compiled_copies] != [len(c) for c in copies]:
                raise BenchError("the compiled rows differ in length from the pure-Python rows")
            del compiled_copies
    finally:
        settings.CENSUS = saved

    def copy_into(keys: str) -> tuple[float, float, float, int]:
        """The COPYs into a fresh table of the output table's columns (``keys``: its indexes or
        none): wall seconds, backend and client CPU seconds, bytes of WAL."""
        table = "bench_bound_records"
        columns = ", ".join(("id", *_ROW_COLUMNS, "batch_id"))
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
            cursor.execute(f"CREATE TABLE {table} (LIKE {TaskOutputRecord._meta.db_table} {keys})")
            cursor.execute("CHECKPOINT")
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        backend_before, client_before = process_cpu(backend), _process_seconds()
        wal_before = wal_position()
        t0 = time.monotonic()
        for rows in copies:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.cursor.copy_expert(
                    f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT binary)", io.BytesIO(rows)
                )
        wall = time.monotonic() - t0
        backend_cpu = process_cpu(backend) - backend_before
        client_cpu = _process_seconds() - client_before
        wal = wal_position() - wal_before
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {table}")
        return wall, backend_cpu, client_cpu, wal

    keyed = copy_into("INCLUDING INDEXES")
    keyless = copy_into("")
    return {
        "bare_listing": bare,
        "connector": listing,
        "copy_rows": encoding,
        "compiled_connector": compiled_listing,
        "compiled_copy_rows": compiled_encoding,
        "copy_wall": keyed[0],
        "copy_backend": keyed[1],
        "copy_client": keyed[2],
        "copy_wal": keyed[3],
        "keyless_copy_backend": keyless[1],
        "keyless_copy_client": keyless[2],
        "keyless_copy_wal": keyless[3],
        "commits": len(copies),
    }


BOUND_BARE = "bare listing + COPY"
BOUND_PYTHON = "Census's connector + rows + COPY"
BOUND_COMPILED = "Census's compiled connector + rows + COPY"


def bench_bound(args: argparse.Namespace, results: dict) -> None:
    """Not Census: what its per-entry work alone costs, and the best ratio that leaves.

    In one process, on the throughput tree: the bare listing; Census's connector; the binary COPY
    rows it makes of what it found; and their COPY, in commits of the group-commit size, into a
    table of the output table's shape and keys (a PostgreSQL backend's CPU, read from /proc);
    then, to show what the keys cost, the same COPY into the same columns without them.
    Two workers and their backends could at best share those seconds perfectly between the
    cores, with nothing else to do (no claims, markers, counters, tasks, Celery): the ratio that
    gives is an upper bound for any Census of this design, measured beside the floor it is
    compared with. With --repeat N, floors and measurements alternate; medians are compared.
    """
    say(
        f"\n== bound: the per-entry work alone, {args.dirs:,} directories x "
        f"{args.files_per_dir} files, one process (not a run of Census) =="
    )
    tree = tree_count(tree_ensure(args.base, args.dirs, args.files_per_dir))
    units = _listing_units(tree.root)
    cores = os.cpu_count() or 1
    per_entry = 1e6 / tree.entries
    rounds = []
    for _ in range(args.repeat):
        floor = floor_run(args, tree)
        load_before, times_before = load_average(), cpu_times()
        cpu = _per_entry_cpu(args, tree, units)
        copy_cpu = cpu["copy_backend"] + cpu["copy_client"]
        keyless_cpu = cpu["keyless_copy_backend"] + cpu["keyless_copy_client"]
        say(
            f"  CPU per entry: bare listing {cpu['bare_listing'] * per_entry:.1f} µs; Census's "
            f"connector {cpu['connector'] * per_entry:.1f} µs; its COPY rows "
            f"{cpu['copy_rows'] * per_entry:.1f} µs; their COPY into the output table's shape "
            f"({cpu['commits']:,} commits, {cpu['copy_wall']:.1f}s wall) "
            f"{copy_cpu * per_entry:.1f} µs (backend {cpu['copy_backend'] * per_entry:.1f}, "
            f"{cpu['copy_wal'] * per_entry / 1e6:.0f} B of WAL); the same COPY without the "
            f"table's two keys {keyless_cpu * per_entry:.1f} µs (backend "
            f"{cpu['keyless_copy_backend'] * per_entry:.1f}, "
            f"{cpu['keyless_copy_wal'] * per_entry / 1e6:.0f} B of WAL)  "
            f"[load {load_before} -> {load_average()}{_steal(times_before)}]"
        )
        figures = {
            "floor_s": floor["seconds"],
            BOUND_BARE: cpu["bare_listing"] + copy_cpu,
            BOUND_PYTHON: cpu["connector"] + cpu["copy_rows"] + copy_cpu,
            "cpu_s": {k: round(v, 2) for k, v in cpu.items() if v is not None},
        }
        if cpu["compiled_connector"] is not None:
            say(
                f"  compiled (_scan.c): connector {cpu['compiled_connector'] * per_entry:.1f} µs, "
                f"COPY rows {cpu['compiled_copy_rows'] * per_entry:.1f} µs"
            )
            figures[BOUND_COMPILED] = (
                cpu["compiled_connector"] + cpu["compiled_copy_rows"] + copy_cpu
            )
        rounds.append(figures)
    floor_s = statistics.median(r["floor_s"] for r in rounds)
    medians = f", medians of {len(rounds)} rounds" if len(rounds) > 1 else ""
    bound = {}
    for name in (BOUND_BARE, BOUND_PYTHON, BOUND_COMPILED):
        if name not in rounds[0]:
            continue
        seconds = statistics.median(r[name] for r in rounds)
        best = seconds / cores
        ratio = floor_s / best
        bound[name] = {
            "cpu_s": round(seconds, 2),
            "best_wall_s": round(best, 2),
            "ratio": round(ratio, 3),
        }
        say(
            f"  {name}: {seconds:.1f} CPU-s for the tree; on {cores} cores at best {best:.1f}s "
            f"wall against the floor's {floor_s:.2f}s: a ratio of at most {ratio:.3f} "
            f"(target {THROUGHPUT_TARGET}){medians}"
        )
    results["bound"] = {
        "entries": tree.entries,
        "rounds": rounds,
        "median_floor_s": floor_s,
        "bound": bound,
    }


def code_version(repo: Path) -> str:
    """The commit the workers run, and whether the engine's files differ from it."""
    git = ["git", "-C", str(repo)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return f"{repo} (not a git checkout)"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "enumeration", "config"],
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    changed = [line[3:] for line in dirty if line.strip()]
    return head.stdout.strip() + (f" + uncommitted {', '.join(changed)}" if changed else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.enumeration",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "benchmark", choices=["throughput", "rss", "recovery", "all", "profile", "bound"]
    )
    parser.add_argument("--dirs", type=int, default=10_000, help="directories in the tree")
    parser.add_argument("--files-per-dir", type=int, default=100, help="files in each directory")
    parser.add_argument(
        "--fanout",
        type=int,
        default=0,
        help="throughput: a deep tree instead, FANOUT subdirectories in every directory",
    )
    parser.add_argument("--depth", type=int, default=8, help="throughput with --fanout: levels")
    parser.add_argument(
        "--big-dir-files", type=int, default=200_000, help="files in the rss benchmark's directory"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="throughput: worker processes (the target is for 2)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="pool processes of each worker (1: one process a worker; the Procfile runs 2)",
    )
    parser.add_argument("--base", type=Path, default=Path("/tmp/census-bench"))
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--broker-url", default=DEFAULT_BROKER_URL)
    parser.add_argument("--lease", type=int, default=5, help="CENSUS_LEASE_SECONDS everywhere")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of files found")
    parser.add_argument("--reference-seconds", type=float, help="recovery: a known reference")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="throughput: alternate N floors and N Census runs; recovery: N uninterrupted and N "
        "interrupted runs (both: the pairs' median ratio); bound: N floors and N measurements "
        "(their medians compared)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per session")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an experiment: extra environment for the workers (e.g. PGOPTIONS=...)",
    )
    parser.add_argument(
        "--on-cpu",
        action="store_true",
        help="profile: sample the workers only on a CPU (not wall time)",
    )
    parser.add_argument(
        "--worker-repo",
        type=Path,
        default=REPO,
        help="an experiment: run the workers from another checkout (same schema)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure(args)
    database_prepare(args)
    results: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}",
        "command": " ".join(
            [Path(sys.executable).name, "-m", "benchmarks.enumeration", *sys.argv[1:]]
        ),
        "load_at_start": load_average(),
        "cpu_probe_s": cpu_probe(),
        "code": code_version(args.worker_repo),
    }
    say(
        f"{results['date']}  {results['machine']}  load {results['load_at_start']}  "
        f"cpu probe {results['cpu_probe_s']:.2f} s (sum(range(10**7)); about 0.2 s on a "
        "typical unloaded x86 core)"
    )
    say(f"workers run {results['code']}")
    try:
        if args.benchmark in ("throughput", "all"):
            bench_throughput(args, results)
        if args.benchmark in ("rss", "all"):
            bench_rss(args, results)
        if args.benchmark in ("recovery", "all"):
            bench_recovery(args, results)
        if args.benchmark == "profile":
            bench_profile(args, results)
        if args.benchmark == "bound":
            bench_bound(args, results)
    except BenchError as exc:
        say(f"ERROR: {exc}")
        return 1
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    say("\nsummary:")
    for name in ("throughput", "rss", "recovery"):
        if name in results:
            say(f"  {name}: {results[name]['verdict']}")
    for name, bound in results.get("bound", {}).get("bound", {}).items():
        say(f"  bound ({name}): a ratio of at most {bound['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
