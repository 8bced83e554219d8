"""The Celery application. Configuration lives in Django settings under the CELERY_ namespace."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

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
