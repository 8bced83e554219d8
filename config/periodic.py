"""Periodic jobs are declared in code, in each app's ``schedule.py`` (a ``PERIODIC_JOBS`` tuple),
and written into django-celery-beat's tables after every ``migrate`` (and by
``manage.py setup_periodic_tasks``), so a fresh deploy has them."""

from dataclasses import dataclass
from importlib import import_module

from django.apps import apps


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    task: str
    every_seconds: int
    queue: str = "default"


def periodic_jobs() -> list[PeriodicJob]:
    jobs: list[PeriodicJob] = []
    for app_config in apps.get_app_configs():
        try:
            module = import_module(f"{app_config.name}.schedule")
        except ModuleNotFoundError as exc:
            if exc.name != f"{app_config.name}.schedule":
                raise
            continue
        jobs.extend(getattr(module, "PERIODIC_JOBS", ()))
    return jobs


def periodic_jobs_install() -> int:
    """Create or update each job's schedule row. Idempotent. Returns how many jobs there are."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    jobs = periodic_jobs()
    for job in jobs:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=job.every_seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.update_or_create(
            name=job.name,
            defaults={"task": job.task, "interval": interval, "queue": job.queue, "enabled": True},
        )
    return len(jobs)
