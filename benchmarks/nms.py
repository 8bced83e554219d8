"""Network-monitoring benchmarks on PostgreSQL and Redis (docs/benchmarks.md, "Network monitoring").

    .venv/bin/python -m benchmarks.nms all                  # the three, full sizes
    .venv/bin/python -m benchmarks.nms tick --devices 100000
    .venv/bin/python -m benchmarks.nms ingest --rows 200000
    .venv/bin/python -m benchmarks.nms poll --hosts 400 --poll-batches 50,100,200 --seconds 20

tick    100,000 active devices, all due. One scheduler tick claims and dispatches them all with
        the due-time structure Census uses (a window claimed on the tick cursor, then one read
        of the devices with a grid point in it); its messages really go to the broker and are
        checked to carry every device once; then what the `default` workers do with them
        (publish 1,000 poll tasks) is run and timed apart. The same read-and-dispatch with the
        two alternatives: a deadline column per device claimed and moved by UPDATE ... FOR
        UPDATE SKIP LOCKED ... RETURNING, and a Redis sorted set popped atomically by a Lua
        script followed by the batch fetch of the rows. Target: < 1 s for all 100,000. Then
        one fping run over 10,000 loopback addresses, for scale.
ingest  --rows poll documents (the emulator's realistic JSON) through the metrics service (COPY
        via the Django connection, in batches of --ingest-batch and of one poll batch, 50), and
        the same rows with `psql \\copy` from a file in the same run. Target: service >= 0.6x psql.
poll    the plugin pool against the WS-Management emulator (in a process of its own on --hosts
        loopback addresses): 1 and then 2 worker processes, each polling batches of each size
        of --poll-batches devices through the real poller (claim, decrypt, WinRM plugin, COPY,
        health) for --seconds. Devices per second per worker process, what that makes on a 60 s
        interval, and CPU per device of the poller and of the emulator (they share the 2 cores).

The database (default census_nmsbench) is created and migrated when needed, and its NMS tables are
emptied before each benchmark; the Redis database (default 9) is flushed. Every figure is printed
with the load average beside it. Only loopback addresses are used: the tick's devices are on
127.x.y.z and nothing is sent to them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.report import cpu_probe, load_average, say, verdict

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/census_nmsbench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/9"
CLK_TCK = os.sysconf("SC_CLK_TCK")

TICK_TARGET_SECONDS = 1.0
INGEST_TARGET = 0.6
POLL_GOAL_DEVICES = 10_000
ZSET_KEY = "census:nmsbench:due"
# The emulated hosts' password: a test fixture, not a secret.
BENCH_PASSWORD = "Bench-Passw0rd"  # noqa: S105


def configure(args: argparse.Namespace) -> None:
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["CELERY_BROKER_URL"] = args.broker_url
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def database_prepare(args: argparse.Namespace) -> None:
    name = args.database_url.rsplit("/", 1)[1]
    exists = subprocess.run(
        [
            "psql",
            _psql_url(args, "postgres"),
            "-Atc",
            f"SELECT 1 FROM pg_database WHERE datname='{name}'",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not exists:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _psql_url(args: argparse.Namespace, database: str | None = None) -> str:
    if database is None:
        return args.database_url
    return args.database_url.rsplit("/", 1)[0] + "/" + database


def sql(statement: str, params: object = None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def nms_tables_empty() -> None:
    sql(
        "TRUNCATE nms_metric_samples, nms_deviceevent, nms_discoveryruntarget, nms_device, "
        "nms_discoveryrun, nms_discoveryprofile, nms_credentialprofile RESTART IDENTITY CASCADE"
    )


def credential_create(password: str = BENCH_PASSWORD) -> int:
    from nms.crypto import encrypt_json
    from nms.models import CredentialProfile

    return CredentialProfile.objects.create(
        name="bench",
        payload_encrypted=encrypt_json(
            {"username": "Administrator", "password": password, "transport": "basic"}
        ),
    ).pk


def vacuum(table: str) -> None:
    from django.db import connection

    old = connection.connection.autocommit if connection.connection else None
    connection.ensure_connection()
    connection.connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {table}")
            cursor.execute("CHECKPOINT")
    finally:
        if old is not None:
            connection.connection.autocommit = old


def broker_flush(args: argparse.Namespace) -> None:
    import redis

    redis.Redis.from_url(args.broker_url).flushdb()


# --- tick ----------------------------------------------------------------------------------------


def devices_populate(count: int, credential_id: int) -> None:
    """`count` active devices on 127.x.y.z, all due, phases spread over a 60 s interval."""
    sql(
        """
        INSERT INTO nms_device (ip, port, protocol, hostname, os, status,
            polling_interval_seconds, should_ping, schedule_anchor, last_poll_at, last_poll_error,
            failure_count, created_at, updated_at, credential_id)
        SELECT '127.0.0.1'::inet + g, 5985, 'winrm', '', '', 'active', 60, false,
            now() - make_interval(secs => 1 + mod(g, 60)), now() - interval '60 seconds', '', 0,
            now(), now(), %s
        FROM generate_series(0, %s - 1) AS g
        """,
        [credential_id, count],
    )


def all_due() -> None:
    """Every device due: anchors in the last minute, no tick since before them."""
    sql(
        "UPDATE nms_device SET schedule_anchor = now() - make_interval(secs => 1 + mod(id, 60)) "
        "WHERE status = 'active'"
    )
    sql("DELETE FROM nms_schedule_cursor")
    vacuum("nms_device")
    # Let the kernel write back what rewriting 100,000 rows dirtied: otherwise the tick's commit
    # waits behind that writeback (1.3-2 s stalls seen), which a tick on a steady database doesn't.
    os.sync()
    time.sleep(1)


class TimedDispatch:
    """The poller's dispatch, timed; remembers what it handed over."""

    def __init__(self) -> None:
        from nms.services.poller import poll_batches_dispatch

        self._dispatch = poll_batches_dispatch
        self.seconds = 0.0
        self.devices = 0
        self.messages = 0

    def __call__(self, *, groups, dispatched_at) -> int:
        started = time.perf_counter()
        sent = self._dispatch(groups=groups, dispatched_at=dispatched_at)
        self.seconds += time.perf_counter() - started
        self.devices += sum(len(group.ids) for group in groups)
        self.messages += sent
        return sent


