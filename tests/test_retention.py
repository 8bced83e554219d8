"""Retention: finished sessions deleted in chunks, each target's newest kept, a half-done deletion
finished by the next run, and nothing reached by a scan of the whole output table."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from enumeration import tasks
from enumeration.choices import SessionStatus
from enumeration.models import (
    Batch,
    DomainEvent,
    SessionState,
    StagedOutputRecord,
    Task,
    TaskOutputRecord,
)
from enumeration.services import retention
from enumeration.services.inprocess import session_drain
from enumeration.services.retention import (
    SessionNotFinished,
    session_purge,
    session_purge_start,
    sessions_expired,
    sessions_purge_expired,
    sessions_purge_marked,
)
from enumeration.services.sessions import SessionConflict, enumerate_target, resume_target

pytestmark = pytest.mark.django_db(transaction=True)


def make_share(base: Path, name: str, directories: int = 5, files: int = 4) -> Path:
    root = base / name
    for d in range(directories):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(files):
            (root / f"d{d}" / f"f{f}.txt").touch()
    return root


def finished(root: Path, *, days_ago: float = 0) -> SessionState:
    session = session_drain(session_id=enumerate_target(path=str(root)).pk, idle_sleep=0)
    assert session.status == SessionStatus.COMPLETED
    if days_ago:
        SessionState.objects.filter(pk=session.pk).update(
            completed_at=timezone.now() - timedelta(days=days_ago)
        )
    return session


def rows_of(session: SessionState) -> dict[str, int]:
    return {
        "records": TaskOutputRecord.objects.filter(session_id=session.pk).count(),
        "batches": Batch.objects.filter(session_id=session.pk).count(),
        "tasks": Task.objects.filter(session_id=session.pk).count(),
        "staged": StagedOutputRecord.objects.filter(session_id=session.pk).count(),
        "session": SessionState.objects.filter(pk=session.pk).count(),
    }


GONE = {"records": 0, "batches": 0, "tasks": 0, "staged": 0, "session": 0}


def test_retention_deletes_old_finished_sessions_and_keeps_each_targets_newest(tmp_path, settings):
    # Given a target with three finished sessions, 100, 90 and 60 days old, and one running;
    # and a second target whose only session is 100 days old
    a, b = make_share(tmp_path, "a"), make_share(tmp_path, "b")
    a_oldest, a_older, a_newest = (finished(a, days_ago=d) for d in (100, 90, 60))
    a_running = enumerate_target(path=str(a))
    b_only = finished(b, days_ago=100)
    kept_rows = {s.pk: rows_of(s) for s in (a_newest, b_only)}
    # When retention keeps 30 days and each target's newest session
    settings.CENSUS = {**settings.CENSUS, "SESSION_RETENTION_DAYS": 30, "SESSION_RETENTION_KEEP": 1}
    result = sessions_purge_expired()
    # Then the two older sessions of the first target are gone with everything they had
    assert result.sessions == 2
    assert result.records == 2 * (5 + 5 * 4)
    assert rows_of(a_oldest) == rows_of(a_older) == GONE
    # And each target's newest finished session is whole, however old, and so is the running one
    for session in (a_newest, b_only):
        assert rows_of(session) == kept_rows[session.pk]
    assert SessionState.objects.get(pk=a_running.pk).status == SessionStatus.INITIALIZED
    # And a second run finds nothing more to do
    assert sessions_purge_expired().sessions == 0


def test_retention_at_zero_days_deletes_nothing(tmp_path, settings):
    settings.CENSUS = {**settings.CENSUS, "SESSION_RETENTION_DAYS": 0}
    root = make_share(tmp_path, "a")
    old = [finished(root, days_ago=1000) for _ in range(2)]
    assert sessions_purge_expired().sessions == 0
    assert all(rows_of(s)["session"] == 1 for s in old)


def test_an_interrupted_deletion_is_finished_by_the_next_run_and_cannot_be_resumed(tmp_path):
    # Given a session marked for deletion whose deletion stopped after one chunk
    root = make_share(tmp_path, "a", directories=8, files=10)
    doomed, other = finished(root), finished(make_share(tmp_path, "b"))
    other_rows = rows_of(other)
    session_purge_start(session_id=doomed.pk)
    gone, deleted = session_purge(session_id=doomed.pk, chunk_rows=15, max_chunks=1)
    assert not gone
    assert 0 < deleted < 8 * 11 + 1
    assert rows_of(doomed)["records"] > 0
    # Then it cannot be resumed: part of it is already gone
    with pytest.raises(SessionConflict, match="being deleted"):
        resume_target(session_id=doomed.pk)
    # When retention runs again, with no retention period set, it finishes that deletion
    result = sessions_purge_marked()
    assert (result.sessions, result.unfinished) == (1, 0)
    assert rows_of(doomed) == GONE
    # And nothing of the other session was touched
    assert rows_of(other) == other_rows
    # And the deletion was announced once, when the session row went
    event = DomainEvent.objects.get(event_type="SessionDeleted")
    assert event.aggregate_id == str(doomed.pk)
    assert event.payload == {
        "session_id": str(doomed.pk),
        "target_id": str(doomed.target_id),
        "items_found": 8 * 11,
    }
    assert event.dispatched_at is not None


def test_a_directory_larger_than_a_chunk_is_deleted_a_chunk_per_transaction(tmp_path):
    # Given a marked session of one directory of 25 files: one batch of 25 records
    root = tmp_path / "big"
    root.mkdir()
    for i in range(25):
        (root / f"f{i:02d}").touch()
    session = finished(root)
    session_purge_start(session_id=session.pk)
    # When it is deleted 10 records per transaction, one transaction at a time
    steps = []
    while True:
        gone, deleted = session_purge(session_id=session.pk, chunk_rows=10, max_chunks=1)
        steps.append(deleted)
        if gone:
            break
    # Then the batch's records went 10 at a time, then the rest with the batch: no
    # transaction deleted more than a chunk (a directory of millions would be one DELETE)
    assert steps[:3] == [10, 10, 5]
    assert max(steps) <= 10 and sum(steps) == 25
    assert rows_of(session) == GONE


def test_the_retention_task_spends_its_budget_then_hands_the_rest_to_a_task_of_its_own(
    tmp_path, settings, runs_without_budget
):
    # Given three marked sessions of 5 directories each, deleted 10 records per transaction, and
    # a retention task with no time to spend: each run gets one transaction
    settings.CENSUS = {**settings.CENSUS, "RETENTION_CHUNK": 10}
    doomed = [finished(make_share(tmp_path, name)) for name in ("a", "b", "c")]
    for session in doomed:
        session_purge_start(session_id=session.pk)
    runs = runs_without_budget(retention, "sessions_purge_expired")
    # When the retention task runs, its re-sends run in process (eager, as a worker would take
    # them one after another)
    tasks.purge_sessions.delay()
    # Then every run stopped after its first transaction and handed the rest on, until all three
    # sessions were gone
    assert all(rows_of(session) == GONE for session in doomed)
    assert len(runs) > 3
    assert all(run.records <= 10 for run in runs)
    assert [run.unfinished for run in runs][-1] == 0
    assert all(run.unfinished for run in runs[:-1])


def test_an_active_session_cannot_be_marked_for_deletion(tmp_path):
    session = enumerate_target(path=str(make_share(tmp_path, "a")))
    with pytest.raises(SessionNotFinished, match="INITIALIZED"):
        session_purge_start(session_id=session.pk)
    assert SessionState.objects.get(pk=session.pk).purge_started_at is None


def test_records_are_deleted_through_their_batch_never_by_session_or_task(tmp_path):
    # Given a finished session marked for deletion
    session = finished(make_share(tmp_path, "a"))
    session_purge_start(session_id=session.pk)
    # When it is deleted
    with CaptureQueriesContext(connection) as queries:
        sessions_purge_marked()
    # Then every DELETE on the output table is by batch, the key it has (a DELETE by session or
    # task would scan the whole table, every session's records)
    output_table = 'DELETE FROM "task_output_records"'
    deletes = [q["sql"] for q in queries if q["sql"].startswith(output_table)]
    assert deletes
    for sql in deletes:
        where = sql.split("WHERE", 1)[1]
        assert '"batch_id"' in where, sql
        assert '"session_id"' not in where and '"task_id"' not in where, sql
    assert rows_of(session) == GONE


def test_expired_sessions_are_ranked_per_target_by_completion(tmp_path):
    root = make_share(tmp_path, "a")
    sessions = [finished(root, days_ago=d) for d in (50, 40, 10)]
    expired = set(sessions_expired(older_than=timedelta(days=30), keep_latest=1))
    assert expired == {sessions[0], sessions[1]}
    expired = set(sessions_expired(older_than=timedelta(days=30), keep_latest=2))
    assert expired == {sessions[0]}
    assert not sessions_expired(older_than=timedelta(days=60), keep_latest=0).exists()


def _between_listing_and_marking(monkeypatch, meanwhile) -> None:
    """Run ``meanwhile(session_id)`` once, after the retention job has listed the expired
    sessions and before it marks the first of them."""
    from enumeration.services import retention

    real, done = retention._mark_if_still_expired, []

    def mark(session_id, expired):
        if not done:
            done.append(session_id)
            meanwhile(session_id)
        return real(session_id, expired)

    monkeypatch.setattr(retention, "_mark_if_still_expired", mark)


def test_a_session_resumed_and_finished_again_after_retention_listed_it_is_kept(
    tmp_path, settings, monkeypatch
):
    # Given a target's two finished sessions, 100 and 60 days old, the older PARTIALLY_COMPLETED
    root = make_share(tmp_path, "a")
    older, newer = finished(root, days_ago=100), finished(root, days_ago=60)
    failed = Batch.objects.filter(session=older).exclude(unit=str(root)).first()
    Batch.objects.filter(pk=failed.pk).update(status="FAILED")
    SessionState.objects.filter(pk=older.pk).update(
        status=SessionStatus.PARTIALLY_COMPLETED, failed_batches=1
    )
    settings.CENSUS = {**settings.CENSUS, "SESSION_RETENTION_DAYS": 30, "SESSION_RETENTION_KEEP": 1}

    # And an operator resumes the older one, which finishes again, right after the retention
    # job listed it as expired
    def resumed_and_finished(session_id) -> None:
        resume_target(session_id=session_id)
        assert session_drain(session_id=session_id, idle_sleep=0).status == "COMPLETED"

    _between_listing_and_marking(monkeypatch, resumed_and_finished)
    # When the job goes on
    sessions_purge_expired()
    # Then the resumed session, now the target's newest, is kept
    assert rows_of(older)["session"] == 1
    assert SessionState.objects.get(pk=older.pk).purge_started_at is None
    # And the next run deletes the one it has made the older of the two
    assert rows_of(newer)["session"] == 1
    sessions_purge_expired()
    assert rows_of(older)["session"] == 1
    assert rows_of(newer) == GONE


def test_a_session_another_run_deleted_after_this_one_listed_it_is_skipped(
    tmp_path, settings, monkeypatch
):
    # Given a target's expired session and a newer one, and a second retention run (say one an
    # admin's delete started) that deletes the expired one after this run listed it
    root = make_share(tmp_path, "a")
    old, other_old, new = (finished(root, days_ago=d) for d in (100, 90, 1))
    settings.CENSUS = {**settings.CENSUS, "SESSION_RETENTION_DAYS": 30, "SESSION_RETENTION_KEEP": 1}

    def deleted_by_another_run(session_id) -> None:
        session_purge_start(session_id=session_id)
        session_purge(session_id=session_id, chunk_rows=1000)

    _between_listing_and_marking(monkeypatch, deleted_by_another_run)
    # When this run goes on, it skips that one and deletes the rest of its list
    result = sessions_purge_expired()
    assert result.sessions == 1
    assert rows_of(old) == rows_of(other_old) == GONE
    assert rows_of(new)["session"] == 1


# --- the ways in --------------------------------------------------------------------------------
def test_purge_sessions_command_lists_on_a_dry_run_and_deletes_when_asked(tmp_path, capsys):
    root = make_share(tmp_path, "a")
    old, new = finished(root, days_ago=40), finished(root)
    # A dry run lists the expired session and deletes nothing
    call_command("purge_sessions", "--older-than-days", "30", "--dry-run")
    out = capsys.readouterr().out
    assert f"would delete session {old.pk} (COMPLETED" in out
    assert str(new.pk) not in out
    assert rows_of(old)["session"] == 1
    # The real run deletes it
    call_command("purge_sessions", "--older-than-days", "30")
    assert "deleted 1 sessions (25 output records)" in capsys.readouterr().out
    assert rows_of(old) == GONE
    assert rows_of(new)["session"] == 1
    # A session named on the command line is deleted whatever its age
    call_command("purge_sessions", str(new.pk))
    assert rows_of(new) == GONE


def test_purge_sessions_command_refuses_bad_input_with_a_clear_message(tmp_path):
    running = enumerate_target(path=str(make_share(tmp_path, "a")))
    with pytest.raises(CommandError, match="is not a session id"):
        call_command("purge_sessions", "not-a-uuid")
    with pytest.raises(CommandError, match="No session"):
        call_command("purge_sessions", "00000000-0000-0000-0000-000000000000")
    with pytest.raises(CommandError, match="only a finished session"):
        call_command("purge_sessions", str(running.pk))
    with pytest.raises(CommandError, match="cannot be negative"):
        call_command("purge_sessions", "--keep-latest", "-1")
    assert SessionState.objects.get(pk=running.pk).purge_started_at is None


def test_admin_delete_action_marks_finished_sessions_and_refuses_running_ones(
    admin_client, tmp_path, settings
):
    # Given a finished and a running session (the deletion is run here as the embedded
    # default would; with a broker a worker does it)
    settings.CENSUS_IN_PROCESS_WORKER = True
    done = finished(make_share(tmp_path, "a"))
    running = enumerate_target(path=str(make_share(tmp_path, "b")))
    # When the operator deletes both from the list
    response = admin_client.post(
        reverse("admin:enumeration_sessionstate_changelist"),
        {"action": "delete_sessions", "_selected_action": [str(done.pk), str(running.pk)]},
        follow=True,
    )
    # Then the finished one is gone and the running one is refused, each said so
    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert f"Session {done.pk} is being deleted." in messages
    assert any(str(running.pk) in m and "only a finished session" in m for m in messages)
    assert rows_of(done) == GONE
    assert SessionState.objects.get(pk=running.pk).purge_started_at is None
