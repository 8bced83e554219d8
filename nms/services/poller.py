"""The poller (seed 003 §2, "Dispatch" to "Persistence"; §8).

Dispatch (in the tick): the qualified devices are grouped by protocol (and credential, so a batch
decrypts few), cut into batches of ``CENSUS_NMS_POLL_BATCH_SIZE`` and sent as
``nms.tasks_monitoring.poll_devices`` tasks to the ``poll`` queue; a burst of more batches than
``CENSUS_NMS_DISPATCH_MESSAGES`` is handed over in that many messages for workers to publish
(`poll_batches_dispatch`). A message carries device ids and the claim time only; never a
credential, never device state.

Poll (in a ``poll`` worker), `devices_poll`:

1. Claim the poll: one UPDATE sets ``last_poll_at`` for the devices that are still active, whose
   message is not older than their interval (a backlog's stale message is dropped: the next
   claim already sent a fresh one) and that were not polled since half an interval before this
   claim (a redelivered message finds them polled and does nothing). Only the claimed devices
   are polled.
2. Re-read them, fetch each credential profile once and decrypt it once for the batch.
3. One plugin run per protocol through the plugin pool (`nms.plugin_pool.run_plugin`).
4. Successful results go to the metrics service (one COPY) together with each device's
   ``last_poll_success``/``last_poll_error``, in one transaction.
5. Failures go to the health monitor: the run failed as a whole (timeout, exit code ≠ 0, output
   that is not the contract's) or returned no result for a device → reason "plugin", one failure
   event per device of the batch; ``success: false`` → reason "poll".

A credential that cannot be decrypted, or that the plugin contract refuses, is a configuration
error, not a sick device: it is logged and shown as the device's ``last_poll_error`` but not
counted by the health monitor (one removed key must not deactivate every device).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils.dateparse import parse_datetime

from nms.choices import DeviceStatus, FailureReason
from nms.crypto import SecretUnreadable, decrypt_json
from nms.models import CredentialProfile, Device
from nms.plugin_pool import PluginRun, run_plugin
from nms.plugins.contract import ContractError, Task, validate_task
from nms.services import health
from nms.services.metrics import Sample, metric_samples_write

logger = logging.getLogger(__name__)

MAX_ERROR = 2000
# Only these fields of a credential payload reach a plugin.
CREDENTIAL_FIELDS = ("username", "password", "transport", "scheme", "server_cert_validation")


class DueGroup(NamedTuple):
    """Due devices that are checked and polled alike: what the tick knows of them.

    The database hands the tick its devices grouped, a list of ids per group, because 100,000
    Python objects, one per device, cost more than the whole claim (the garbage collector walks
    them as they are made)."""

    should_ping: bool
    protocol: str
    credential_id: int
    ids: list[int]
    ips: list[str] | None = None  # the addresses, in the order of `ids`, when `should_ping`


def require_postgresql(what: str) -> None:
    """The monitor's claims and COPY are PostgreSQL's; the embedded SQLite default has no NMS."""
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured(f"{what} needs PostgreSQL (DATABASE_URL=postgres://...)")


def database_now() -> datetime:
    """The database's clock: tick runners and poll workers on other machines compare claim times
    against one clock."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


# --- dispatch ---------------------------------------------------------------------------------


def poll_batch_size() -> int:
    return max(1, int(settings.CENSUS_NMS["POLL_BATCH_SIZE"]))


def poll_batches(groups: Iterable[DueGroup], size: int | None = None) -> list[list[int]]:
    """Device ids by protocol and credential, in id order, in batches of at most `size`."""
    size = size or poll_batch_size()
    merged: dict[tuple[str, int], list[int]] = defaultdict(list)
    for group in groups:
        merged[(group.protocol, group.credential_id)].extend(group.ids)
    batches: list[list[int]] = []
    for key in sorted(merged):
        ids = sorted(merged[key])
        batches.extend(ids[start : start + size] for start in range(0, len(ids), size))
    return batches


def poll_batches_dispatch(*, groups: Sequence[DueGroup], dispatched_at: datetime) -> int:
    """Hand the qualified devices to the poll workers; returns how many messages this sent.

    Up to ``CENSUS_NMS_DISPATCH_MESSAGES`` batches go straight to the ``poll`` queue as
    ``poll_devices`` tasks. More than that (a burst: an outage ended, thousands provisioned at
    once) go as that many ``poll_batches_send`` messages on ``default``, each carrying a share of
    the batches for a worker to publish: a broker round trip costs milliseconds, and the tick
    must not spend seconds on a thousand of them. The claim that produced `groups` is committed
    already, so the rows exist when a worker reads them."""
    batches = poll_batches(groups)
    if not batches:
        return 0
    stamp = dispatched_at.isoformat()
    most = max(1, int(settings.CENSUS_NMS["DISPATCH_MESSAGES"]))
    if len(batches) <= most:
        return poll_batches_publish(batches, stamp)
    from config.celery import app
    from nms.tasks_monitoring import poll_batches_send

    share = math.ceil(len(batches) / most)
    sent = 0
    with app.producer_or_acquire() as producer:
        for start in range(0, len(batches), share):
            part = batches[start : start + share]
            poll_batches_send.apply_async(
                args=[part, stamp],
                producer=producer,
                # Celery would otherwise build a repr of thousands of ids for the message.
                argsrepr=f"({len(part)} batches of device ids, {stamp!r})",
            )
            sent += 1
    return sent


