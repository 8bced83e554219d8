"""Sessions under more than one hand at once, on PostgreSQL: two starts of one target, a start and
a resume, a requeue and a deletion, and the stall watch beside a worker that is busy."""

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from enumeration.choices import SessionStatus, TaskStatus
from enumeration.models import SessionState, Task
from enumeration.services import engine, sessions
from enumeration.services.engine import task_claim, task_run
from enumeration.services.inprocess import session_drain
from enumeration.services.retention import session_purge_start
from enumeration.services.sessions import (
    SessionConflict,
    enumerate_target,
    resume_target,
    sessions_detect_stalled,
    task_requeue,
    tasks_reap,
)

pytestmark = pytest.mark.django_db(transaction=True)

TWO_HOURS_AGO = timedelta(hours=2)


def _at_once(*calls: Callable[[], object]) -> list[object]:
    """Run the calls in threads released together; each one's result or exception, in order."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[object] = [None] * len(calls)

    def run(i: int, call: Callable[[], object]) -> None:
        from django.db import connection

        try:
            barrier.wait(timeout=30)
            outcomes[i] = call()
        except Exception as exc:  # the outcome under test
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


@pytest.fixture
def slow_transactions(monkeypatch):
    """Starts and resumes hold their transaction open a moment after their check (as on a busy
    database), so that two of them released together overlap."""
    create = sessions.tasks_create

    def slowly(tasks):
        time.sleep(0.5)
        return create(tasks)

    monkeypatch.setattr(sessions, "tasks_create", slowly)


def _failed_session(path) -> tuple[SessionState, Task]:
    """A FAILED session of ``path``: its one task's worker died on each attempt."""
    session = enumerate_target(path=path)
    task = Task.objects.get(session=session)
    for attempt in range(task.max_attempts):
        assert task_claim(task_id=task.pk, worker_id=f"w{attempt}") is not None
        Task.objects.filter(pk=task.pk).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        tasks_reap()
    session.refresh_from_db()
    task.refresh_from_db()
    assert session.status == SessionStatus.FAILED
    assert task.status == TaskStatus.FAILED
    return session, task


def _active_sessions(target_id) -> list[SessionState]:
    return list(
        SessionState.objects.filter(
            target_id=target_id, status__in=sessions.ACTIVE_SESSION_STATUSES
        )
    )


# --- one active session per target --------------------------------------------------------------
def test_two_starts_of_one_target_at_once_make_one_session(tmp_path, slow_transactions):
    # Given a target enumerated before (its row exists, no session of it is active)
    first = session_drain(session_id=enumerate_target(path=tmp_path).pk, idle_sleep=0.05)
    assert first.status == SessionStatus.COMPLETED
    # When two starts of it arrive at once (a double-clicked POST /api/sessions/)
    outcomes = _at_once(
        lambda: enumerate_target(path=tmp_path), lambda: enumerate_target(path=tmp_path)
    )
    # Then one starts a session and the other is refused
    started = [o for o in outcomes if isinstance(o, SessionState)]
    refused = [o for o in outcomes if isinstance(o, SessionConflict)]
    assert len(started) == 1, outcomes
    assert len(refused) == 1, outcomes
    assert "is already enumerating" in str(refused[0])
    assert [s.pk for s in _active_sessions(first.target_id)] == [started[0].pk]


def test_a_start_racing_a_resume_of_the_same_target_leaves_one_active_session(
    tmp_path, slow_transactions
):
    # Given a FAILED session of a target
    (tmp_path / "a").mkdir()
    failed, _ = _failed_session(tmp_path)
    # When it is resumed while a new session of the same target is started
    outcomes = _at_once(
        lambda: resume_target(session_id=failed.pk), lambda: enumerate_target(path=tmp_path)
    )
    # Then one of them wins and the other is refused: one session of the target is active
    refused = [o for o in outcomes if isinstance(o, SessionConflict)]
    assert len(refused) == 1, outcomes
    assert [o for o in outcomes if isinstance(o, Exception)] == refused, outcomes
    assert len(_active_sessions(failed.target_id)) == 1


