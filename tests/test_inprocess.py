"""The embedded default's background worker also does beat's part: the periodic jobs, each when
it is due (there is no beat without a broker)."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from config.periodic import PeriodicJob
from enumeration.choices import SessionStatus, TaskStatus
from enumeration.models import DomainEvent, SessionState, Task
from enumeration.services.inprocess import PeriodicJobsDue, session_drain
from enumeration.services.sessions import enumerate_target

pytestmark = pytest.mark.django_db(transaction=True)

RAN: list[str] = []


def hourly_job() -> None:
    RAN.append("hourly")


def constant_job() -> None:
    RAN.append("constant")


def broken_job() -> None:
    RAN.append("broken")
    raise RuntimeError("broken job")


def test_each_job_runs_first_at_once_then_when_its_interval_has_passed(caplog):
    RAN.clear()
    here = __name__
    due = PeriodicJobsDue(
        [
            PeriodicJob("broken", f"{here}.broken_job", 0),
            PeriodicJob("hourly", f"{here}.hourly_job", 3600),
            PeriodicJob("constant", f"{here}.constant_job", 0),
        ]
    )
    # The first pass runs every job, and a job that fails neither stops the others nor the pass
    assert due.run() == ["broken", "hourly", "constant"]
    assert RAN == ["broken", "hourly", "constant"]
    assert "periodic job 'broken' failed" in caplog.text
    # The next passes run only what is due again: the hourly job waits its hour
    RAN.clear()
    assert due.run() == ["broken", "constant"]
    assert RAN == ["broken", "constant"]


def _share(base: Path, name: str) -> Path:
    root = base / name
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.txt").touch()
    return root


def test_the_first_pass_sweeps_the_outbox_marks_stalled_sessions_and_applies_retention(
    tmp_path, settings
):
    settings.CENSUS = {**settings.CENSUS, "SESSION_RETENTION_DAYS": 30, "SESSION_RETENTION_KEEP": 0}
    # Given an event whose dispatch after commit died with its process
    lost = DomainEvent.objects.create(
        event_type="TaskCreated", aggregate_type="task", aggregate_id="lost", payload={}
    )
    # And a session finished 100 days ago
    old = session_drain(session_id=enumerate_target(path=str(_share(tmp_path, "a"))).pk)
    assert old.status == SessionStatus.COMPLETED
    SessionState.objects.filter(pk=old.pk).update(completed_at=timezone.now() - timedelta(days=100))
    # And a session that has not moved for a day, its task leased to a process that hangs
    stuck = enumerate_target(path=str(_share(tmp_path, "b")))
    SessionState.objects.filter(pk=stuck.pk).update(
        status=SessionStatus.IN_PROGRESS, last_update=timezone.now() - timedelta(days=1)
    )
    Task.objects.filter(session=stuck).update(
        status=TaskStatus.RUNNING,
        lease_owner="hung",
        lease_expires_at=timezone.now() + timedelta(days=1),
        heartbeat_at=timezone.now() - timedelta(days=1),
    )
    # When the background worker's periodic jobs first run (the engine's own, as beat has them)
    PeriodicJobsDue().run()
    # Then the event went out, the quiet session is STALLED, and the old one is deleted
    lost.refresh_from_db()
    assert lost.dispatched_at is not None
    assert SessionState.objects.get(pk=stuck.pk).status == SessionStatus.STALLED
    assert not SessionState.objects.filter(pk=old.pk).exists()