def poll_batches_publish(batches: Sequence[Sequence[int]], dispatched_at: str) -> int:
    """One ``poll_devices`` message per batch to the ``poll`` queue; returns how many."""
    from config.celery import app
    from nms.tasks_monitoring import poll_devices

    with app.producer_or_acquire() as producer:
        for ids in batches:
            poll_devices.apply_async(
                args=[list(ids), dispatched_at],
                producer=producer,
                argsrepr=f"({len(ids)} device ids, {dispatched_at!r})",
            )
    return len(batches)


# --- poll -------------------------------------------------------------------------------------

_POLL_CLAIM_SQL = """
UPDATE nms_device AS d SET last_poll_at = %(now)s
WHERE d.id = ANY(%(ids)s)
  AND d.status = %(active)s
  AND %(dispatched)s >= %(now)s - make_interval(secs => GREATEST(d.polling_interval_seconds, 1))
  AND (d.last_poll_at IS NULL OR d.last_poll_at < %(dispatched)s
       - make_interval(secs => GREATEST(d.polling_interval_seconds, 1) * 0.5))
RETURNING d.id
"""


@dataclass
class PollOutcome:
    requested: int = 0
    polled: int = 0
    succeeded: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # device id → reason
    not_counted: dict[int, str] = field(default_factory=dict)  # configuration errors
    skipped: int = 0  # inactive, stale message, or polled already
    deactivated: list[int] = field(default_factory=list)
    plugin_errors: list[str] = field(default_factory=list)
    samples: int = 0


def poll_batch_timeout(tasks: int) -> float:
    """Seconds one plugin run may take: what docs/plugins.md asks for a batch, plus start-up."""
    configured = float(settings.CENSUS_NMS["POLL_BATCH_TIMEOUT"])
    if configured > 0:
        return configured
    workers = max(1, int(settings.CENSUS_NMS["PLUGIN_WORKERS"]))
    device_timeout = float(settings.CENSUS_NMS["POLL_DEVICE_TIMEOUT"])
    return math.ceil(max(1, tasks) / workers) * device_timeout + 10


def plugin_command(protocol: str) -> list[str] | None:
    command = settings.CENSUS_NMS["PLUGINS"].get(protocol)
    if not command:
        return None
    command = list(command)
    # The WinRM plugin takes the number of its threads; other plugins get their argv as is.
    if command[-2:] == ["-m", "nms.plugins.winrm"]:
        command += ["--workers", str(int(settings.CENSUS_NMS["PLUGIN_WORKERS"]))]
    return command


def _claim_poll(device_ids: Sequence[int], dispatched_at: datetime, now: datetime) -> list[int]:
    require_postgresql("the poller")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _POLL_CLAIM_SQL,
            {
                "ids": list(device_ids),
                "active": DeviceStatus.ACTIVE,
                "now": now,
                "dispatched": dispatched_at,
            },
        )
        return sorted(row[0] for row in cursor.fetchall())


def _credentials(devices: Iterable[Device]) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """Each credential profile of the batch fetched and decrypted once: (clear, errors)."""
    wanted = {device.credential_id for device in devices}
    clear: dict[int, dict[str, Any]] = {}
    errors: dict[int, str] = {}
    for profile in CredentialProfile.objects.filter(pk__in=wanted):
        try:
            payload = decrypt_json(profile.payload_encrypted)
        except SecretUnreadable:
            errors[profile.pk] = (
                f"credential profile {profile.name!r} cannot be decrypted with the configured keys"
            )
            continue
        clear[profile.pk] = {key: payload[key] for key in CREDENTIAL_FIELDS if key in payload}
    for missing in wanted - set(clear) - set(errors):
        errors[missing] = f"credential profile {missing} does not exist"
    return clear, errors


def _task_for(device: Device, credential: dict[str, Any], timeout: float) -> Task:
    return validate_task(
        {
            "request_id": str(device.pk),
            "device_id": device.pk,
            "ip": str(device.ip),
            "port": device.port,
            "protocol": device.protocol,
            "credential": credential,
            "timeout": timeout,
        },
        f"device {device.pk}",
    )


