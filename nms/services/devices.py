"""Devices: created by hand or by discovery, provisioned (scheduled for polling) and deactivated.

A device is unique by IP and port, and both are fixed once it exists. Its status moves only
through the functions here, each under the device's row lock, and each change of status is
recorded as a ``DeviceEvent(kind="status")``. The scheduler reads ``status`` and ``schedule_anchor``
from the database, so committing the row is all it takes to (un)schedule a device.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from nms.choices import DeviceStatus, Protocol
from nms.models import Device, DeviceEvent
from nms.services.validation import FieldErrors, credential_for_protocol
from nms.targets import TargetError, parse_ip_address

logger = logging.getLogger(__name__)

STATUS_EVENT = "status"
MAX_PORT = 65535

# from → the statuses it may move to. "discovered" is only ever a starting point.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    DeviceStatus.DISCOVERED: frozenset({DeviceStatus.ACTIVE, DeviceStatus.INACTIVE}),
    DeviceStatus.ACTIVE: frozenset({DeviceStatus.ACTIVE, DeviceStatus.INACTIVE}),
    DeviceStatus.INACTIVE: frozenset({DeviceStatus.ACTIVE, DeviceStatus.INACTIVE}),
}

# Fields an update may change; ip and port may be sent too, but only with their current values.
UPDATABLE_FIELDS = (
    "hostname",
    "os",
    "protocol",
    "credential_id",
    "polling_interval_seconds",
    "should_ping",
)
IMMUTABLE_FIELDS = ("ip", "port")


class DeviceInvalid(FieldErrors):
    """Input Census refuses; ``errors`` maps each offending field to what is wrong with it."""


class DeviceConflict(ValueError):
    """The device's status does not allow what was asked."""


def first_deadline(*, ip: str, interval_seconds: int, now: datetime | None = None) -> datetime:
    """When a newly provisioned device is first due: spread over one interval by its address, so
    that thousands of devices provisioned together do not all fall due in the same tick. Stable
    across processes (crc32, not the salted ``hash()``)."""
    now = now or timezone.now()
    return now + timedelta(seconds=zlib.crc32(ip.encode()) % max(1, interval_seconds))


# --- checks ----------------------------------------------------------------------------------


def _check_ip(ip: object) -> str:
    if not isinstance(ip, str) or not ip.strip():
        raise DeviceInvalid({"ip": "an IP address is required."})
    try:
        return parse_ip_address(ip)
    except TargetError as exc:
        raise DeviceInvalid({"ip": str(exc)}) from None


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= MAX_PORT:
        raise DeviceInvalid({"port": f"must be a whole number from 1 to {MAX_PORT}."})
    return port


def _check_interval(interval: object, field: str = "polling_interval_seconds") -> int:
    if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
        raise DeviceInvalid({field: "must be a whole number of seconds greater than 0."})
    return interval


def _check_protocol(protocol: object) -> str:
    if protocol not in Protocol.values:
        raise DeviceInvalid({"protocol": f"must be one of {', '.join(Protocol.values)}."})
    return str(protocol)


# --- status ----------------------------------------------------------------------------------


def _record_status(device: Device, from_status: str, detail: str) -> None:
    DeviceEvent.objects.create(
        device=device,
        kind=STATUS_EVENT,
        from_status=from_status,
        to_status=device.status,
        detail=detail,
    )


def _move(device: Device, to_status: str) -> str:
    """Set the new status if the table allows it; returns the old one."""
    from_status = device.status
    if to_status not in ALLOWED_TRANSITIONS.get(from_status, frozenset()):
        raise DeviceConflict(f"a device that is {from_status} cannot become {to_status}.")
    device.status = to_status
    return from_status


def device_provision(*, device_id: int, interval_seconds: int, spread: bool = False) -> Device:
    """Schedule a device for polling every `interval_seconds`, first right now (seed §5); with
    `spread` (many devices provisioned together), first at `first_deadline`."""
    interval = _check_interval(interval_seconds, "interval")
    with transaction.atomic():
        device = Device.objects.select_for_update().get(pk=device_id)
        from_status = _move(device, DeviceStatus.ACTIVE)
        device.polling_interval_seconds = interval
        device.schedule_anchor = (
            first_deadline(ip=str(device.ip), interval_seconds=interval)
            if spread
            else timezone.now()
        )
        device.failure_count = 0
        device.save(
            update_fields=[
                "status",
                "polling_interval_seconds",
                "schedule_anchor",
                "failure_count",
                "updated_at",
            ]
        )
        if from_status != device.status:
            _record_status(device, from_status, f"provisioned, polled every {interval}s")
    logger.info("device %s provisioned every %ss", device.pk, interval)
    return device


