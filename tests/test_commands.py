"""The management commands people run at a shell."""

import io

import pytest
from django.core.management import CommandError, call_command

from enumeration.choices import SessionStatus
from enumeration.models import SessionState
from enumeration.services.inprocess import session_drain

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_enumerate_starts_a_session_and_sessions_lists_it(tmp_path):
    (tmp_path / "f").touch()
    output = run("enumerate", str(tmp_path), "--name", "share")
    session = SessionState.objects.get()
    assert f"session {session.pk} started for {tmp_path}" in output
    session_drain(session_id=session.pk, idle_sleep=0.05)
    listing = run("sessions")
    assert str(session.pk) in listing
    assert "COMPLETED" in listing
    assert "COMPLETED" in run("sessions", "--status", "COMPLETED")
    assert str(session.pk) not in run("sessions", "--status", "FAILED")


def test_enumerate_refuses_a_missing_path_with_a_clear_message(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        run("enumerate", str(tmp_path / "nope"))
    assert not SessionState.objects.exists()


@pytest.mark.parametrize(
    ("argument", "message"), [("not-a-uuid", "is not a session id"), (None, "No session")]
)
def test_resume_refuses_what_is_not_a_session(argument, message):
    import uuid

    with pytest.raises(CommandError, match=message):
        run("resume", argument or str(uuid.uuid4()))


def test_resume_of_a_completed_session_says_why_not(tmp_path):
    session = SessionState.objects.get(pk=run_and_drain(tmp_path))
    assert session.status == SessionStatus.COMPLETED
    with pytest.raises(CommandError, match="already COMPLETED"):
        run("resume", str(session.pk))


def test_reap_reports_what_it_did():
    assert run("reap").strip() == "requeued 0, failed 0, re-sent 0"


def run_and_drain(path):
    run("enumerate", str(path))
    session = SessionState.objects.get()
    session_drain(session_id=session.pk, idle_sleep=0.05)
    return session.pk
