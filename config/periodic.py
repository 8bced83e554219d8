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


# The names of the jobs declared here start with one of these: rows with such a name that the
# code no longer declares are disabled, not left sending a task that may not exist any more.
JOB_NAME_PREFIXES = ("census: ", "nms: ")


def periodic_jobs_install() -> int:
    """Create or update each job's schedule row. Idempotent. Returns how many jobs there are.

    A job an operator disabled in the admin stays disabled: ``enabled`` is set only when its row
    is made. A message beat could not deliver before the job's next run expires instead of
    piling up behind busy workers, to run in a burst once they are free."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    jobs = periodic_jobs()
    for job in jobs:
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=job.every_seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.update_or_create(
            name=job.name,
            defaults={
                "task": job.task,
                "interval": interval,
                "queue": job.queue,
                "expire_seconds": job.every_seconds,
            },
            create_defaults={
                "task": job.task,
                "interval": interval,
                "queue": job.queue,
                "expire_seconds": job.every_seconds,
                "enabled": True,
            },
        )
    gone = PeriodicTask.objects.exclude(name__in=[job.name for job in jobs]).filter(enabled=True)
    for prefix in JOB_NAME_PREFIXES:
        gone.filter(name__startswith=prefix).update(enabled=False)
    return len(jobs)
