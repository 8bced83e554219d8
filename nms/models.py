"""Network monitoring (seed 003): credentials, discovery profiles and runs, devices, health,
metrics."""

import math
from datetime import datetime, timedelta

from django.db import models
from django.utils import timezone

from nms.choices import DeviceStatus, FailureReason, Protocol, RunStatus, TargetOutcome


class CredentialProfile(models.Model):
    """How to log in to devices. ``payload_encrypted`` is a Fernet token of a JSON object
    (username, password, transport, ...): encrypted at rest, never returned in clear by the API."""

    name = models.CharField(max_length=100, unique=True)
    protocol = models.CharField(max_length=16, choices=Protocol.choices, default=Protocol.WINRM)
    payload_encrypted = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DiscoveryProfile(models.Model):
    """Where to look for devices: ``targets`` is a CIDR, a range (10.0.0.1-10.0.0.50) or a list
    (comma or whitespace separated) of IP addresses."""

    name = models.CharField(max_length=100, unique=True)
    targets = models.TextField()
    port = models.PositiveIntegerField(default=5985)
    protocol = models.CharField(max_length=16, choices=Protocol.choices, default=Protocol.WINRM)
    credential = models.ForeignKey(
        CredentialProfile, on_delete=models.PROTECT, related_name="discovery_profiles"
    )
    auto_provision = models.BooleanField(default=False)
    polling_interval_seconds = models.PositiveIntegerField(default=60)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DiscoveryRun(models.Model):
    """One run of a discovery profile, with the outcome of each target address."""

    profile = models.ForeignKey(DiscoveryProfile, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    targets_total = models.PositiveIntegerField(default=0)
    targets_succeeded = models.PositiveIntegerField(default=0)
    targets_failed = models.PositiveIntegerField(default=0)
    devices_created = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # When a batch of its targets last committed: a RUNNING run that has not moved for longer
    # than a batch can take has lost its worker (and maybe its message).
    last_progress_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.profile_id} ({self.status})"


class DiscoveryRunTarget(models.Model):
    run = models.ForeignKey(DiscoveryRun, on_delete=models.CASCADE, related_name="targets")
    ip = models.GenericIPAddressField()
    outcome = models.CharField(
        max_length=16, choices=TargetOutcome.choices, default=TargetOutcome.PENDING
    )
    error = models.TextField(blank=True)
    device = models.ForeignKey(
        "Device", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "ip"], name="run_target_once")]
        ordering = ["run", "id"]

    def __str__(self) -> str:
        return f"{self.ip}: {self.outcome}"


class Device(models.Model):
    """A monitored machine, unique by IP and port (both immutable once created)."""

    ip = models.GenericIPAddressField()
    port = models.PositiveIntegerField()
    protocol = models.CharField(max_length=16, choices=Protocol.choices, default=Protocol.WINRM)
    hostname = models.CharField(max_length=255, blank=True)
    os = models.CharField(max_length=255, blank=True)
    status = models.CharField(
        max_length=16, choices=DeviceStatus.choices, default=DeviceStatus.DISCOVERED
    )
    credential = models.ForeignKey(
        CredentialProfile, on_delete=models.PROTECT, related_name="devices"
    )
    discovery_profile = models.ForeignKey(
        DiscoveryProfile, null=True, blank=True, on_delete=models.SET_NULL, related_name="devices"
    )
    polling_interval_seconds = models.PositiveIntegerField(default=60)
    # Checked with fping before a poll (the seed's ToPing); False is ToSkip.
    should_ping = models.BooleanField(default=True)
    # The device's polling grid: it is due at ``schedule_anchor + k * polling_interval_seconds``
    # (k = 0, 1, ...). Set when it is provisioned, NULL when it is not scheduled (not active). The
    # tick never writes it (nms.services.scheduler): `next_deadline` is computed from it.
    schedule_anchor = models.DateTimeField(null=True, blank=True)
    last_poll_at = models.DateTimeField(null=True, blank=True)
    last_poll_success = models.BooleanField(null=True, blank=True)
    last_poll_error = models.TextField(blank=True)
    # The health monitor's FailureRecord: failures inside the window, and the last one's time.
    failure_count = models.PositiveIntegerField(default=0)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["ip", "port"], name="device_ip_port_once")]
        indexes = [
            models.Index(
                fields=["schedule_anchor"],
                condition=models.Q(status="active"),
                name="device_scheduled",
            )
        ]
        ordering = ["ip", "port"]

    def __str__(self) -> str:
        return f"{self.hostname or self.ip}:{self.port}"

    @property
    def next_deadline(self) -> datetime | None:
        """The first point of the device's grid after now; None when it is not scheduled."""
        if self.status != DeviceStatus.ACTIVE or self.schedule_anchor is None:
            return None
        return grid_point_after(self.schedule_anchor, self.polling_interval_seconds, timezone.now())


def grid_point_after(anchor: datetime, interval_seconds: int, moment: datetime) -> datetime:
    """The first of ``anchor + k * interval`` (k >= 0) that is later than `moment`."""
    if anchor > moment:
        return anchor
    step = max(1, interval_seconds)
    passed = (moment - anchor).total_seconds()
    return anchor + timedelta(seconds=step * (math.floor(passed / step) + 1))


class ScheduleCursor(models.Model):
    """How far the scheduler's ticks have claimed time: the due-time structure (seed 003 §6).

    One row. A tick moves ``covered_until`` from its old value to now under the row's lock and
    polls the active devices with a grid point inside that window; two tick runners therefore
    claim disjoint windows and cannot both dispatch a device for the same grid point."""

    name = models.CharField(primary_key=True, max_length=32)
    covered_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "nms_schedule_cursor"

    def __str__(self) -> str:
        return f"{self.name} covered until {self.covered_until}"


class DeviceEvent(models.Model):
    """A failure event or a status change of a device: the health history operators read."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="events")
    occurred_at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=16)  # "failure" or "status"
    reason = models.CharField(max_length=16, choices=FailureReason.choices, blank=True)
    detail = models.TextField(blank=True)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)

    class Meta:
        indexes = [models.Index(fields=["device", "-occurred_at"])]
        ordering = ["-occurred_at"]

    def __str__(self) -> str:
        return f"{self.device_id} {self.kind} {self.reason or self.to_status}"


class MetricSample(models.Model):
    """One poll result of one device, as JSONB. Written in bulk with COPY."""

    id = models.BigAutoField(primary_key=True)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+", db_index=False)
    collected_at = models.DateTimeField()
    data = models.JSONField()

    class Meta:
        db_table = "nms_metric_samples"
        indexes = [models.Index(fields=["device", "-collected_at"], name="metric_device_time")]

    def __str__(self) -> str:
        return f"{self.device_id} @ {self.collected_at.isoformat()}"
