"""Real `celery worker` processes on PostgreSQL and Redis: two workers, a SIGKILL in the middle of
a directory (the Reaper requeues; a worker restarted on the same machine takes the task back
without waiting for the lease), a message delivered twice, a broker that restarts empty
mid-run, a message lost with a worker, a worker's database connection (kept from task to task
by config/celery.py, and closed under it by the database: ``pg_terminate_backend`` plays the
restart, it is what a client sees of one), a crash of a PostgreSQL of the test's own in the
middle of a directory, and a worker killed while it deletes a session.

The test process plays beat: it runs the Reaper every second, as the periodic job would.
"""

import contextlib
import os
import re
import signal
import time
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
import redis
from django.db import connection
from django.utils import timezone

from config.celery import app as celery_app
from enumeration.choices import BatchStatus, SessionStatus, TaskKind
from enumeration.connectors.keys import encode_key
from enumeration.models import Batch, SessionState, StagedOutputRecord, Task, TaskOutputRecord
from enumeration.models.sessions import ACTIVE_SESSION_STATUSES
from enumeration.services.inprocess import session_drain
from enumeration.services.retention import session_purge_start, sessions_purge_marked
from enumeration.services.sessions import ReapResult, enumerate_target, tasks_reap
from enumeration.tasks import purge_sessions, run_enumeration_task
from tests.fixtures.trees import assert_matches_ground_truth, expected_keys
from tests.fixtures.workers import manage_py

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers]

FAST_LEASE = {"CENSUS_LEASE_SECONDS": "3", "CENSUS_RESEND_AFTER_SECONDS": "3"}


@pytest.fixture
def fast_engine(settings):
    settings.CENSUS = {**settings.CENSUS, "LEASE_SECONDS": 3, "RESEND_AFTER_SECONDS": 3}


def wait_for_session(
    session_id,
    timeout: float = 300,
    on_tick=None,
    reaped: ReapResult | None = None,
    reap: bool = True,
) -> SessionState:
    """Follow a session to its end, running the Reaper every second as beat would (unless
    ``reap`` is false: no beat)."""
    deadline = time.monotonic() + timeout
    last_reap = 0.0
    while time.monotonic() < deadline:
        session = SessionState.objects.get(pk=session_id)
        if session.status not in ACTIVE_SESSION_STATUSES:
            return session
        if on_tick:
            on_tick(session)
        if reap and time.monotonic() - last_reap > 1:
            result = tasks_reap()
            if reaped is not None:
                reaped.requeued += result.requeued
                reaped.resent += result.resent
                reaped.failed += result.failed
            last_reap = time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"session still {session.status} after {timeout}s")


@contextlib.contextmanager
def celery_broker(url: str):
    """Point this process's Celery app at another broker for the duration."""
    old = celery_app.conf.broker_write_url
    celery_app.conf.broker_write_url = url
    celery_app._after_fork()  # drop the pooled connections to the old broker
    try:
        yield
    finally:
        celery_app.conf.broker_write_url = old
        celery_app._after_fork()


def test_two_workers_enumerate_a_large_tree_exactly(make_tree, start_worker, fast_engine):
    # Given 20,000+ files in 2,000 directories, depth 8, with empty dirs, unicode and spaces,
    # a non-UTF-8 name, a symlink loop and a directory the workers may not read
    tree = make_tree(directories=2000, files=20000, depth=8, unreadable=True)
    # And two worker processes without the privilege to read it
    workers = [start_worker(f"w{i}", env=FAST_LEASE, unprivileged=True) for i in (1, 2)]
    # When the tree is enumerated
    started = time.monotonic()
    session = wait_for_session(enumerate_target(path=tree.root).pk)
    elapsed = time.monotonic() - started
    # Then the records are exactly the os.walk ground truth, no key twice
    assert_matches_ground_truth(session.pk, tree)
    # And the unreadable directory is an error on its unit, while the rest of the run went on
    assert session.status == SessionStatus.PARTIALLY_COMPLETED, session.failure_reason
    failed = Batch.objects.get(session=session, status=BatchStatus.FAILED)
    assert failed.unit == encode_key(tree.unreadable[0])
    assert "Permission denied" in failed.error_details
    assert session.files_found == tree.files
    # And both workers did part of it
    for worker in workers:
        assert "task completed" in worker.output(), worker.name
    print(f"\n{session.files_found} files in {elapsed:.1f}s with two workers")


