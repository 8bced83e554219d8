from django.apps import AppConfig


class NmsConfig(AppConfig):
    name = "nms"
    verbose_name = "Network monitoring"
