"""Celery tasks: thin edges that take ids, call one service, and report.

Every task is safe to run twice: the services re-read the database and act only when the state
says so (a claim, a status guard, ``SKIP LOCKED``).
"""

from celery import shared_task

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


@shared_task(ignore_result=True)
def purge_sessions() -> dict:
    result = retention.sessions_purge_expired()
    return {"sessions": result.sessions, "records": result.records, "unfinished": result.unfinished}