def handed_over(args: argparse.Namespace, expected: int) -> dict:
    """Check the messages the tick sent carry every device once: poll batches straight on `poll`,
    or shares of them on `default` (a burst). Then do what the `default` workers do with the
    shares (publish each batch to `poll`), timed apart: not the tick's work."""
    import base64

    import redis

    from nms.tasks_monitoring import poll_batches_send

    def arguments(raw: bytes) -> list:
        return json.loads(base64.b64decode(json.loads(raw)["body"]))[0]

    client = redis.Redis.from_url(args.broker_url)
    shares = [arguments(m) for m in client.lrange("default", 0, -1)]
    direct = [arguments(m)[0] for m in client.lrange("poll", 0, -1)]
    ids = [i for batches, _ in shares for batch in batches for i in batch]
    ids += [i for batch in direct for i in batch]
    if len(ids) != expected or len(set(ids)) != expected:
        raise SystemExit(f"the tick handed over {len(set(ids))} distinct of {expected} devices")
    started = time.perf_counter()
    for batches, stamp in shares:
        poll_batches_send(batches, stamp)
    seconds = time.perf_counter() - started
    if client.llen("poll") != len(direct) + sum(len(batches) for batches, _ in shares):
        raise SystemExit("the poll queue does not hold one message per batch")
    return {"fan_out_s": seconds, "poll_messages": int(client.llen("poll"))}


def tick_window(args: argparse.Namespace) -> dict:
    """Census: the tick as beat runs it (window claim, read, dispatch)."""
    from nms.services import scheduler

    all_due()
    broker_flush(args)
    dispatch = TimedDispatch()
    started = time.perf_counter()
    result = scheduler.scheduler_tick(dispatch=dispatch)
    figures = tick_figures(args, dispatch, started, "the tick")
    if result.claimed != args.devices:
        raise SystemExit(f"the tick claimed {result.claimed} of {args.devices}")
    return {**figures, **handed_over(args, args.devices)}


def tick_figures(
    args: argparse.Namespace, dispatch: TimedDispatch, started: float, what: str
) -> dict:
    """Seconds since `started`, split into claim and dispatch, once every device went out."""
    total = time.perf_counter() - started
    if dispatch.devices != args.devices:
        raise SystemExit(f"{what} dispatched {dispatch.devices} of {args.devices} devices")
    return {
        "total_s": total,
        "claim_s": total - dispatch.seconds,
        "dispatch_s": dispatch.seconds,
        "messages": dispatch.messages,
    }


