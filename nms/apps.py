from django.apps import AppConfig


class NmsConfig(AppConfig):
    name = "nms"
    verbose_name = "Network monitoring"

    def ready(self) -> None:
        from nms import tasks_monitoring  # noqa: F401  (Celery autodiscovers only `tasks`)
