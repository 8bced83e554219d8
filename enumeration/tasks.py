"""Celery tasks: thin edges that take ids, call one service, and report.

Every task is safe to run twice: the services re-read the database and act only when the state
says so (a claim, a status guard, ``SKIP LOCKED``).
"""

from celery import shared_task
from django.conf import settings

from enumeration.services import engine, events, pipeliner, retention, sessions


@shared_task(acks_late=True, ignore_result=True)
def run_enumeration_task(task_id: str) -> str:
    return engine.task_run(task_id=task_id).status


@shared_task(ignore_result=True)
def reap_tasks() -> dict:
    result = sessions.tasks_reap()
    return {"requeued": result.requeued, "failed": result.failed, "resent": result.resent}


@shared_task(ignore_result=True)
def pipeline_sweep() -> int:
    return pipeliner.pipeline_sweep()


@shared_task(ignore_result=True)
def detect_stalled_sessions() -> int:
    return len(sessions.sessions_detect_stalled())


@shared_task(ignore_result=True)
def dispatch_events() -> int:
    return events.events_dispatch()


@shared_task(ignore_result=True)
def resume_active_sessions() -> int:
    return sessions.sessions_resume_active()


def _purge_seconds() -> float:
    """What one retention task spends deleting: half its soft time limit. The rest goes on in a
    task of its own, so that a large backlog is never cut off by the limit in mid-chunk."""
    return settings.CELERY_TASK_SOFT_TIME_LIMIT / 2


@shared_task(ignore_result=True)
def purge_sessions() -> dict:
    result = retention.sessions_purge_expired(max_seconds=_purge_seconds())
    if result.unfinished:
        purge_sessions.apply_async()
    return {"sessions": result.sessions, "records": result.records, "unfinished": result.unfinished}


@shared_task(ignore_result=True)
def prune_events() -> dict:
    result = events.events_prune_expired(max_seconds=_purge_seconds())
    if result.unfinished:
        prune_events.apply_async()
    return {"events": result.events, "unfinished": result.unfinished}
