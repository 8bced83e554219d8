from django.apps import AppConfig
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models.signals import post_migrate


def _install_periodic_jobs(sender: AppConfig, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from config.periodic import periodic_jobs_install

    # `migrate enumeration` on a new database has not made beat's tables yet: the jobs are
    # written by the `migrate` that does.
    tables = set(connections[using].introspection.table_names())
    if {IntervalSchedule._meta.db_table, PeriodicTask._meta.db_table} <= tables:
        periodic_jobs_install()


class EnumerationConfig(AppConfig):
    name = "enumeration"
    verbose_name = "Enumeration"

    def ready(self) -> None:
        # Imported for what they register: the system checks, the worker start-up hook.
        from enumeration import checks, signals  # noqa: F401

        post_migrate.connect(_install_periodic_jobs, sender=self)
