import time

from django.conf import settings
from django.core.management.base import CommandError

from enumeration.models import SessionState
from enumeration.models.sessions import ACTIVE_SESSION_STATUSES
from enumeration.progress import ProgressLine
from enumeration.services.inprocess import session_drain

# Printed by `enumerate` and `resume` without --wait on the embedded default: this process has
# no worker, and nothing else may run the session until a process that has one does.
NO_WORKER_HERE = (
    "no broker is configured (the embedded default): the session runs in a process with an "
    "in-process worker: this command with --wait, `manage.py resume {id} --wait`, or a running "
    "web process (`manage.py runserver`), which picks it up within seconds"
)


def note_when_nothing_runs_it(session: SessionState, stdout) -> None:
    if settings.CENSUS_IN_PROCESS_WORKER:
        stdout.write(NO_WORKER_HERE.format(id=session.pk))


def follow_session(session: SessionState, stdout) -> SessionState:
    """Run (embedded default) or watch (real workers) a session until it is no longer active."""
    progress = ProgressLine(stdout)
    try:
        if settings.CENSUS_IN_PROCESS_WORKER:
            session = session_drain(session_id=session.pk, on_progress=progress.update)
        else:
            while session.status in ACTIVE_SESSION_STATUSES:
                progress.update(session)
                time.sleep(0.5)
                session = SessionState.objects.get(pk=session.pk)
    except KeyboardInterrupt:
        stdout.write("")
        if settings.CENSUS_IN_PROCESS_WORKER:
            # What was committed stays; the task this process held is taken back by the next
            # run's Reaper as soon as it sees this process gone.
            raise CommandError(
                f"interrupted: session {session.pk} stays active; "
                f"`manage.py resume {session.pk} --wait` carries on from where it stopped",
                returncode=130,
            ) from None
        raise CommandError(
            f"stopped following session {session.pk}; the workers carry on with it",
            returncode=130,
        ) from None
    progress.update(session, final=True)
    return session