def _tree_with_a_paused_big_directory(make_tree, tmp_path, **tree_size):
    """A tree with one directory of 3,000 files, listed 100 at a time, and the worker settings
    of a hook that pauses its listing once, after 5 staged batches. Returns (tree, the big
    directory, the hook's marker file, the settings)."""
    tree = make_tree(**tree_size)
    big = Path(os.fsdecode(tree.root)) / "bigdir"
    big.mkdir()
    for i in range(3000):
        (big / f"item{i:05d}").touch()
    marker = tmp_path / "paused.marker"
    env = {
        "CENSUS_LISTING_BATCH_SIZE": "100",
        "CENSUS_TEST_PAUSE_LISTING": f"bigdir:5:60:{marker}",
    }
    return tree, big, marker, env


def _wait_for_the_pause(marker: Path) -> int:
    """The pid of the worker process paused in the listing."""
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline, "the listing never reached the pause"
        time.sleep(0.1)
    time.sleep(0.2)
    return int(marker.read_text())


def _assert_resumed_from_what_was_staged(session, tree, big: Path) -> Task:
    """Exactly the ground truth, and the big directory's second attempt skipped the 500 entries
    its first had staged. Returns that directory's task."""
    assert session.status == SessionStatus.COMPLETED, session.failure_reason
    assert_matches_ground_truth(session.pk, tree)
    batch = Batch.objects.get(session=session, unit=str(big))
    assert batch.items_resumed == 500
    assert batch.items_processed == 3000
    task = Task.objects.get(pk=batch.task_id)
    assert task.attempts == 2
    return task


def _one_worker_paused_with_a_long_lease(make_tree, tmp_path, start_worker):
    """One worker with a two-minute lease, paused in the big directory of a small tree (no
    Reaper will run). Returns (tree, big directory, worker settings, worker, session, pid of
    the paused process)."""
    tree, big, marker, env = _tree_with_a_paused_big_directory(
        make_tree, tmp_path, directories=20, files=500
    )
    env["CENSUS_LEASE_SECONDS"] = "120"
    worker = start_worker("w1", env=env)
    session = enumerate_target(path=tree.root)
    return tree, big, env, worker, session, _wait_for_the_pause(marker)


def _assert_taken_back_well_inside_the_lease(session, tree, big: Path, killed_at: float) -> None:
    """With no Reaper running, the run ends within a minute of the kill (the lease is two), the
    task taken back from its dead owner and the big directory resumed from what was staged."""
    session = wait_for_session(session.pk, timeout=90, reap=False)
    assert time.monotonic() - killed_at < 60
    task = _assert_resumed_from_what_was_staged(session, tree, big)
    assert "ended with its process" in task.last_error


def test_sigkill_mid_directory_resumes_from_what_was_staged(
    tmp_path, make_tree, start_worker, fast_engine
):
    # Given a tree with a big directory whose listing pauses once, and two workers
    tree, big, marker, env = _tree_with_a_paused_big_directory(
        make_tree, tmp_path, directories=50, files=2000
    )
    workers = [start_worker(f"w{i}", env={**FAST_LEASE, **env}) for i in (1, 2)]
    session = enumerate_target(path=tree.root)
    # When the worker listing it is paused there, it is killed with SIGKILL
    paused_pid = _wait_for_the_pause(marker)
    victim = next(w for w in workers if os.getpgid(paused_pid) == w.proc.pid)
    victim.kill()
    # Then the Reaper requeues its task and the other worker finishes the run, the resumed
    # directory skipping what was staged
    reaped = ReapResult()
    session = wait_for_session(session.pk, reaped=reaped)
    assert reaped.requeued >= 1
    _assert_resumed_from_what_was_staged(session, tree, big)


