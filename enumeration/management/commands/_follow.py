import time

from django.conf import settings

from enumeration.models import SessionState
from enumeration.models.sessions import ACTIVE_SESSION_STATUSES
from enumeration.progress import ProgressLine
from enumeration.services.inprocess import session_drain


def follow_session(session: SessionState, stdout) -> SessionState:
    """Run (embedded default) or watch (real workers) a session until it is no longer active."""
    progress = ProgressLine(stdout)
    if settings.CENSUS_IN_PROCESS_WORKER:
        session = session_drain(session_id=session.pk, on_progress=progress.update)
    else:
        while session.status in ACTIVE_SESSION_STATUSES:
            progress.update(session)
            time.sleep(0.5)
            session = SessionState.objects.get(pk=session.pk)
    progress.update(session, final=True)
    return session
