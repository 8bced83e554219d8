"""The health monitor (seed 003 §3): failures per device in a time window, deactivation at the
threshold.

A failure (``EventDeviceFailure``: device, time, reason) comes from the scheduler (fping found the
device unreachable: "ping") or the poller (the plugin run failed as a whole: "plugin"; the plugin
answered ``success: false``: "poll"). The seed's FailureRecord lives on the device row
(``failure_count``, ``last_failure_at``) so that any worker, any number of them, counts the same
record. One UPDATE per batch counts atomically: a failure within
``CENSUS_NMS_FAILURE_WINDOW_SECONDS`` of the device's previous one adds one, a later one starts
again at 1. At ``CENSUS_NMS_FAILURE_THRESHOLD`` the device is deactivated (``status='inactive'``,
``schedule_anchor`` NULL: it leaves the schedule), its count is reset, and the change is recorded,
in the same transaction as the count, so two workers cannot both deactivate it or count past it.
Each failure is recorded as a ``DeviceEvent(kind="failure")``.

Only active devices are counted: a device deactivated meanwhile (or never provisioned) is not
being monitored, and a late failure report about it is logged and dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from nms.choices import DeviceStatus, FailureReason
from nms.models import Device, DeviceEvent
from nms.services.devices import device_deactivate

logger = logging.getLogger(__name__)

FAILURE_EVENT = "failure"
MAX_DETAIL = 2000
# A batch of thousands of unreachable devices logs this many lines, then one summary.
LOGGED_ONE_BY_ONE = 20


@dataclass
class FailureOutcome:
    recorded: list[int] = field(default_factory=list)  # devices whose failure was counted
    deactivated: list[int] = field(default_factory=list)  # devices that reached the threshold
    ignored: list[int] = field(default_factory=list)  # not active: not counted


def failure_window() -> timedelta:
    return timedelta(seconds=settings.CENSUS_NMS["FAILURE_WINDOW_SECONDS"])


def failure_threshold() -> int:
    return max(1, settings.CENSUS_NMS["FAILURE_THRESHOLD"])


_COUNT_SQL = """
WITH target AS (
    SELECT id FROM nms_device
    WHERE id = ANY(%(ids)s) AND status = %(active)s
    ORDER BY id
    FOR UPDATE
)
UPDATE nms_device AS d SET
    failure_count = CASE
        WHEN d.last_failure_at IS NOT NULL AND %(at)s - d.last_failure_at <= %(window)s
        THEN d.failure_count + 1
        ELSE 1
    END,
    last_failure_at = GREATEST(%(at)s, d.last_failure_at)
FROM target
WHERE d.id = target.id AND d.status = %(active)s
RETURNING d.id, d.failure_count
"""


def device_failures_record(
    *,
    failures: Mapping[int, str],
    reason: str,
    occurred_at: datetime | None = None,
) -> FailureOutcome:
    """Record one failure for each device of `failures` (device id → detail) with `reason`.

    Counts it within the window, records a failure event, and deactivates the devices that reach
    the threshold. One transaction for the batch; the rows are locked in id order, so two batches
    that share devices wait for each other instead of deadlocking.
    """
    if reason not in FailureReason.values:
        raise ValueError(f"unknown failure reason {reason!r}")
    if not failures:
        return FailureOutcome()
    at = occurred_at or timezone.now()
    threshold = failure_threshold()
    outcome = FailureOutcome()
    ids = sorted({int(device_id) for device_id in failures})
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                _COUNT_SQL,
                {"ids": ids, "active": DeviceStatus.ACTIVE, "at": at, "window": failure_window()},
            )
            counts = dict(cursor.fetchall())
        outcome.recorded = sorted(counts)
        outcome.ignored = [device_id for device_id in ids if device_id not in counts]
        DeviceEvent.objects.bulk_create(
            DeviceEvent(
                device_id=device_id,
                occurred_at=at,
                kind=FAILURE_EVENT,
                reason=reason,
                detail=(failures.get(device_id) or "")[:MAX_DETAIL],
            )
            for device_id in outcome.recorded
        )
        for device_id in outcome.recorded:
            if counts[device_id] >= threshold:
                why = (
                    f"{counts[device_id]} failures within "
                    f"{int(failure_window().total_seconds())}s (last: {reason})"
                )
                device_deactivate(device_id=device_id, reason=why)
                Device.objects.filter(pk=device_id).update(failure_count=0)
                outcome.deactivated.append(device_id)
    for device_id in outcome.recorded[:LOGGED_ONE_BY_ONE]:
        logger.warning(
            "device %s failed (%s): %s", device_id, reason, (failures.get(device_id) or "")[:300]
        )
    if len(outcome.recorded) > LOGGED_ONE_BY_ONE:
        logger.warning(
            "%d more device(s) failed (%s); their events hold the details",
            len(outcome.recorded) - LOGGED_ONE_BY_ONE,
            reason,
        )
    for device_id in outcome.deactivated:
        logger.error(
            "device %s deactivated: %d failures within %ss",
            device_id,
            threshold,
            int(failure_window().total_seconds()),
        )
    if outcome.ignored:
        logger.info(
            "failure (%s) of %d device(s) not counted: not active (%s)",
            reason,
            len(outcome.ignored),
            ", ".join(map(str, outcome.ignored[:20])),
        )
    return outcome


def device_failure_record(
    *, device_id: int, reason: str, detail: str = "", occurred_at: datetime | None = None
) -> FailureOutcome:
    """One ``EventDeviceFailure``."""
    return device_failures_record(
        failures={device_id: detail}, reason=reason, occurred_at=occurred_at
    )