def dispatched_figures(
    args: argparse.Namespace,
    dispatch: TimedDispatch,
    rows: list[tuple],
    now: dt.datetime,
    started: float,
    what: str,
) -> dict:
    """Dispatch an alternative's grouped rows as the tick does, and its figures."""
    from nms.services.poller import DueGroup

    dispatch(groups=[DueGroup(*row) for row in rows], dispatched_at=now)
    return tick_figures(args, dispatch, started, what)


# The devices as the tick takes them (nms.services.poller.DueGroup), from a set of rows.
_GROUPED = """
SELECT should_ping, protocol, credential_id, array_agg(id),
    CASE WHEN should_ping THEN array_agg(host(ip)) END
FROM {rows} GROUP BY should_ping, protocol, credential_id
"""

# The structure Census had before: a deadline per device, moved by the claim itself (one row
# version and index entries per device).
_COLUMN_CLAIM = """
WITH due AS (
    SELECT id FROM nms_device WHERE status = 'active' AND schedule_anchor <= %(now)s
    ORDER BY schedule_anchor FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE nms_device AS d SET schedule_anchor = d.schedule_anchor + make_interval(
        secs => d.polling_interval_seconds * (floor(date_part('epoch', %(now)s - d.schedule_anchor)
                                              / d.polling_interval_seconds) + 1))
    FROM due WHERE d.id = due.id
    RETURNING d.id, d.ip, d.should_ping, d.protocol, d.credential_id
)
""" + _GROUPED.format(rows="moved")


def tick_column(args: argparse.Namespace) -> dict:
    """The alternative: a deadline column per device, claimed and moved in one statement."""
    from django.db import transaction

    from nms.services.poller import database_now

    all_due()
    broker_flush(args)
    dispatch = TimedDispatch()
    started = time.perf_counter()
    now = database_now()
    with transaction.atomic():
        rows = sql(_COLUMN_CLAIM, {"now": now})
    return dispatched_figures(args, dispatch, rows, now, started, "the column claim")