def test_a_worker_restarted_after_a_sigkill_takes_the_task_back_long_before_its_lease_expires(
    tmp_path, make_tree, start_worker
):
    # Given one worker with a two-minute lease, paused in the middle of a big directory
    tree, big, env, victim, session, _ = _one_worker_paused_with_a_long_lease(
        make_tree, tmp_path, start_worker
    )
    # When it is killed with SIGKILL and a fresh worker starts on the same machine, with no
    # Reaper running at all
    victim.kill()
    killed_at = time.monotonic()
    start_worker("w2", env=env)
    # Then the fresh worker's start-up took the task back, and the run finished well inside the
    # lease, resuming the directory from what was staged
    _assert_taken_back_well_inside_the_lease(session, tree, big, killed_at)


def test_a_pool_child_killed_mid_directory_has_its_task_taken_back_when_the_message_returns(
    tmp_path, make_tree, start_worker
):
    # Given one worker with a two-minute lease, its pool child paused in a big directory
    tree, big, _, worker, session, child = _one_worker_paused_with_a_long_lease(
        make_tree, tmp_path, start_worker
    )
    assert child != worker.proc.pid
    # When only the pool child is killed (as the OOM killer would), with no Reaper running: the
    # worker starts a new child, and the message comes back (task_reject_on_worker_lost)
    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    # Then the new child took the task back from its dead predecessor and finished the run well
    # inside the lease, resuming the directory from what was staged
    _assert_taken_back_well_inside_the_lease(session, tree, big, killed_at)


def test_same_task_delivered_twice_at_once_yields_one_result_set(
    make_tree, start_worker, fast_engine
):
    # Given two workers and a session whose first task's message is sent three more times
    tree = make_tree(directories=300, files=3000)
    workers = [start_worker(f"w{i}", env=FAST_LEASE) for i in (1, 2)]
    session = enumerate_target(path=tree.root)
    root_task = Task.objects.get(session=session)
    for _ in range(3):
        run_enumeration_task.apply_async(args=[str(root_task.pk)])
    # When the run ends
    session = wait_for_session(session.pk)
    # Then there is one result set: the ground truth, one batch per directory
    assert session.status == SessionStatus.COMPLETED
    assert_matches_ground_truth(session.pk, tree)
    assert Batch.objects.filter(session=session).count() == tree.directories + 1
    assert session.total_batches == tree.directories + 1
    # And every extra delivery was seen and declined (the last may still be on its way)
    deadline = time.monotonic() + 30
    while sum(w.output().count("'skipped'") for w in workers) < 3:
        assert time.monotonic() < deadline, "the duplicate deliveries were not all declined"
        time.sleep(0.5)
    assert (
        sum(w.output().count("'completed'") for w in workers)
        == Task.objects.filter(session=session, kind="DISCOVERY_ENUMERATE").count()
    )


def test_broker_restart_mid_run_completes_exactly(
    make_tree, start_worker, redis_server, fast_engine
):
    # Given two workers on a Redis of our own that keeps nothing on disk
    tree = make_tree(directories=1500, files=8000)
    env = {**FAST_LEASE, "CENSUS_LISTING_BATCH_SIZE": "50"}
    workers = [start_worker(f"w{i}", env=env, broker=redis_server.url) for i in (1, 2)]
    with celery_broker(redis_server.url):
        session = enumerate_target(path=tree.root)
        # When Redis is stopped a little way into the run and started again, empty
        restarted = False

        def restart_once(s: SessionState) -> None:
            nonlocal restarted
            if not restarted and s.total_batches >= 100:
                redis_server.stop()
                time.sleep(3)
                redis_server.start()
                restarted = True

        reaped = ReapResult()
        session = wait_for_session(session.pk, on_tick=restart_once, reaped=reaped)
    # Then the run still completes with exactly the ground truth
    assert restarted, "the run ended before the broker could be restarted"
    assert reaped.resent > 0, "no message was lost with the broker: the test proved nothing"
    assert session.status == SessionStatus.COMPLETED, session.failure_reason
    assert_matches_ground_truth(session.pk, tree)
    assert session.completed_at <= timezone.now()
    for worker in workers:
        assert worker.proc.poll() is None, f"{worker.name} died with the broker"


