"""The scheduler tick (seed 003 §2 and §6), run by beat every ``CENSUS_NMS_TICK_SECONDS``.

The due-time structure is a polling grid per device and one cursor for all of them:

- an active device is due at ``schedule_anchor + k * polling_interval_seconds`` (k = 0, 1, ...).
  Provisioning sets the anchor (now, or spread over one interval when many are provisioned
  together: `nms.services.devices.first_deadline`); nothing else moves it, so a device keeps its
  phase whatever the ticks do;
- ``ScheduleCursor.covered_until`` is how far ticks have claimed time. A tick moves it to now
  under the row's lock and takes the window ``(old, now]``: the devices with a grid point in it
  are the due ones. Windows of two tick runners never overlap (the second waits for the first's
  lock and starts where it stopped), so no grid point is claimed twice: no device is dispatched
  twice for one deadline. A window longer than an interval (beat was down) still makes a device
  due once, not once per missed point.

Claiming is one row update and one read whatever the number of devices due, which is what keeps
100,000 due devices under a second (docs/nms.md §3 has the measurements against a per-device
deadline column and a Redis sorted set). Seed steps, and where they happen here:

- 2 ``queue.PopExpired(now)``, 3-5 ``OpGetBatch``, 11 ``queue.PushBatch``: `due_devices_claim`,
  the window claim and one SELECT of what the tick needs of each due device. "PushBatch" has
  nothing to write: the next deadline follows from the grid.
- 6-8 ToPing / ToSkip, ``performBatchFping``, filter by reachable: `scheduler_tick`, one
  `nms.fping.fping` run for every ``should_ping`` address of the window.
- 9 ``EventDeviceFailure`` for the unreachable: `nms.services.health.device_failures_record`
  with reason "ping".
- 10, 12 qualified (reachable + ToSkip) to the Poller: `poller.poll_batches_dispatch`.

The claim commits before anything is dispatched. A tick that dies between the two loses that
window's polls (each device is due again one interval later); the poll's own claim
(`poller.devices_poll`) is what stops a device being polled twice, whoever sends it.

If fping itself fails (missing binary, raw sockets refused) the tick logs the error and hands every
device to the poller without an availability check: a broken fping must neither stop monitoring nor
be read as every device down; a dead device then fails its poll instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from nms.choices import DeviceStatus, FailureReason
from nms.fping import FpingError, FpingOptions, fping
from nms.services import health, poller
from nms.services.poller import DueGroup, require_postgresql

logger = logging.getLogger(__name__)

CURSOR = "tick"

# The devices with a grid point in (since, until], grouped as the tick uses them (DueGroup). The
# anchor is due itself when it falls in the window; else the device's last point before `until`,
# until - (until - anchor) mod interval, is in it when (until - anchor) mod interval < until -
# since. In whole microseconds since the epoch (bigint: exact): date_part of a timestamp is cheap
# where subtracting timestamps and taking the epoch of the interval cost 5 µs a row (0.5 s at
# 100,000). No ORDER BY inside array_agg: it would force a sort (on disk, at 100,000) where a hash
# of the few groups does; the two arrays of a group take its rows in the same order.
_DUE_SQL = """
SELECT d.should_ping, d.protocol, d.credential_id, array_agg(d.id),
    CASE WHEN d.should_ping THEN array_agg(host(d.ip)) END
FROM nms_device AS d
WHERE d.status = %(active)s AND d.schedule_anchor <= %(until)s
  AND (%(since)s::timestamptz IS NULL OR d.schedule_anchor > %(since)s
       OR mod(%(until_us)s::bigint - (date_part('epoch', d.schedule_anchor) * 1000000)::bigint,
              GREATEST(d.polling_interval_seconds, 1) * 1000000::bigint)
          < %(until_us)s::bigint - %(since_us)s::bigint)
