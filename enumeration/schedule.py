"""Periodic jobs, declared in code. ``manage.py setup_periodic_tasks`` (run by ``migrate``'s
post-migrate hook) writes them into django-celery-beat's tables, so a fresh deploy has them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    task: str
    every_seconds: int
    queue: str = "default"


PERIODIC_JOBS = (
    PeriodicJob("census: reaper", "enumeration.tasks.reap_tasks", 15),
    PeriodicJob("census: pipeliner safety net", "enumeration.tasks.pipeline_sweep", 30),
    PeriodicJob("census: stalled sessions", "enumeration.tasks.detect_stalled_sessions", 60),
    PeriodicJob("census: outbox dispatch", "enumeration.tasks.dispatch_events", 30),
)


def periodic_jobs_install() -> int:
    """Create or update each job's schedule row. Idempotent. Returns how many jobs there are."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    for job in PERIODIC_JOBS:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=job.every_seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.update_or_create(
            name=job.name,
            defaults={"task": job.task, "interval": interval, "queue": job.queue, "enabled": True},
        )
    return len(PERIODIC_JOBS)