def test_a_message_lost_with_a_worker_is_sent_again_after_a_lease_not_resend_after(
    make_tree, start_worker, broker_url, settings
):
    # Given a session whose first message the queue no longer holds, as when the worker that
    # received it was killed before it claimed the task (the broker keeps such a delivery
    # unacknowledged for its visibility timeout, an hour), and a RESEND_AFTER of ten minutes
    settings.CENSUS = {**settings.CENSUS, "LEASE_SECONDS": 3, "RESEND_AFTER_SECONDS": 600}
    tree = make_tree(directories=30, files=300)
    session = enumerate_target(path=tree.root)
    redis.Redis.from_url(broker_url).flushdb()
    # When a worker is there and the Reaper runs every second, as beat would
    start_worker("w1", env={"CENSUS_LEASE_SECONDS": "3", "CENSUS_RESEND_AFTER_SECONDS": "600"})
    started = time.monotonic()
    session = wait_for_session(session.pk, timeout=60)
    # Then the task was sent again once its lease had passed (by the Reaper, or by the worker's
    # start-up, which resumes active sessions by the same rule), and the run completed exactly
    root = Task.objects.filter(session=session).earliest("created_at")
    assert root.enqueued_at > root.created_at + timedelta(seconds=3)
    assert session.status == SessionStatus.COMPLETED, session.failure_reason
    assert_matches_ground_truth(session.pk, tree)
    assert time.monotonic() - started < 30


def other_backends() -> dict[int, object]:
    """The test database's other connections (the workers'): pid -> when it started."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return dict(cursor.fetchall())


def terminate_other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def enumeration_tasks(session) -> list[Task]:
    return list(Task.objects.filter(session=session, kind=TaskKind.DISCOVERY_ENUMERATE))


GC_FROZEN = re.compile(r"garbage collector: (\d+) objects loaded by process (\d+) frozen")


def _frozen(worker, processes: int) -> list[tuple[int, int]]:
    """The (objects, pid) a worker's processes logged as frozen, once ``processes`` have."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = [(int(n), int(pid)) for n, pid in GC_FROZEN.findall(worker.output())]
        if len(found) >= processes:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{processes} processes did not freeze:\n{worker.output()[-3000:]}")


def test_worker_processes_collect_garbage_less_often_and_freeze_what_they_loaded(
    make_tree, start_worker
):
    # Given a worker as the Procfile starts it, and one started with the collector left alone
    tuned = start_worker("gc-tuned")
    untuned = start_worker("gc-untuned", env={"CENSUS_WORKER_GC_THRESHOLD": "0"})
    # Then the tuned one's main process raised the first generation's threshold before its
    # pool forked, and both its main process and its pool process froze what they had loaded
    assert "the first generation is collected after 10000 new objects" in tuned.output()
    frozen = _frozen(tuned, processes=2)
    assert len({pid for _, pid in frozen}) == 2 and tuned.proc.pid in {p for _, p in frozen}
    assert all(objects > 10_000 for objects, _ in frozen)  # Django and Celery, loaded
    # And the other one left Python's collector as it is, and runs a session alone
    assert "garbage collector" not in untuned.output()
    tuned.stop()
    tree = make_tree("gc", directories=5, files=10)
    session = wait_for_session(enumerate_target(path=tree.root).pk)
    assert session.status == SessionStatus.COMPLETED, session.failure_reason
    assert_matches_ground_truth(session.pk, tree)