def test_a_finished_session_is_not_taken_back_while_another_of_its_target_is_active(tmp_path):
    # Given a FAILED session of a target, and a newer session of it still running
    failed, failed_task = _failed_session(tmp_path)
    newer = enumerate_target(path=tmp_path)
    # When the old one is resumed, or its failed task requeued, each is refused
    with pytest.raises(SessionConflict, match=f"Session {newer.pk} is already enumerating"):
        resume_target(session_id=failed.pk)
    with pytest.raises(SessionConflict, match=f"Session {newer.pk} is already enumerating"):
        task_requeue(task_id=failed_task.pk)
    # Then nothing changed
    failed.refresh_from_db()
    assert failed.status == SessionStatus.FAILED
    assert Task.objects.get(pk=failed_task.pk).status == TaskStatus.FAILED
    assert [s.pk for s in _active_sessions(failed.target_id)] == [newer.pk]


# --- requeue and deletion ----------------------------------------------------------------------
def test_a_task_of_a_session_being_deleted_cannot_be_requeued(tmp_path):
    # Given a FAILED session whose deletion has started
    session, task = _failed_session(tmp_path)
    session_purge_start(session_id=session.pk)
    # When an operator requeues its failed task
    with pytest.raises(SessionConflict, match=f"Session {session.pk} is being deleted"):
        task_requeue(task_id=task.pk)
    # Then the task and the session are as they were
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    session.refresh_from_db()
    assert session.status == SessionStatus.FAILED
    assert session.failed_batches == 1


# --- the stall watch ---------------------------------------------------------------------------
def _quiet_since(session: SessionState, ago: timedelta) -> None:
    SessionState.objects.filter(pk=session.pk).update(last_update=timezone.now() - ago)


def test_a_session_whose_task_is_heartbeating_is_not_stalled(tmp_path):
    # Given a session with no commit for two hours, its one task running and heartbeating (a
    # huge directory staged batch by batch)
    session = enumerate_target(path=tmp_path)
    task = Task.objects.get(session=session)
    assert task_claim(task_id=task.pk, worker_id="w") is not None
    _quiet_since(session, TWO_HOURS_AGO)
    # When the stall watch runs, it is left alone
    assert sessions_detect_stalled() == []
    assert SessionState.objects.get(pk=session.pk).status == SessionStatus.IN_PROGRESS
    # But when the heartbeat stops too, it is stalled
    Task.objects.filter(pk=task.pk).update(heartbeat_at=timezone.now() - TWO_HOURS_AGO)
    assert [s.pk for s in sessions_detect_stalled()] == [session.pk]
    assert SessionState.objects.get(pk=session.pk).status == SessionStatus.STALLED


def test_a_commit_takes_a_stalled_session_back_to_in_progress(tmp_path, monkeypatch):
    # Given a worker listing a directory whose session is flagged STALLED before its first commit
    (tmp_path / "f").touch()
    session = enumerate_target(path=tmp_path)
    seen_after_commit: list[tuple[str, str]] = []
    commit = engine._commit_units

    def stalled_then_commit(task, worker_id, cfg, units):
        if units and not seen_after_commit:
            _quiet_since(session, TWO_HOURS_AGO)
            Task.objects.filter(pk=task.pk).update(heartbeat_at=timezone.now() - TWO_HOURS_AGO)
            assert [s.pk for s in sessions_detect_stalled()] == [session.pk]
        commit(task, worker_id, cfg, units)
        if units and not seen_after_commit:
            row = SessionState.objects.get(pk=session.pk)
            seen_after_commit.append((row.status, row.failure_reason))

    monkeypatch.setattr(engine, "_commit_units", stalled_then_commit)
    # When it commits the unit
    assert task_run(task_id=Task.objects.get(session=session).pk).status == "completed"
    # Then the commit itself took the session back to IN_PROGRESS, its stall reason gone
    assert seen_after_commit == [(SessionStatus.IN_PROGRESS, "")]
    assert SessionState.objects.get(pk=session.pk).status == SessionStatus.COMPLETED


