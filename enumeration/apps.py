from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _install_periodic_jobs(sender: AppConfig, **kwargs: object) -> None:
    from config.periodic import periodic_jobs_install

    periodic_jobs_install()


class EnumerationConfig(AppConfig):
    name = "enumeration"
    verbose_name = "Enumeration"

    def ready(self) -> None:
        # Imported for what they register: the system checks, the worker start-up hook.
        from enumeration import checks, signals  # noqa: F401

        post_migrate.connect(_install_periodic_jobs, sender=self)