def test_a_worker_keeps_its_connection_from_one_task_to_the_next(
    make_tree, start_worker, fast_engine
):
    # Given one worker that has run a session, and a second tree of many tasks
    first = make_tree("first", directories=20, files=100)
    second = make_tree("second", directories=300, files=600)
    start_worker("w1", env=FAST_LEASE)
    assert wait_for_session(enumerate_target(path=first.root).pk).status == "COMPLETED"
    before = other_backends()
    assert before, "the worker closed its connection after its task"
    # When it runs the second session
    session = wait_for_session(enumerate_target(path=second.root).pk)
    # Then every one of those tasks ran on the connection it already had
    assert session.status == SessionStatus.COMPLETED, session.failure_reason
    assert len(enumeration_tasks(session)) >= 5
    assert other_backends() == before


def test_a_connection_the_database_dropped_between_tasks_is_replaced_before_use(
    make_tree, start_worker, fast_engine
):
    # Given a worker whose kept connection the database then closes, as a restart would
    first = make_tree("first", directories=20, files=100)
    second = make_tree("second", directories=200, files=400)
    worker = start_worker("w1", env=FAST_LEASE)
    assert wait_for_session(enumerate_target(path=first.root).pk).status == "COMPLETED"
    assert terminate_other_backends() >= 1
    # When it is given new work
    session = wait_for_session(enumerate_target(path=second.root).pk)
    # Then the dead connection was noticed and replaced before use: no task failed, in Celery
    # (where a failed first query would end it) or in the engine, and none was retried
    assert session.status == SessionStatus.COMPLETED, session.failure_reason
    assert_matches_ground_truth(session.pk, second)
    assert {t.attempts for t in enumeration_tasks(session)} == {1}
    assert "raised unexpected" not in worker.output()
    assert "task failed" not in worker.output()


def test_connections_dropped_in_the_middle_of_a_run_lose_nothing(
    make_tree, start_worker, fast_engine
):
    # Given two workers enumerating a tree in tasks of 10 directories (many small commits)
    tree = make_tree(directories=1000, files=8000)
    for name in ("w1", "w2"):
        start_worker(name, env={**FAST_LEASE, "CENSUS_PIPELINE_GROUP_SIZE": "10"})
    session = enumerate_target(path=tree.root)
    dropped: list[int] = []

    def drop_connections(s) -> None:
        # When the database closes every worker connection, twice, while tasks are running
        if len(dropped) < 2 and s.total_batches >= 100 + 200 * len(dropped):
            dropped.append(terminate_other_backends())

    reaped = ReapResult()
    session = wait_for_session(session.pk, on_tick=drop_connections, reaped=reaped)
    # Then the run completes with exactly the ground truth
    assert len(dropped) == 2, "the run ended before the connections could be dropped"
    assert sum(dropped) >= 1
    assert session.status == SessionStatus.COMPLETED, session.failure_reason
    assert_matches_ground_truth(session.pk, tree)


def test_a_worker_killed_while_deleting_a_session_leaves_whole_batches_for_the_next_run(
    make_tree, start_worker
):
    # Given a finished session of 4,000 files, marked for deletion, and a worker deleting it
    # 20 records per transaction
    tree = make_tree(directories=400, files=4000)
    session = session_drain(session_id=enumerate_target(path=tree.root).pk, idle_sleep=0)
    total = TaskOutputRecord.objects.filter(session_id=session.pk).count()
    session_purge_start(session_id=session.pk)
    worker = start_worker("w1", env={"CENSUS_RETENTION_CHUNK": "20"})
    purge_sessions.apply_async()
    # When it is killed with SIGKILL in the middle of the deletion
    deadline = time.monotonic() + 60
    while TaskOutputRecord.objects.filter(session_id=session.pk).count() > total * 0.7:
        assert time.monotonic() < deadline, "the deletion never started"
        time.sleep(0.02)
    worker.kill()
    # Then every batch left still has every one of its records: a chunk went whole or not at all
    left = TaskOutputRecord.objects.filter(session_id=session.pk).count()
    assert 0 < left < total, "the kill did not land in the middle of the deletion"
    batches = Batch.objects.filter(session=session)
    assert left == sum(b.items_processed for b in batches)
    assert SessionState.objects.get(pk=session.pk).purge_started_at is not None
    # And the next run finishes it
    assert sessions_purge_marked().sessions == 1
    assert not TaskOutputRecord.objects.filter(session_id=session.pk).exists()
    assert not Task.objects.filter(session_id=session.pk).exists()