def test_a_session_no_worker_has_started_is_stalled_and_its_first_claim_revives_it(tmp_path):
    # Given two sessions no worker has started: one for two hours, one just created
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    unclaimed = enumerate_target(path=tmp_path / "old")
    _quiet_since(unclaimed, TWO_HOURS_AGO)
    fresh = enumerate_target(path=tmp_path / "new")
    # When the stall watch runs
    stalled = sessions_detect_stalled()
    # Then only the one left unclaimed past the threshold is STALLED, saying why
    assert [s.pk for s in stalled] == [unclaimed.pk]
    unclaimed.refresh_from_db()
    assert unclaimed.status == SessionStatus.STALLED
    assert "no worker has started it" in unclaimed.failure_reason
    assert SessionState.objects.get(pk=fresh.pk).status == SessionStatus.INITIALIZED
    # And when a worker claims its task, it is IN_PROGRESS again
    task = Task.objects.get(session=unclaimed)
    assert task_claim(task_id=task.pk, worker_id="w") is not None
    unclaimed.refresh_from_db()
    assert unclaimed.status == SessionStatus.IN_PROGRESS
    assert unclaimed.failure_reason == ""
    assert unclaimed.started_at is not None


def test_a_second_active_session_of_a_target_is_refused_by_constraint(tmp_path):
    # Given an active session of a target
    session = enumerate_target(path=tmp_path)
    # When a second active session of the same target is written past the services' check
    # Then the database refuses it
    with pytest.raises(IntegrityError, match="one_active_session_per_target"), transaction.atomic():
        SessionState.objects.create(target=session.target, source_type=session.source_type)
    # And once the first has finished, a new one is allowed
    SessionState.objects.filter(pk=session.pk).update(status=SessionStatus.COMPLETED)
    SessionState.objects.create(target=session.target, source_type=session.source_type)


def test_the_migration_fails_all_but_the_newest_active_session_of_a_target(tmp_path):
    # Given a database from before the constraint, holding two active sessions of one target
    before = ("enumeration", "0009_record_ids_in_blocks_classification_ranges")
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    try:
        # (written through the models as they were then: today's may have columns added since)
        old = executor.loader.project_state(before).apps
        target = old.get_model("enumeration", "ScanTarget").objects.create(
            name="t", target_type="directory", location=str(tmp_path)
        )
        sessions_then = old.get_model("enumeration", "SessionState").objects
        older = sessions_then.create(
            target=target, source_type="directory", status=SessionStatus.INITIALIZED
        )
        newer = sessions_then.create(
            target=target, source_type="directory", status=SessionStatus.IN_PROGRESS
        )
        sessions_then.filter(pk=newer.pk).update(created_at=older.created_at + TWO_HOURS_AGO)
        # When the migration runs
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes("enumeration"))
    # Then the newest stays active and the other is failed, saying why
    assert SessionState.objects.get(pk=newer.pk).status == SessionStatus.IN_PROGRESS
    failed = SessionState.objects.get(pk=older.pk)
    assert failed.status == SessionStatus.FAILED
    assert "enumeration.0010" in failed.failure_reason


def test_a_resume_does_not_wait_for_a_task_being_claimed(tmp_path):
    # Given a session whose pending task another transaction holds locked (a claim under way)
    session = enumerate_target(path=tmp_path)
    task = Task.objects.get(session=session)
    locked, release = threading.Event(), threading.Event()

    def claim_under_way() -> None:
        try:
            with transaction.atomic():
                Task.objects.select_for_update().get(pk=task.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=claim_under_way)
    holder.start()
    try:
        assert locked.wait(timeout=30)
        # When the session is resumed meanwhile
        resumed = _at_once(lambda: resume_target(session_id=session.pk))
        # Then the resume finished without waiting for the lock (a claim that then waits for
        # the session, locked by the resume, would have deadlocked against it)
        assert isinstance(resumed[0], SessionState), resumed
        assert holder.is_alive()
    finally:
        release.set()
        holder.join(timeout=30)
