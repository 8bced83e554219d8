"""The Celery application. Configuration lives in Django settings under the CELERY_ namespace."""

import os

from celery import Celery
from celery.signals import beat_init, task_postrun, task_prerun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django's system checks run with `migrate` (the release step) and every management command. A
# worker running them again at each start (importing the URLconf, DRF and the admin to do so)
# takes a fifth longer to be back after a crash: 0.75 s instead of 0.60 s (docs/benchmarks.md).
# CELERY_SKIP_CHECKS set empty runs them.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")

app = Celery("census")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def close_old_database_connections(task: object = None, **kwargs: object) -> None:
    """Around each task what Django does around each request: drop a connection that is older
    than CONN_MAX_AGE, or broken, or left outside autocommit; keep the rest for the next task.
    A kept connection is pinged before its first use (CONN_HEALTH_CHECKS), so one that the
    database closed meanwhile (a restart, an idle timeout) is replaced, not failed on."""
    if getattr(getattr(task, "request", None), "is_eager", False):
        return  # run in the caller's process, maybe inside its transaction: not ours to close
    from django.db import close_old_connections

    close_old_connections()


@worker_init.connect
@beat_init.connect
def refuse_the_in_memory_broker(sender: object = None, **kwargs: object) -> None:
    """A worker or beat without a broker would wait for ever on, or send into, an in-memory
    transport no other process shares: refuse to start, saying what is missing. (Without a
    broker, sessions run in the process that starts them: ``--wait``, or the web process.)"""
    from django.conf import settings

    if settings.CENSUS_IN_PROCESS_WORKER:
        # SystemExit, not an exception: Celery logs a receiver's exception and starts anyway.
        raise SystemExit(
            "CELERY_BROKER_URL is not set: a worker or beat needs a broker the other processes "
            "share (redis://... or amqp://...). Without one, `manage.py enumerate PATH --wait` "
            "or the web process runs the sessions itself."
        )