GROUP BY d.should_ping, d.protocol, d.credential_id
ORDER BY d.should_ping, d.protocol, d.credential_id
"""


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_microseconds(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def schedule_window_claim(
    cursor: CursorWrapper, now: datetime | None = None
) -> tuple[datetime | None, datetime]:
    """Move the tick cursor to `now` (the database's clock by default) under its row lock;
    returns the window ``(since, until]`` this claim owns. Inside the caller's transaction."""
    cursor.execute(
        "INSERT INTO nms_schedule_cursor (name, covered_until) VALUES (%s, NULL) "
        "ON CONFLICT (name) DO NOTHING",
        [CURSOR],
    )
    cursor.execute(
        "SELECT covered_until FROM nms_schedule_cursor WHERE name = %s FOR UPDATE", [CURSOR]
    )
    (since,) = cursor.fetchone()
    # Read the clock only once the lock is ours: a runner that waited starts where the other
    # stopped, never before.
    cursor.execute(
        "UPDATE nms_schedule_cursor "
        "SET covered_until = GREATEST(covered_until, COALESCE(%s, clock_timestamp())) "
        "WHERE name = %s RETURNING covered_until",
        [now, CURSOR],
    )
    (until,) = cursor.fetchone()
    return since, until


class Claim(NamedTuple):
    """A tick's window of time, ``(since, until]``, and the devices due in it."""

    since: datetime | None
    until: datetime
    groups: list[DueGroup]

    @property
    def device_ids(self) -> list[int]:
        return [device_id for group in self.groups for device_id in group.ids]


def due_devices_claim(*, now: datetime | None = None) -> Claim:
    """Claim the window since the previous claim and read the devices due in it."""
    require_postgresql("the scheduler tick")
    with transaction.atomic(), connection.cursor() as cursor:
        since, until = schedule_window_claim(cursor, now)
        if since is not None and until <= since:
            return Claim(since, until, [])
        cursor.execute(
            _DUE_SQL,
            {
                "active": DeviceStatus.ACTIVE,
                "since": since,
                "until": until,
                "since_us": None if since is None else epoch_microseconds(since),
                "until_us": epoch_microseconds(until),
            },
        )
        return Claim(since, until, [DueGroup(*row) for row in cursor.fetchall()])


@dataclass
class TickResult:
    claimed: int = 0
    pinged: int = 0
    unreachable: list[int] = field(default_factory=list)
    qualified: int = 0
    messages: int = 0
    deactivated: list[int] = field(default_factory=list)
    fping_errors: list[str] = field(default_factory=list)
    duration: float = 0.0

    def summary(self) -> str:
        text = (
            f"claimed {self.claimed}, pinged {self.pinged}, unreachable {len(self.unreachable)}, "
            f"dispatched {self.qualified} in {self.messages} message(s), "
            f"deactivated {len(self.deactivated)}, {self.duration:.2f}s"
        )
        if self.fping_errors:
            text += f"; fping failed: {self.fping_errors[-1]}"
        return text


def _availability_check(
    groups: Sequence[DueGroup], result: TickResult, fping_options: FpingOptions | None
) -> tuple[list[DueGroup], dict[int, str]]:
    """One fping for every address of the ToPing groups: (the reachable part of each group,
    {device id: why} for the unreachable)."""
    addresses = [ip for group in groups for ip in group.ips or ()]
    if not addresses:
        return [], {}
    result.pinged += len(addresses)
    try:
        verdict = fping(addresses, fping_options)
    except FpingError as error:
        result.fping_errors.append(str(error))
        logger.error(
            "fping failed; %d device(s) go to the poller unchecked: %s", len(addresses), error
        )
        return list(groups), {}
    reachable: list[DueGroup] = []
    unreachable: dict[int, str] = {}
    for group in groups:
        ids: list[int] = []
        ips: list[str] = []
        for device_id, ip in zip(group.ids, group.ips or (), strict=True):
            if ip in verdict.reachable:
                ids.append(device_id)
                ips.append(ip)
            else:
                unreachable[device_id] = f"no reply to ping from {ip} (fping)"
        if ids:
            reachable.append(group._replace(ids=ids, ips=ips))
    return reachable, unreachable


def scheduler_tick(
    *,
    now: datetime | None = None,
    fping_options: FpingOptions | None = None,
    dispatch: Callable[..., int] | None = None,
) -> TickResult:
    """One tick: claim what fell due since the last one, ping the ToPing devices, report the
    unreachable, dispatch the rest to the poller."""
    started = time.monotonic()
    dispatch = dispatch or poller.poll_batches_dispatch
    result = TickResult()
    claim = due_devices_claim(now=now)
    result.claimed = sum(len(group.ids) for group in claim.groups)
    if claim.groups:
        to_ping = [group for group in claim.groups if group.should_ping]
        to_skip = [group for group in claim.groups if not group.should_ping]
        reachable, unreachable = _availability_check(to_ping, result, fping_options)
        if unreachable:
            outcome = health.device_failures_record(
                failures=unreachable, reason=FailureReason.PING, occurred_at=claim.until
            )
            result.unreachable.extend(sorted(unreachable))
            result.deactivated.extend(outcome.deactivated)
        qualified = reachable + to_skip
        result.qualified = sum(len(group.ids) for group in qualified)
        result.messages = dispatch(groups=qualified, dispatched_at=claim.until)
    result.duration = time.monotonic() - started
    if result.claimed:
        logger.info("scheduler tick: %s", result.summary())
    return result
