"""The Celery application. Configuration lives in Django settings under the CELERY_ namespace."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

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