def _manage(database_url: str, broker: str, *args: str) -> str:
    """A management command of this checkout against another database; its output."""
    env = {**os.environ, "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker}
    done = manage_py({**env, "LOG_LEVEL": "WARNING"}, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _scalar(database_url: str, sql: str, params: tuple = ()) -> object:
    with psycopg2.connect(database_url) as db, db.cursor() as cursor:
        cursor.execute(sql, params)
        value = cursor.fetchone()[0]
    db.close()
    return value


def test_a_database_crash_mid_directory_loses_nothing_and_lists_the_directory_again(
    make_tree, start_worker, postgres_server, broker_url, tmp_path
):
    # Given two workers on a PostgreSQL of our own, and a tree with a directory of 3,000 files
    # whose listing (50 entries a batch) pauses once it has staged 5 batches
    tree = make_tree(directories=300, files=3000)
    big = Path(os.fsdecode(tree.root)) / "big"
    big.mkdir()
    for i in range(3000):
        (big / f"f{i:04d}").touch()
    db = postgres_server.url()
    _manage(db, broker_url, "migrate", "--no-input", "-v", "0")
    env = {
        **FAST_LEASE,
        "DATABASE_URL": db,
        "CENSUS_LISTING_BATCH_SIZE": "50",
        "CENSUS_TEST_PAUSE_LISTING": f"big:5:4:{tmp_path / 'paused'}",
    }
    workers = [start_worker(f"w{i}", env=env) for i in (1, 2)]
    out = _manage(db, broker_url, "enumerate", os.fsdecode(tree.root))
    session_id = re.search(r"session (\S+) started", out).group(1)
    deadline = time.monotonic() + 60
    while not (tmp_path / "paused").exists():
        assert time.monotonic() < deadline, "the listing of big never paused"
        time.sleep(0.1)
    staged = _scalar(db, f"SELECT count(*) FROM {StagedOutputRecord._meta.db_table}")
    # When the database crashes in the middle of that directory and comes back
    postgres_server.crash()
    time.sleep(1)
    postgres_server.start()
    # (beat's Reaper, every second or so, as the other tests play it)
    deadline = time.monotonic() + 300
    status = SessionStatus.IN_PROGRESS
    while status in ACTIVE_SESSION_STATUSES:
        assert time.monotonic() < deadline, f"session still {status} after the crash"
        _manage(db, broker_url, "reap")
        status = _scalar(
            db, f"SELECT status FROM {SessionState._meta.db_table} WHERE id = %s", (session_id,)
        )
    # Then the run completes with exactly the ground truth, and the directory was listed again
    # from its start: what it had staged went with the crash (the staging table is UNLOGGED)
    assert staged >= 250, "nothing was staged when the database crashed: the test proved nothing"
    assert status == SessionStatus.COMPLETED
    with psycopg2.connect(db) as conn, conn.cursor() as cursor:
        records, batches = TaskOutputRecord._meta.db_table, Batch._meta.db_table
        cursor.execute(
            f"SELECT r.object_key FROM {records} r "
            f"JOIN {batches} b ON b.id = r.batch_id WHERE b.session_id = %s",
            (session_id,),
        )
        keys = [row[0] for row in cursor]
        cursor.execute(
            f"SELECT items_resumed, items_processed FROM {batches} "
            "WHERE session_id = %s AND unit = %s",
            (session_id, encode_key(os.fsencode(big))),
        )
        resumed, processed = cursor.fetchone()
    conn.close()
    expected = expected_keys(tree)
    assert set(keys) == expected and len(keys) == len(expected)
    assert (resumed, processed) == (0, 3000)
    for worker in workers:
        assert worker.proc.poll() is None, f"{worker.name} died with the database"
