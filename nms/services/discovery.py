"""Discovery (seed 003 §1): profiles, runs, and turning what the plugin finds into devices.

Starting a run (``discovery_run_start``) checks the profile's targets, creates the run and one
``DiscoveryRunTarget`` per address in one transaction, and sends the run's id to the ``poll`` queue
after commit. The message carries that id and nothing else.

Executing it (``discovery_run_execute``, from the Celery task) claims the run PENDING → RUNNING
with a conditional UPDATE, decrypts the credential once, then works through the run's PENDING
targets a batch at a time. A batch is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` and done
in one transaction: the plugin's answers become devices (get-or-create on the IP + port unique
constraint), each target's outcome and the run's counters are written, and the batch commits. So a
second delivery of the message, or a second worker, never handles a target twice: it takes the
batches nobody holds, and a target with an outcome is never looked at again. A worker that dies
mid-batch loses nothing but that batch's work: its row locks go with its connection, and the
redelivered message (``acks_late``) finds those targets PENDING again. A run that would outlive
the task's time limit hands itself over to a fresh message between two batches.

A plugin run that fails as a whole fails each target of its batch with the reason; the run goes on
with the next batch. The run ends COMPLETED, or FAILED when no target succeeded (or it cannot go on
at all: the credential cannot be decrypted, no plugin for the protocol).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, cast

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from nms import crypto
from nms.choices import Protocol, RunStatus, TargetOutcome
from nms.models import DiscoveryProfile, DiscoveryRun, DiscoveryRunTarget
from nms.plugin_pool import PluginRun, run_plugin
from nms.plugins.contract import Credential, Result, Task
from nms.services.credentials import credential_payload
from nms.services.devices import MAX_PORT, device_get_or_create_discovered
from nms.services.validation import FieldErrors, credential_for_protocol
from nms.targets import TargetError, TargetSpec, parse_targets

logger = logging.getLogger(__name__)

_INSERT_CHUNK = 2000
# Seconds kept in hand under the task's soft time limit before a run hands itself over.
_HANDOVER_MARGIN = 30.0


class DiscoveryInvalid(FieldErrors):
    """Input Census refuses; ``errors`` maps each offending field to what is wrong with it."""


@dataclass(frozen=True)
class DiscoverySettings:
    batch_size: int
    device_timeout: float
    batch_timeout: float
    plugins: Mapping[str, Sequence[str]]
    max_hosts: int
    time_budget: float


def discovery_settings() -> DiscoverySettings:
    soft_limit = float(getattr(settings, "CELERY_TASK_SOFT_TIME_LIMIT", 3300) or 3300)
    nms = settings.CENSUS_NMS
    return DiscoverySettings(
        batch_size=max(1, int(nms["DISCOVERY_BATCH_SIZE"])),
        device_timeout=float(nms["DISCOVERY_DEVICE_TIMEOUT"]),
        batch_timeout=float(nms["DISCOVERY_BATCH_TIMEOUT"]),
        plugins=nms["PLUGINS"],
        max_hosts=int(nms["MAX_HOSTS"]),
        time_budget=soft_limit - _HANDOVER_MARGIN,
    )


# --- profiles ----------------------------------------------------------------------------------


def discovery_targets_validate(*, targets: str) -> TargetSpec:
    try:
        return parse_targets(targets, max_hosts=discovery_settings().max_hosts)
    except TargetError as exc:
        raise DiscoveryInvalid({"targets": str(exc)}) from None


def _check_profile_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    errors: dict[str, str] = {}
    clean = dict(values)
    if "targets" in values:
        try:
            discovery_targets_validate(targets=values["targets"])
        except DiscoveryInvalid as exc:
            errors.update(exc.errors)
        clean["targets"] = str(values["targets"]).strip()
    port = values.get("port")
    if "port" in values and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= MAX_PORT
    ):
        errors["port"] = f"must be a whole number from 1 to {MAX_PORT}."
    interval = values.get("polling_interval_seconds")
    if "polling_interval_seconds" in values and (
        isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0
    ):
        errors["polling_interval_seconds"] = "must be a whole number of seconds greater than 0."
    if "protocol" in values and values["protocol"] not in Protocol.values:
        errors["protocol"] = f"must be one of {', '.join(Protocol.values)}."
    if errors:
        raise DiscoveryInvalid(errors)
    return clean


def discovery_profile_create(
    *,
    name: str,
    targets: str,
    credential_id: int,
    port: int = 5985,
    protocol: str = Protocol.WINRM,
    auto_provision: bool = False,
    polling_interval_seconds: int = 60,
) -> DiscoveryProfile:
    clean = _check_profile_fields(
        {
            "targets": targets,
            "port": port,
            "protocol": protocol,
            "polling_interval_seconds": polling_interval_seconds,
        }
    )
    credential_for_protocol(credential_id, protocol, invalid=DiscoveryInvalid)
    return DiscoveryProfile.objects.create(
        name=name, credential_id=credential_id, auto_provision=auto_provision, **clean
    )


PROFILE_FIELDS = (
    "name",
    "targets",
    "port",
    "protocol",
    "credential_id",
    "auto_provision",
    "polling_interval_seconds",
)


def discovery_profile_update(*, profile_id: int, changes: Mapping[str, Any]) -> DiscoveryProfile:
    unknown = sorted(set(changes) - set(PROFILE_FIELDS))
    if unknown:
        raise DiscoveryInvalid(dict.fromkeys(unknown, "cannot be changed here."))
    with transaction.atomic():
        profile = DiscoveryProfile.objects.select_for_update().get(pk=profile_id)
        clean = _check_profile_fields(changes)
        if "credential_id" in clean or "protocol" in clean:
            credential_for_protocol(
                clean.get("credential_id", profile.credential_id),
                clean.get("protocol", profile.protocol),
                invalid=DiscoveryInvalid,
            )
        for name, value in clean.items():
            setattr(profile, name, value)
        profile.save()
    return profile


# --- starting a run ----------------------------------------------------------------------------


def discovery_run_start(*, profile_id: int) -> DiscoveryRun:
    """A PENDING run with one target row per address, sent to a worker after commit."""
    profile = DiscoveryProfile.objects.get(pk=profile_id)
    spec = discovery_targets_validate(targets=profile.targets)
    with transaction.atomic():
        run = DiscoveryRun.objects.create(profile=profile, targets_total=spec.count)
        addresses = spec.addresses()
        while chunk := list(islice(addresses, _INSERT_CHUNK)):
            DiscoveryRunTarget.objects.bulk_create(
                DiscoveryRunTarget(run=run, ip=ip) for ip in chunk
            )
        discovery_run_enqueue_on_commit(run_id=run.pk)
    logger.info(
        "discovery run %s of profile %s created: %d target(s)", run.pk, profile.pk, spec.count
    )
    return run


def _send(run_id: int) -> None:
    from nms.tasks import run_discovery

    try:
        run_discovery.apply_async(args=[run_id], retry=False)
    except Exception:
        # The run is safe in the database, PENDING; sending it again resumes it.
        logger.warning("could not send discovery run %s to the broker", run_id, exc_info=True)


def discovery_run_enqueue_on_commit(*, run_id: int) -> None:
    transaction.on_commit(lambda: _send(run_id), robust=True)


# --- executing a run ---------------------------------------------------------------------------


def discovery_run_execute(*, run_id: int) -> DiscoveryRun:
    """Work through the run's PENDING targets (see the module's docstring). Safe to repeat."""
    cfg = discovery_settings()
    claimed = DiscoveryRun.objects.filter(pk=run_id, status=RunStatus.PENDING).update(
        status=RunStatus.RUNNING, started_at=timezone.now()
    )
    run = DiscoveryRun.objects.select_related("profile", "profile__credential").get(pk=run_id)
    if run.status != RunStatus.RUNNING:
        logger.info("discovery run %s is %s: nothing to do", run_id, run.status)
        return run
    if not claimed:
        logger.info("discovery run %s already RUNNING: taking the targets nobody holds", run_id)

    profile = run.profile
    command = cfg.plugins.get(profile.protocol)
    if not command:
        return _run_fail(run, f"no discovery plugin is configured for protocol {profile.protocol}")
    try:
        # Decrypted once for the whole run; it lives in this frame and on the plugin's stdin only.
        credential = cast(Credential, credential_payload(profile.credential))
    except crypto.SecretUnreadable:
        return _run_fail(
            run,
            f"credential profile {profile.credential.name!r} cannot be decrypted with the "
            "configured keys",
        )

    started = time.monotonic()
    while True:
        handled = _discovery_batch(run, profile, credential, command, cfg)
        if not handled:
            break
        elapsed = time.monotonic() - started
        if elapsed + cfg.batch_timeout > cfg.time_budget:
            logger.info("discovery run %s handed over after %.0fs", run_id, elapsed)
            with transaction.atomic():
                discovery_run_enqueue_on_commit(run_id=run_id)
            return DiscoveryRun.objects.get(pk=run_id)
    return discovery_run_finish(run_id=run_id)


def _tasks_for(
    targets: Sequence[DiscoveryRunTarget],
    profile: DiscoveryProfile,
    credential: Credential,
    cfg: DiscoverySettings,
) -> list[Task]:
    return [
        {
            "request_id": str(target.pk),
            "device_id": None,
            "ip": str(target.ip),
            "port": profile.port,
            "protocol": profile.protocol,
            "credential": credential,
            "timeout": cfg.device_timeout,
        }
        for target in targets
    ]


def _discovery_batch(
    run: DiscoveryRun,
    profile: DiscoveryProfile,
    credential: Credential,
    command: Sequence[str],
    cfg: DiscoverySettings,
) -> int:
    """Claim up to one batch of PENDING targets, discover them, and commit their outcomes."""
    with transaction.atomic():
        targets = list(
            DiscoveryRunTarget.objects.select_for_update(skip_locked=True)
            .filter(run_id=run.pk, outcome=TargetOutcome.PENDING)
            .order_by("pk")[: cfg.batch_size]
        )
        if not targets:
            return 0
        plugin_run = run_plugin(
            command,
            "discovery",
            _tasks_for(targets, profile, credential, cfg),
            cfg.batch_timeout,
            cwd=settings.BASE_DIR,
        )
        succeeded, failed, created = _record_outcomes(run, profile, targets, plugin_run)
        DiscoveryRunTarget.objects.bulk_update(targets, ["outcome", "error", "device"])
        DiscoveryRun.objects.filter(pk=run.pk).update(
            targets_succeeded=F("targets_succeeded") + succeeded,
            targets_failed=F("targets_failed") + failed,
            devices_created=F("devices_created") + created,
            last_progress_at=timezone.now(),
        )
    logger.info(
        "discovery run %s: batch of %d target(s): %d device(s) created, %d found again, "
        "%d failed%s",
        run.pk,
        len(targets),
        created,
        succeeded - created,
        failed,
        f" (plugin run failed: {plugin_run.error})" if plugin_run.error else "",
    )
    return len(targets)


def _record_outcomes(
    run: DiscoveryRun,
    profile: DiscoveryProfile,
    targets: Sequence[DiscoveryRunTarget],
    plugin_run: PluginRun,
) -> tuple[int, int, int]:
    answers: dict[str, Result] = {result["request_id"]: result for result in plugin_run.results}
    succeeded = failed = created = 0
    for target in targets:
        request_id = str(target.pk)
        answer = answers.get(request_id)
        if answer is None or not answer["success"] or request_id in plugin_run.failures:
            target.outcome = TargetOutcome.FAILED
            target.error = plugin_run.failures.get(request_id) or "the plugin gave no answer"
            failed += 1
            continue
        data = _enrich(answer["data"], profile)
        device, was_created = device_get_or_create_discovered(
            ip=str(target.ip),
            port=profile.port,
            protocol=profile.protocol,
            credential_id=profile.credential_id,
            discovery_profile_id=profile.pk,
            hostname=data["hostname"],
            os=data["os"],
            auto_provision=profile.auto_provision,
            interval_seconds=profile.polling_interval_seconds,
            run_id=run.pk,
        )
        target.device = device
        target.outcome = TargetOutcome.CREATED if was_created else TargetOutcome.EXISTING
        target.error = ""
        succeeded += 1
        created += int(was_created)
    return succeeded, failed, created


def _enrich(data: Mapping[str, Any], profile: DiscoveryProfile) -> dict[str, Any]:
    """What the plugin found, with what the profile says about it (seed §1: enrich with the
    profile's ids)."""
    system = data.get("os") if isinstance(data.get("os"), Mapping) else {}
    caption = str(system.get("caption") or "").strip()  # type: ignore[union-attr]
    version = str(system.get("version") or "").strip()  # type: ignore[union-attr]
    return {
        "hostname": str(data.get("hostname") or "").strip(),
        "os": " ".join(part for part in (caption, version) if part),
        "discovery_profile_id": profile.pk,
        "credential_id": profile.credential_id,
        "port": profile.port,
        "protocol": profile.protocol,
    }


def discovery_run_finish(*, run_id: int) -> DiscoveryRun:
    """Close a RUNNING run when it has no PENDING target left: COMPLETED, or FAILED when no
    target succeeded. A run with targets still held by another worker is left to that worker."""
    with transaction.atomic():
        run = DiscoveryRun.objects.select_for_update().get(pk=run_id)
        if run.status != RunStatus.RUNNING:
            return run
        if run.targets.filter(outcome=TargetOutcome.PENDING).exists():
            return run
        if run.targets_total and not run.targets_succeeded:
            first_error = (
                run.targets.filter(outcome=TargetOutcome.FAILED)
                .order_by("pk")
                .values_list("error", flat=True)
                .first()
            )
            run.status = RunStatus.FAILED
            run.error = f"no target succeeded; the first failed with: {first_error}"
        else:
            run.status = RunStatus.COMPLETED
        run.completed_at = timezone.now()
        run.save(update_fields=["status", "error", "completed_at"])
    logger.info(
        "discovery run %s %s: %d target(s), %d succeeded, %d failed, %d device(s) created",
        run.pk,
        run.status,
        run.targets_total,
        run.targets_succeeded,
        run.targets_failed,
        run.devices_created,
    )
    return run


def _run_fail(run: DiscoveryRun, reason: str) -> DiscoveryRun:
    """The run cannot go on at all: every PENDING target and the run itself fail with `reason`."""
    with transaction.atomic():
        failed = DiscoveryRunTarget.objects.filter(
            run_id=run.pk, outcome=TargetOutcome.PENDING
        ).update(outcome=TargetOutcome.FAILED, error=reason)
        DiscoveryRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            status=RunStatus.FAILED,
            error=reason,
            targets_failed=F("targets_failed") + failed,
            completed_at=timezone.now(),
        )
    logger.error("discovery run %s failed: %s", run.pk, reason)
    return DiscoveryRun.objects.get(pk=run.pk)