def device_deactivate(*, device_id: int, reason: str) -> Device:
    """Stop polling a device. Idempotent: an inactive device is returned unchanged."""
    with transaction.atomic():
        device = Device.objects.select_for_update().get(pk=device_id)
        if device.status == DeviceStatus.INACTIVE and device.schedule_anchor is None:
            return device
        from_status = _move(device, DeviceStatus.INACTIVE)
        device.schedule_anchor = None
        device.save(update_fields=["status", "schedule_anchor", "updated_at"])
        if from_status != device.status:
            _record_status(device, from_status, reason)
    logger.info("device %s deactivated: %s", device.pk, reason)
    return device


# --- create, update, delete -----------------------------------------------------------------


def device_create(
    *,
    ip: str,
    port: int,
    credential_id: int,
    protocol: str = Protocol.WINRM,
    hostname: str = "",
    os: str = "",
    polling_interval_seconds: int = 60,
    should_ping: bool = True,
) -> Device:
    """A device entered by hand: ``discovered`` until it is provisioned."""
    clean_ip = _check_ip(ip)
    clean_port = _check_port(port)
    protocol = _check_protocol(protocol)
    interval = _check_interval(polling_interval_seconds)
    credential = credential_for_protocol(credential_id, protocol, invalid=DeviceInvalid)
    try:
        with transaction.atomic():
            device = Device.objects.create(
                ip=clean_ip,
                port=clean_port,
                protocol=protocol,
                credential=credential,
                hostname=hostname,
                os=os,
                polling_interval_seconds=interval,
                should_ping=should_ping,
                status=DeviceStatus.DISCOVERED,
            )
            _record_status(device, "", "created by hand")
    except IntegrityError:
        existing = Device.objects.filter(ip=clean_ip, port=clean_port).first()
        raise DeviceInvalid(
            {
                "ip": f"a device with address {clean_ip} and port {clean_port} already exists"
                + (f" (id {existing.pk})." if existing else ".")
            }
        ) from None
    logger.info("device %s created at %s:%s", device.pk, clean_ip, clean_port)
    return device


def device_update(*, device_id: int, changes: Mapping[str, Any]) -> Device:
    """Change what may change. IP and port are fixed: changing them is refused, with a message."""
    with transaction.atomic():
        device = Device.objects.select_for_update().get(pk=device_id)
        errors: dict[str, str] = {}
        if "ip" in changes and _check_ip(changes["ip"]) != parse_ip_address(str(device.ip)):
            errors["ip"] = (
                "the IP address of a device cannot change once it is created; "
                "create another device instead."
            )
        if "port" in changes and changes["port"] != device.port:
            errors["port"] = (
                "the port of a device cannot change once it is created; "
                "create another device instead."
            )
        unknown = set(changes) - set(UPDATABLE_FIELDS) - set(IMMUTABLE_FIELDS)
        for name in sorted(unknown):
            errors[name] = "cannot be changed here."
        if errors:
            raise DeviceInvalid(errors)
        values = {name: changes[name] for name in UPDATABLE_FIELDS if name in changes}
        if "protocol" in values:
            values["protocol"] = _check_protocol(values["protocol"])
        if "polling_interval_seconds" in values:
            _check_interval(values["polling_interval_seconds"])
        if "protocol" in values or "credential_id" in values:
            credential_for_protocol(
                values.get("credential_id", device.credential_id),
                values.get("protocol", device.protocol),
                invalid=DeviceInvalid,
            )
        for name, value in values.items():
            setattr(device, name, value)
        device.save()
    return device


def device_delete(*, device_id: int) -> None:
    Device.objects.filter(pk=device_id).delete()
    logger.info("device %s deleted", device_id)


# --- from discovery --------------------------------------------------------------------------


def device_get_or_create_discovered(
    *,
    ip: str,
    port: int,
    protocol: str,
    credential_id: int,
    discovery_profile_id: int,
    hostname: str,
    os: str,
    auto_provision: bool,
    interval_seconds: int,
    run_id: int,
) -> tuple[Device, bool]:
    """The device at ip:port, created if there is none (seed §1: check IP+port, then insert).

    Must run inside a transaction. The unique constraint on (ip, port) decides between concurrent
    runs: the loser's INSERT waits for the winner's commit, fails, and reads the winner's row.
    """
    now = timezone.now()
    status = DeviceStatus.ACTIVE if auto_provision else DeviceStatus.DISCOVERED
    device, created = Device.objects.get_or_create(
        ip=ip,
        port=port,
        defaults={
            "protocol": protocol,
            "credential_id": credential_id,
            "discovery_profile_id": discovery_profile_id,
            "hostname": hostname[:255],
            "os": os[:255],
            "status": status,
            "polling_interval_seconds": interval_seconds,
            "schedule_anchor": (
                first_deadline(ip=ip, interval_seconds=interval_seconds, now=now)
                if auto_provision
                else None
            ),
        },
    )
    if created:
        detail = f"found by discovery run {run_id}"
        if auto_provision:
            detail += f", provisioned, polled every {interval_seconds}s"
        _record_status(device, "", detail)
    return device, created