def _classify(plugin_run: PluginRun, outcome: PollOutcome, reasons: dict[int, str]) -> None:
    """Sort a run's failures into "plugin" (the run, or no answer) and "poll" (success=false)."""
    answered = {result["request_id"] for result in plugin_run.results}
    for request_id, why in plugin_run.failures.items():
        device_id = int(request_id)
        outcome.failed[device_id] = why[:MAX_ERROR]
        if plugin_run.ok and request_id in answered:
            reasons[device_id] = FailureReason.POLL
        else:
            reasons[device_id] = FailureReason.PLUGIN


def _persist(outcome: PollOutcome, samples: list[Sample]) -> None:
    """Metrics and each polled device's last poll state: one transaction."""
    rows = [(device_id, True, "") for device_id in outcome.succeeded]
    rows += [(device_id, False, why) for device_id, why in outcome.failed.items()]
    rows += [(device_id, False, why) for device_id, why in outcome.not_counted.items()]
    with transaction.atomic():
        outcome.samples = metric_samples_write(samples=samples)
        if rows:
            with connection.cursor() as cursor:
                cursor.execute(
                    """
                    UPDATE nms_device AS d
                    SET last_poll_success = v.success, last_poll_error = v.error
                    FROM unnest(%s::bigint[], %s::boolean[], %s::text[]) AS v(id, success, error)
                    WHERE d.id = v.id
                    """,
                    (
                        [row[0] for row in rows],
                        [row[1] for row in rows],
                        [row[2] for row in rows],
                    ),
                )


def devices_poll(*, device_ids: Sequence[int], dispatched_at: datetime | str) -> PollOutcome:
    """Poll a batch of devices (the body of the ``poll_devices`` task)."""
    if isinstance(dispatched_at, str):
        parsed = parse_datetime(dispatched_at)
        if parsed is None:
            raise ValueError(f"dispatched_at is not a timestamp: {dispatched_at!r}")
        dispatched_at = parsed
    outcome = PollOutcome(requested=len(device_ids))
    now = database_now()
    claimed = _claim_poll(device_ids, dispatched_at, now)
    outcome.skipped = len(set(device_ids)) - len(claimed)
    if outcome.skipped:
        logger.info(
            "poll: %d of %d device(s) skipped (inactive, stale message, or polled already)",
            outcome.skipped,
            len(set(device_ids)),
        )
    if not claimed:
        return outcome
    outcome.polled = len(claimed)

    devices = list(Device.objects.filter(pk__in=claimed).order_by("pk"))
    credentials, credential_errors = _credentials(devices)
    device_timeout = float(settings.CENSUS_NMS["POLL_DEVICE_TIMEOUT"])
    by_protocol: dict[str, list[Task]] = defaultdict(list)
    for device in devices:
        if device.credential_id in credential_errors:
            outcome.not_counted[device.pk] = credential_errors[device.credential_id]
            continue
        try:
            by_protocol[device.protocol].append(
                _task_for(device, credentials[device.credential_id], device_timeout)
            )
        except ContractError as error:
            outcome.not_counted[device.pk] = f"cannot build the poll task: {error}"
    for device_id, why in outcome.not_counted.items():
        logger.error("device %s not polled: %s", device_id, why)

    reasons: dict[int, str] = {}
    samples: list[Sample] = []
    for protocol, tasks in sorted(by_protocol.items()):
        command = plugin_command(protocol)
        if command is None:
            for task in tasks:
                outcome.failed[int(task["request_id"])] = f"no plugin for protocol {protocol!r}"
                reasons[int(task["request_id"])] = FailureReason.PLUGIN
            logger.error("no plugin configured for protocol %r", protocol)
            continue
        plugin_run = run_plugin(
            command, "poll", tasks, poll_batch_timeout(len(tasks)), cwd=settings.BASE_DIR
        )
        if plugin_run.error:
            outcome.plugin_errors.append(plugin_run.error)
        for result in plugin_run.succeeded:
            device_id = int(result["request_id"])
            outcome.succeeded.append(device_id)
            samples.append(Sample(device_id, now, result["data"] or {}))
        _classify(plugin_run, outcome, reasons)

    _persist(outcome, samples)
    for reason in (FailureReason.PLUGIN, FailureReason.POLL):
        failures = {
            device_id: outcome.failed[device_id]
            for device_id, why in reasons.items()
            if why == reason
        }
        if failures:
            recorded = health.device_failures_record(failures=failures, reason=reason)
            outcome.deactivated.extend(recorded.deactivated)
    logger.info(
        "poll: %d device(s), %d succeeded, %d failed, %d not polled (configuration), "
        "%d sample(s) written",
        outcome.polled,
        len(outcome.succeeded),
        len(outcome.failed),
        len(outcome.not_counted),
        outcome.samples,
    )
    return outcome
