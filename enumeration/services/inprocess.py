"""The embedded default's worker: drain a session's tasks in this process, straight from the
database (which is the queue in every mode; a broker only delivers wake-up calls)."""

import time
import uuid
from collections.abc import Callable

from enumeration.choices import SessionStatus, TaskStatus
from enumeration.models import SessionState, Task
from enumeration.models.sessions import ACTIVE_SESSION_STATUSES
from enumeration.services.dispatch import RUNNABLE_KINDS
from enumeration.services.engine import task_run, worker_identity
from enumeration.services.pipeliner import pipeline_advance
from enumeration.services.sessions import session_refresh_status, tasks_reap


def session_drain(
    *,
    session_id: uuid.UUID,
    on_progress: Callable[[SessionState], None] | None = None,
    idle_sleep: float = 0.5,
) -> SessionState:
    """Run the session's tasks here until it is no longer active. Returns it, finished."""
    worker_id = worker_identity()
    while True:
        next_task = (
            Task.objects.filter(
                session_id=session_id, kind__in=RUNNABLE_KINDS, status=TaskStatus.PENDING
            )
            .order_by("created_at")
            .values_list("pk", flat=True)
            .first()
        )
        if next_task is not None:
            task_run(task_id=next_task, worker_id=worker_id)
        else:
            tasks_reap()
            pipeline_advance(session_id=session_id)
            session = session_refresh_status(session_id=session_id)
            if (
                session.status not in ACTIVE_SESSION_STATUSES
                or session.status == SessionStatus.STALLED
            ):
                if on_progress:
                    on_progress(session)
                return session
            time.sleep(idle_sleep)  # a task is running elsewhere: wait for it
        if on_progress:
            on_progress(SessionState.objects.get(pk=session_id))
