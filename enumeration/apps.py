from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _install_periodic_jobs(sender: AppConfig, **kwargs: object) -> None:
    from config.periodic import periodic_jobs_install

    periodic_jobs_install()


class EnumerationConfig(AppConfig):
    name = "enumeration"
    verbose_name = "Enumeration"

    def ready(self) -> None:
        from enumeration import signals  # noqa: F401  (connects the worker start-up hook)

        post_migrate.connect(_install_periodic_jobs, sender=self)
