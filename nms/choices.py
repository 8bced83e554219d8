from django.db import models


class Protocol(models.TextChoices):
    WINRM = "winrm", "WinRM"


class DeviceStatus(models.TextChoices):
    DISCOVERED = "discovered"
    ACTIVE = "active"
    INACTIVE = "inactive"


class RunStatus(models.TextChoices):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class TargetOutcome(models.TextChoices):
    PENDING = "PENDING"
    CREATED = "CREATED"  # a new device
    EXISTING = "EXISTING"  # found again: the device with this IP and port already existed
    FAILED = "FAILED"


class FailureReason(models.TextChoices):
    PING = "ping"  # fping found it unreachable
    POLL = "poll"  # the plugin answered success=false for it
    PLUGIN = "plugin"  # the plugin run failed as a whole (timeout, exit != 0, garbage)
