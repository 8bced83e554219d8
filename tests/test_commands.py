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


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_line_is_rewritten_in_place_on_a_terminal_and_rates_this_run_only():
    from django.core.management.base import OutputWrapper

    from enumeration.progress import ProgressLine

    # Given a command's stdout on a terminal, and a resumed session that had found 1,000,000
    # items before this command started
    terminal = _Terminal()
    progress = ProgressLine(OutputWrapper(terminal), min_interval=0)
    progress.started -= 10  # started ten seconds ago
    session = SessionState(status="IN_PROGRESS", items_found=1_000_000, files_found=900_000)
    # When the line is updated twice, the second time 50 items later, then finally
    progress.update(session)
    session.items_found += 50
    progress.update(session)
    progress.update(session, final=True)
    # Then it is one line rewritten in place, ended once
    written = terminal.getvalue()
    assert written.count("\n") == 1 and written.endswith("\n"), repr(written)
    assert written.count("\r") == 3
    # And its rate is of what this run found, not of the session's whole count
    rate = written.rsplit("\r", 1)[1].split("items/s")[0].split()[-1]
    assert rate == "5", written  # 50 items in 10 s
