"""The Celery application. Configuration lives in Django settings under the CELERY_ namespace."""

import gc
import logging
import os

from celery import Celery
from celery.signals import (
    beat_init,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Django's system checks run with `migrate` (the release step) and every management command. A
# worker running them again at each start (importing the URLconf, DRF and the admin to do so)
# takes a fifth longer to be back after a crash: 0.75 s instead of 0.60 s (docs/benchmarks.md).
# CELERY_SKIP_CHECKS set empty runs them.
os.environ.setdefault("CELERY_SKIP_CHECKS", "1")

logger = logging.getLogger(__name__)

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
def collect_garbage_less_often(sender: object = None, **kwargs: object) -> None:
    """In the worker's main process, before its pool forks (the pool's processes inherit it):
    the first generation collected after CENSUS_WORKER_GC_THRESHOLD new objects."""
    from django.conf import settings

    if settings.CENSUS_WORKER_GC_THRESHOLD:
        gc.set_threshold(settings.CENSUS_WORKER_GC_THRESHOLD, *gc.get_threshold()[1:])
        logger.info(
            "garbage collector: the first generation is collected after %d new objects",
            settings.CENSUS_WORKER_GC_THRESHOLD,
        )


@worker_process_init.connect
@worker_ready.connect
def freeze_what_is_loaded(sender: object = None, **kwargs: object) -> None:
    """In each pool process once forked, and in the main process once ready (where a solo or
    threads pool runs the tasks): what is loaded by then (Django, Celery, the apps) stays for
    the process's life, and no later collection walks it again."""
    from django.conf import settings

    if settings.CENSUS_WORKER_GC_THRESHOLD:
        gc.freeze()
        logger.info(
            "garbage collector: %d objects loaded by process %d frozen out of collections",
            gc.get_freeze_count(),
            os.getpid(),
        )


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