def discovery_runs_resend(*, older_than_seconds: int = 120) -> list[int]:
    """Send again the runs whose message may have died with the broker: PENDING runs older than
    `older_than_seconds`, and RUNNING runs with PENDING targets nobody holds that have not
    committed a batch for longer than a batch can take (plus `older_than_seconds`). A run that
    is moving is left alone: a second delivery would work alongside it, taking the targets
    nobody holds, and fill the poll queue's slots with copies of one run."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_seconds)
    pending = DiscoveryRun.objects.filter(status=RunStatus.PENDING, created_at__lt=cutoff)
    quiet_since = cutoff - timedelta(seconds=discovery_settings().batch_timeout)
    ids = [*pending.values_list("pk", flat=True), *_running_with_unheld_targets(quiet_since)]
    for run_id in ids:
        _send(run_id)
    return ids


def _running_with_unheld_targets(quiet_since: datetime) -> list[int]:
    """RUNNING runs with no batch committed since ``quiet_since`` and a PENDING target no live
    worker holds."""
    found: list[int] = []
    running = DiscoveryRun.objects.annotate(
        moved_at=Coalesce("last_progress_at", "started_at")
    ).filter(status=RunStatus.RUNNING, moved_at__lt=quiet_since)
    for run_id in running.values_list("pk", flat=True):
        with transaction.atomic():
            unheld = (
                DiscoveryRunTarget.objects.select_for_update(skip_locked=True)
                .filter(run_id=run_id, outcome=TargetOutcome.PENDING)
                .values_list("pk", flat=True)[:1]
            )
            if list(unheld):
                found.append(run_id)
    return found
