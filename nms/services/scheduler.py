"""The scheduler tick (seed 003 §2 and §6), run by beat every ``CENSUS_NMS_TICK_SECONDS``.

Seed steps, and where they happen here:

- 2 ``queue.PopExpired(now)``, 3-5 ``OpGetBatch``, 11 ``queue.PushBatch``: `due_devices_claim`,
  ONE statement that selects the active devices whose ``next_deadline <= now`` (``FOR UPDATE
  SKIP LOCKED``, oldest first, at most ``CENSUS_NMS_TICK_BATCH``), moves each deadline forward
  and returns the rows the tick needs.
- 6-8 ToPing / ToSkip, ``performBatchFping``, filter by reachable: `scheduler_tick`, one
  `nms.fping.fping` run for every ``should_ping`` address of the batch.
- 9 ``EventDeviceFailure`` for the unreachable: `nms.services.health.device_failures_record`
  with reason "ping".
- 10, 12 qualified (reachable + ToSkip) to the Poller: `poller.poll_batches_dispatch`, poll
  tasks on the ``poll`` queue carrying ids only.

The due-time structure is the ``next_deadline`` column with its partial index (``status='active'``);
docs/nms.md has the measurement against a Redis sorted set. Claiming by moving the deadline in the
same statement that selects is what keeps two tick runners (two beats by mistake, a beat and an
operator's ``nms_tick``) from dispatching a device twice for one deadline: a row locked by one
claim is skipped by the other, and a row it already moved no longer matches ``<= now`` (PostgreSQL
re-checks the locking subquery's WHERE against the new row version).

New deadlines keep each device's phase: ``old + k * interval``, the first such time more than half
an interval after now, so a late tick does not shift the device's grid, and a device claimed very
late (after an outage) skips the grid point that would come right after this claim instead of
being polled twice in a row (the poll's own guard wants half an interval between two polls too).

A device never polled yet (``last_poll_at`` NULL, e.g. thousands provisioned together, all due at
once) gets ``now + interval * (1 + f)`` with ``f`` in [0, 1) spread by its id (golden-ratio
sequence): the herd is polled once together, then spreads over one interval and stays spread.

If fping itself fails (missing binary, raw sockets refused) the tick logs the error and hands every
device to the poller without an availability check: a broken fping must neither stop monitoring nor
be read as every device down; a dead device then fails its poll instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction

from nms.choices import DeviceStatus, FailureReason
from nms.fping import FpingError, FpingOptions, fping
from nms.services import health, poller
from nms.services.poller import DueDevice, database_now, require_postgresql

logger = logging.getLogger(__name__)

# 1/φ: successive multiples of it modulo 1 are spread evenly over [0, 1) for any id range.
_GOLDEN = 0.6180339887498949

_CLAIM_SQL = f"""
WITH due AS (
    SELECT id, next_deadline FROM nms_device
    WHERE status = %(active)s AND next_deadline <= %(now)s AND next_deadline >= %(since)s
    ORDER BY next_deadline
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE nms_device AS d SET next_deadline = CASE
    WHEN d.last_poll_at IS NULL THEN
        %(now)s + make_interval(secs => GREATEST(d.polling_interval_seconds, 1)
            * (1 + mod(d.id * {_GOLDEN}::numeric, 1))::double precision)
    ELSE
        d.next_deadline + make_interval(secs => GREATEST(d.polling_interval_seconds, 1)
            * (floor(extract(epoch FROM (%(now)s - d.next_deadline))
                     / GREATEST(d.polling_interval_seconds, 1) + 0.5) + 1))
    END
FROM due
WHERE d.id = due.id AND d.status = %(active)s AND d.next_deadline <= %(now)s
RETURNING d.id, host(d.ip), d.port, d.should_ping, d.protocol, d.credential_id,
    d.polling_interval_seconds, due.next_deadline
"""


def nms_setting(name: str) -> object:
    return settings.CENSUS_NMS[name]


def due_devices_claim(
    *, now: datetime | None = None, limit: int | None = None, since: datetime | None = None
) -> list[DueDevice]:
    """Claim up to `limit` due devices and move their deadlines forward, in one statement.

    `since` (the latest deadline of the previous batch of the same tick) starts the index scan
    there, past the entries of the rows that batch just moved."""
    require_postgresql("the scheduler tick")
    now = now or database_now()
    limit = max(1, limit or int(nms_setting("TICK_BATCH")))
    params = {
        "active": DeviceStatus.ACTIVE,
        "now": now,
        "limit": limit,
        "since": since or datetime.min.replace(tzinfo=UTC),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, params)
        rows = cursor.fetchall()
    return [
        DueDevice(
            id=row[0],
            ip=row[1],
            port=row[2],
            should_ping=row[3],
            protocol=row[4],
            credential_id=row[5],
            interval_seconds=row[6],
            deadline=row[7],
        )
        for row in rows
    ]


@dataclass
class TickResult:
    claimed: int = 0
    pinged: int = 0
    unreachable: list[int] = field(default_factory=list)
    qualified: int = 0
    poll_tasks: int = 0
    batches: int = 0
    deactivated: list[int] = field(default_factory=list)
    fping_errors: list[str] = field(default_factory=list)
    duration: float = 0.0

    def summary(self) -> str:
        text = (
            f"claimed {self.claimed} in {self.batches} batch(es), pinged {self.pinged}, "
            f"unreachable {len(self.unreachable)}, dispatched {self.qualified} in "
            f"{self.poll_tasks} poll task(s), deactivated {len(self.deactivated)}, "
            f"{self.duration:.2f}s"
        )
        if self.fping_errors:
            text += f"; fping failed: {self.fping_errors[-1]}"
        return text


def _availability_check(
    devices: Sequence[DueDevice], result: TickResult, fping_options: FpingOptions | None
) -> tuple[list[DueDevice], list[DueDevice]]:
    """Split ToPing by fping's verdict: (qualified, unreachable)."""
    if not devices:
        return [], []
    result.pinged += len(devices)
    try:
        verdict = fping([device.ip for device in devices], fping_options)
    except FpingError as error:
        result.fping_errors.append(str(error))
        logger.error(
            "fping failed; %d device(s) go to the poller unchecked: %s", len(devices), error
        )
        return list(devices), []
    qualified = [device for device in devices if device.ip in verdict.reachable]
    unreachable = [device for device in devices if device.ip not in verdict.reachable]
    return qualified, unreachable


def scheduler_tick(
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    budget_seconds: float | None = None,
    fping_options: FpingOptions | None = None,
    dispatch: Callable[..., int] | None = None,
) -> TickResult:
    """One tick: claim due devices batch by batch until none is due or the budget (one tick
    interval) is spent; ping, report the unreachable, dispatch the rest to the poller."""
    started = time.monotonic()
    budget = budget_seconds if budget_seconds is not None else float(nms_setting("TICK_SECONDS"))
    batch_size = max(1, batch_size or int(nms_setting("TICK_BATCH")))
    dispatch = dispatch or poller.poll_batches_dispatch
    result = TickResult()
    since: datetime | None = None
    while True:
        claim_time = now or database_now()
        devices = due_devices_claim(now=claim_time, limit=batch_size, since=since)
        if not devices:
            break
        since = max(device.deadline for device in devices if device.deadline is not None)
        result.batches += 1
        result.claimed += len(devices)
        to_ping = [device for device in devices if device.should_ping]
        to_skip = [device for device in devices if not device.should_ping]
        reachable, unreachable = _availability_check(to_ping, result, fping_options)
        if unreachable:
            outcome = health.device_failures_record(
                failures={
                    device.id: f"no reply to ping from {device.ip} (fping)"
                    for device in unreachable
                },
                reason=FailureReason.PING,
                occurred_at=claim_time,
            )
            result.unreachable.extend(device.id for device in unreachable)
            result.deactivated.extend(outcome.deactivated)
        qualified = reachable + to_skip
        result.qualified += len(qualified)
        result.poll_tasks += dispatch(devices=qualified, dispatched_at=claim_time)
        if len(devices) < batch_size or time.monotonic() - started >= budget:
            break
    result.duration = time.monotonic() - started
    if result.claimed:
        logger.info("scheduler tick: %s", result.summary())
    return result
