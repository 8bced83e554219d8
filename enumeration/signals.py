"""The Orchestrator's start-up: when a worker is ready, every active session is resumed."""

import logging

from celery.signals import worker_ready

logger = logging.getLogger(__name__)


@worker_ready.connect
def resume_on_worker_start(**kwargs: object) -> None:
    from enumeration.tasks import resume_active_sessions

    # Sent as a message rather than run here, so a worker's start-up never blocks on the database;
    # any worker (including this one) picks it up, and resuming twice is harmless.
    try:
        resume_active_sessions.apply_async(retry=False)
    except Exception:
        logger.warning("could not ask for the resumption of active sessions", exc_info=True)