_ZSET_POP = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES')
local now = tonumber(ARGV[1])
local out, args = {}, {}
for i = 1, #due, 2 do
  local member, old = due[i], tonumber(due[i + 1])
  local interval = tonumber(string.match(member, ':(%d+)$'))
  args[#args + 1] = old + (math.floor((now - old) / interval) + 1) * interval
  args[#args + 1] = member
  out[#out + 1] = member
  if #args >= 4000 then redis.call('ZADD', KEYS[1], unpack(args)); args = {} end
end
if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end
return out
"""


def zset_load(args: argparse.Namespace) -> None:
    """The other alternative: member "id:interval", score = deadline (epoch seconds)."""
    import redis

    client = redis.Redis.from_url(args.broker_url)
    client.delete(ZSET_KEY)
    rows = sql(
        "SELECT id, polling_interval_seconds, extract(epoch FROM schedule_anchor) FROM nms_device "
        "WHERE status = 'active'"
    )
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(rows), 5000):
        pipe.zadd(ZSET_KEY, {f"{i}:{iv}": float(at) for i, iv, at in rows[start : start + 5000]})
    pipe.execute()


def tick_redis(args: argparse.Namespace) -> dict:
    """Pop due members atomically, fetch their rows in one batch, dispatch: what the tick would
    do with a Redis sorted set as its due-time structure."""
    import redis

    from nms.services.poller import database_now

    all_due()
    broker_flush(args)
    zset_load(args)
    client = redis.Redis.from_url(args.broker_url)
    pop = client.register_script(_ZSET_POP)
    dispatch = TimedDispatch()
    started = time.perf_counter()
    now = database_now()
    members = pop(keys=[ZSET_KEY], args=[now.timestamp()])
    ids = "{" + ",".join(member.split(b":", 1)[0].decode() for member in members) + "}"
    rows = sql(
        _GROUPED.format(
            rows="(SELECT * FROM nms_device WHERE id = ANY(%s::bigint[]) AND status = 'active') d"
        ),
        [ids],
    )
    return dispatched_figures(args, dispatch, rows, now, started, "the sorted set")


def median_of(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {key: statistics.median(run[key] for run in runs) for key in keys}


def bench_fping(count: int) -> dict:
    from nms.fping import FpingOptions, fping

    addresses = [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(count)]
    options = FpingOptions.from_settings()
    started = time.perf_counter()
    result = fping(addresses, options)
    seconds = time.perf_counter() - started
    return {
        "addresses": count,
        "seconds": seconds,
        "reachable": len(result.reachable),
        "interval_ms": options.interval_ms,
    }


def bench_tick(args: argparse.Namespace, results: dict) -> None:
    say(f"\n== tick: {args.devices:,} active devices, all due ==")
    nms_tables_empty()
    devices_populate(args.devices, credential_create())
    out: dict = {"devices": args.devices}
    variants: list[tuple[str, Callable[[argparse.Namespace], dict]]] = [
        ("census_window_claim", tick_window),
        ("deadline_column", tick_column),
        ("redis_sorted_set", tick_redis),
    ]
    for name, run in variants:
        runs = [run(args) for _ in range(args.repeat)]
        figure = median_of(runs)
        out[name] = {**figure, "runs": runs}
        parts = ", ".join(f"{k} {v:.3f}" for k, v in figure.items() if k.endswith("_s"))
        totals = ", ".join(f"{r['total_s']:.2f}" for r in runs)
        say(
            f"{name:20}: {parts}; {int(figure['messages'])} message(s) "
            f"(median of {args.repeat}, totals {totals}; load {load_average()}; "
            f"cpu probe {cpu_probe():.2f} s)"
        )
    census = out["census_window_claim"]
    out["verdict"] = verdict(census["total_s"] < TICK_TARGET_SECONDS)
    say(
        f"target < {TICK_TARGET_SECONDS} s to claim and dispatch all {args.devices:,}: "
        f"{census['total_s']:.2f} s {out['verdict']} (then {int(census['poll_messages'])} poll "
        f"tasks published by the default workers in {census['fan_out_s']:.2f} s, off the tick)"
    )
    nms_tables_empty()
    results["tick"] = out
    if not args.fping_addresses:
        return
    from nms.fping import FpingError

    try:
        out["fping"] = fp = bench_fping(args.fping_addresses)
    except FpingError as error:
        out["fping"] = {"error": str(error)}
        say(f"fping: {args.fping_addresses:,} loopback addresses: {error}")
        return
    say(
        f"fping: {fp['addresses']:,} loopback addresses in one run, {fp['seconds']:.2f} s "
        f"(-i {fp['interval_ms']:g} ms), {fp['reachable']:,} reachable"
    )


# --- ingest --------------------------------------------------------------------------------------


def documents(count: int) -> list[dict]:
    from tests.emulators.wsman import WindowsHost

    hosts = [WindowsHost(f"127.0.0.{i + 1}", "Administrator") for i in range(50)]
    return [hosts[i % 50].poll_document(i) for i in range(count)]


def bench_ingest(args: argparse.Namespace, results: dict) -> None:
    from nms.services.metrics import Sample, _copy_line, metric_samples_write

    say(f"\n== ingest: {args.rows:,} poll documents ==")
    nms_tables_empty()
    devices_populate(1000, credential_create())
    ids = [row[0] for row in sql("SELECT id FROM nms_device ORDER BY id")]
    base = dt.datetime.now(dt.UTC)
    docs = documents(args.rows)
    samples = [
        Sample(ids[i % len(ids)], base - dt.timedelta(seconds=i), docs[i]) for i in range(args.rows)
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".copy", delete=False) as handle:
        for sample in samples:
            handle.write(_copy_line(sample))
        copy_file = handle.name
    size = Path(copy_file).stat().st_size
    say(f"rows average {size / args.rows:.0f} bytes of JSON text")

    def service(batch: int) -> float:
        sql("TRUNCATE nms_metric_samples")
        vacuum("nms_metric_samples")
        started = time.perf_counter()
        for start in range(0, len(samples), batch):
            metric_samples_write(samples=samples[start : start + batch])
        seconds = time.perf_counter() - started
        assert sql("SELECT count(*) FROM nms_metric_samples")[0][0] == args.rows
        return args.rows / seconds

    def psql_copy() -> float:
        sql("TRUNCATE nms_metric_samples")
        vacuum("nms_metric_samples")
        started = time.perf_counter()
        subprocess.run(
            [
                "psql",
                args.database_url,
                "-q",
                "-c",
                f"\\copy nms_metric_samples (device_id, collected_at, data) FROM '{copy_file}'",
            ],
            check=True,
        )
        seconds = time.perf_counter() - started
        assert sql("SELECT count(*) FROM nms_metric_samples")[0][0] == args.rows
        return args.rows / seconds

    runs: dict[str, list[float]] = {"psql": [], "service": [], "service_50": []}
    for _ in range(args.repeat):
        runs["psql"].append(psql_copy())
        runs["service"].append(service(args.ingest_batch))
        runs["service_50"].append(service(50))
    os.unlink(copy_file)
    figure = {name: statistics.median(values) for name, values in runs.items()}
    ratio = figure["service"] / figure["psql"]
    out = {
        "rows": args.rows,
        "bytes_per_row": size / args.rows,
        "psql_rows_per_s": figure["psql"],
        "service_rows_per_s": figure["service"],
        "service_batch": args.ingest_batch,
        "service_50_rows_per_s": figure["service_50"],
        "ratio": ratio,
        "ratio_50": figure["service_50"] / figure["psql"],
        "runs": runs,
        "verdict": verdict(ratio >= INGEST_TARGET),
    }
    say(
        f"psql \\copy {figure['psql']:,.0f} rows/s; metrics service {figure['service']:,.0f} "
        f"rows/s in batches of {args.ingest_batch} ({ratio:.2f}x), "
        f"{figure['service_50']:,.0f} rows/s in batches of 50 ({out['ratio_50']:.2f}x) "
        f"(median of {args.repeat}; load {load_average()})"
    )
    say(f"ingest target >= {INGEST_TARGET}x psql: {out['verdict']}")
    nms_tables_empty()
    results["ingest"] = out


# --- poll ----------------------------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLK_TCK


def emulator_start(hosts: int, password: str) -> tuple[subprocess.Popen, list[str], int]:
    code = (
        "import sys, json, time\n"
        "from tests.emulators.wsman import WSManEmulator\n"
        f"addresses = [f'127.0.{{1 + i // 250}}.{{1 + i % 250}}' for i in range({hosts})]\n"
        f"emulator = WSManEmulator(password={password!r}).start(addresses)\n"
        "print(json.dumps({'addresses': addresses, 'port': emulator.port}), flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    started = json.loads(proc.stdout.readline())
    if len(started["addresses"]) < hosts:
        raise SystemExit(f"only {len(started['addresses'])} loopback addresses can be bound")
    return proc, started["addresses"], started["port"]


def poll_worker(args: argparse.Namespace) -> None:
    """One worker process: poll its devices batch after batch for --seconds; print a JSON line."""
    from nms.models import Device
    from nms.services.poller import database_now, devices_poll

    ids = [int(i) for i in args.device_ids.split(",")]
    batches = [ids[i : i + args.poll_batch] for i in range(0, len(ids), args.poll_batch)]
    polled = succeeded = runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        for batch in batches:
            Device.objects.filter(pk__in=batch).update(last_poll_at=None)
            outcome = devices_poll(device_ids=batch, dispatched_at=database_now())
            polled += outcome.polled
            succeeded += len(outcome.succeeded)
            runs += 1
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "polled": polled,
                "succeeded": succeeded,
                "plugin_runs": runs,
                "seconds": seconds,
                "cpu_worker_s": own.ru_utime + own.ru_stime,
                "cpu_plugins_s": children.ru_utime + children.ru_stime,
            }
        ),
        flush=True,
    )


def bench_poll(args: argparse.Namespace, results: dict) -> None:
    from nms.choices import DeviceStatus
    from nms.models import Device

    say(f"\n== poll: the plugin pool against {args.hosts} emulated hosts ==")
    nms_tables_empty()
    password = BENCH_PASSWORD
    credential_id = credential_create(password)
    emulator, addresses, port = emulator_start(args.hosts, password)
    out: dict = {"hosts": args.hosts, "seconds": args.seconds}
    try:
        devices = Device.objects.bulk_create(
            Device(
                ip=address,
                port=port,
                status=DeviceStatus.ACTIVE,
                credential_id=credential_id,
                polling_interval_seconds=60,
                should_ping=False,
                schedule_anchor=None,
            )
            for address in addresses
        )
        ids = [device.pk for device in devices]
        for batch, workers in [(b, w) for b in args.poll_batches for w in (1, 2)]:
            share = min(len(ids) // workers, batch * max(1, len(ids) // (2 * batch)))
            emulator_cpu = process_cpu(emulator.pid)
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.nms",
                        "_poll_worker",
                        "--database-url",
                        args.database_url,
                        "--broker-url",
                        args.broker_url,
                        "--seconds",
                        str(args.seconds),
                        "--poll-batch",
                        str(batch),
                        "--device-ids",
                        ",".join(map(str, ids[w * share : (w + 1) * share])),
                    ],
                    cwd=REPO,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for w in range(workers)
            ]
            reports = []
            for proc in procs:
                stdout, _ = proc.communicate(timeout=args.seconds + 300)
                reports.append(json.loads(stdout.strip().splitlines()[-1]))
            emulator_cpu = process_cpu(emulator.pid) - emulator_cpu
            succeeded = sum(r["succeeded"] for r in reports)
            polled = sum(r["polled"] for r in reports)
            wall = max(r["seconds"] for r in reports)
            rate = succeeded / wall
            poller_cpu = sum(r["cpu_worker_s"] + r["cpu_plugins_s"] for r in reports)
            figure = {
                "poll_batch": batch,
                "workers": workers,
                "devices_per_s": rate,
                "devices_per_s_per_worker": rate / workers,
                "devices_on_60s_interval": rate * 60,
                "failed": polled - succeeded,
                "poller_cpu_ms_per_device": 1000 * poller_cpu / max(1, succeeded),
                "worker_cpu_ms_per_device": 1000
                * sum(r["cpu_worker_s"] for r in reports)
                / max(1, succeeded),
                "plugin_cpu_ms_per_device": 1000
                * sum(r["cpu_plugins_s"] for r in reports)
                / max(1, succeeded),
                "emulator_cpu_ms_per_device": 1000 * emulator_cpu / max(1, succeeded),
                "plugin_runs": sum(r["plugin_runs"] for r in reports),
            }
            out[f"batch_{batch}_workers_{workers}"] = figure
            say(
                f"batch {batch:>3}, {workers} worker process(es): {rate:.1f} devices/s "
                f"({rate / workers:.1f} per worker), {rate * 60:,.0f} devices on a 60 s interval; "
                f"{figure['failed']} failed; CPU per device: poller+plugin "
                f"{figure['poller_cpu_ms_per_device']:.1f} ms (worker "
                f"{figure['worker_cpu_ms_per_device']:.1f}, plugin "
                f"{figure['plugin_cpu_ms_per_device']:.1f}), emulator "
                f"{figure['emulator_cpu_ms_per_device']:.1f} ms (load {load_average()})"
            )
        best = max(
            (figure for key, figure in out.items() if key.startswith("batch_")),
            key=lambda figure: figure["devices_per_s"],
        )
        out["best"] = best
        projected = 2 * 1000 / best["poller_cpu_ms_per_device"] * 60
        out["projected_devices_on_60s_without_emulator"] = projected
        say(
            f"goal {POLL_GOAL_DEVICES:,} devices on 60 s: measured "
            f"{best['devices_on_60s_interval']:,.0f} with the emulator on the same 2 cores; "
            "the poller's own CPU alone would allow "
            f"{projected:,.0f}"
        )
    finally:
        assert emulator.stdin is not None
        emulator.stdin.close()
        emulator.wait(timeout=30)
        nms_tables_empty()
    results["poll"] = out


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmark", choices=["tick", "ingest", "poll", "all", "_poll_worker"])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--broker-url", default=DEFAULT_BROKER_URL)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--fping-addresses", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--ingest-batch", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=400)
    parser.add_argument(
        "--poll-batches",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[50, 100, 200],
        help="devices per plugin run, comma-separated",
    )
    parser.add_argument("--poll-batch", type=int, default=50, help="(_poll_worker)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device-ids", default="")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure(args)
    if args.benchmark == "_poll_worker":
        poll_worker(args)
        return 0
    database_prepare(args)
    results: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.platform()}",
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.nms", *sys.argv[1:]]),
        "load_at_start": load_average(),
        "cpu_probe_s": cpu_probe(),
    }
    say(
        f"{results['date']}  {results['machine']}  load {results['load_at_start']}  "
        f"cpu probe {results['cpu_probe_s']:.2f} s (sum(range(10**7)); about 0.2 s on a "
        "typical unloaded x86 core)"
    )
    try:
        if args.benchmark in ("tick", "all"):
            bench_tick(args, results)
        if args.benchmark in ("ingest", "all"):
            bench_ingest(args, results)
        if args.benchmark in ("poll", "all"):
            bench_poll(args, results)
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    say("\nsummary:")
    if "tick" in results:
        tick = results["tick"]
        say(f"  tick: {tick['verdict']}")
    if "ingest" in results:
        say(f"  ingest: {results['ingest']['verdict']}")
    if "poll" in results:
        best = results["poll"]["best"]
        say(f"  poll: {best['devices_on_60s_interval']:,.0f} devices on a 60 s interval (best)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
