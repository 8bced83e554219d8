"""Coordinator services (seed 000): start, resume, finish and watch enumeration sessions."""

import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import (
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Sum,
)
from django.utils import timezone

from enumeration.choices import BatchStatus, SessionStatus, TargetType, TaskKind, TaskStatus
from enumeration.conf import engine_settings
from enumeration.connectors.keys import decode_key, encode_key, key_hash
from enumeration.models import (
    Batch,
    DomainEvent,
    InvalidTransition,
    ScanTarget,
    SessionState,
    StagedOutputRecord,
    Task,
)
from enumeration.models.sessions import ACTIVE_SESSION_STATUSES, STALLABLE_SESSION_STATUSES
from enumeration.services.dispatch import (
    RUNNABLE_KINDS,
    tasks_create,
    tasks_enqueue_on_commit,
    waiting_messages,
)
from enumeration.services.events import SESSION_FINISHED, events_record
from enumeration.services.owners import owner_is_gone

logger = logging.getLogger(__name__)


class TargetInvalid(ValueError):
    """A target spec Census refuses before anything is created."""


class SessionConflict(ValueError):
    """The session is not in a state that allows what was asked."""


# --- targets -----------------------------------------------------------------------------------
def directory_target_validate(*, path: str | bytes) -> bytes:
    """The absolute, resolved directory a path names, or TargetInvalid saying why not."""
    raw = os.fsencode(path)
    shown = os.fsdecode(raw)
    if not raw.strip():
        raise TargetInvalid("A directory path is required.")
    if b"\x00" in raw:
        raise TargetInvalid("A path cannot contain a NUL character.")
    resolved = os.path.realpath(os.path.abspath(raw))
    if not os.path.exists(resolved):
        raise TargetInvalid(f"{shown!r} does not exist.")
    if not os.path.isdir(resolved):
        raise TargetInvalid(f"{shown!r} is not a directory.")
    return resolved


def scan_target_get_or_create_directory(*, path: bytes) -> ScanTarget:
    location = encode_key(path)
    target, _ = ScanTarget.objects.get_or_create(
        target_type=TargetType.DIRECTORY,
        location=location,
        defaults={"name": (os.path.basename(path) or path).decode("utf-8", "backslashreplace")},
    )
    return target


def _target_lock_idle(*, target_id: uuid.UUID, reopening: uuid.UUID | None = None) -> ScanTarget:
    """Lock the target, then refuse when one of its sessions (other than ``reopening``) is
    active. Inside the transaction that starts a session or takes a finished one back to
    IN_PROGRESS.

    The target row is the lock: a FOR UPDATE on the target's active sessions locks nothing when
    there are none, so two starts would both find none. (On SQLite, IMMEDIATE transactions
    serialise them anyway.)
    """
    target = ScanTarget.objects.select_for_update().get(pk=target_id)
    active = SessionState.objects.filter(target=target, status__in=ACTIVE_SESSION_STATUSES)
    if reopening is not None:
        active = active.exclude(pk=reopening)
    busy = active.first()
    if busy is not None:
        raise SessionConflict(
            f"Session {busy.pk} is already enumerating {target.location!r}; "
            "resume it or wait for it to finish."
        )
    return target


# --- start -------------------------------------------------------------------------------------
def enumerate_target(*, path: str | bytes, name: str | None = None) -> SessionState:
    """Start a fresh enumeration of a directory: the session and its first task, one transaction."""
    root = directory_target_validate(path=path)
    cfg = engine_settings()
    with transaction.atomic():
        target = _target_lock_idle(target_id=scan_target_get_or_create_directory(path=root).pk)
        if name and target.name != name:
            target.name = name
            target.save(update_fields=["name", "updated_at"])
        session = SessionState.objects.create(
            target=target,
            source_type=target.target_type,
            config={
                "listing_batch_size": cfg.listing_batch_size,
                "pipeline_group_size": cfg.pipeline_group_size,
                "classification_group_size": cfg.classification_group_size,
            },
        )
        tasks_create(
            [
                Task(
                    session=session,
                    kind=TaskKind.DISCOVERY_ENUMERATE,
                    payload={"paths_to_scan": [target.location]},
                    max_attempts=cfg.max_attempts,
                    enqueued_at=timezone.now(),
                )
            ]
        )
    logger.info("session created for %s", target.location, extra={"session_id": str(session.pk)})
    return session


# --- finish ------------------------------------------------------------------------------------
def session_refresh_status(*, session_id: uuid.UUID) -> SessionState:
    """Close the session when nothing is pending or running and the Pipeliner has nothing left.

    COMPLETED when every unit succeeded, PARTIALLY_COMPLETED when some failed for good, FAILED when
    none succeeded.
    """

    def work_left() -> bool:
        busy = Task.objects.filter(
            session_id=session_id,
            kind__in=RUNNABLE_KINDS,
            status__in=[TaskStatus.PENDING, TaskStatus.RUNNING],
        ).exists()
        return busy or Batch.objects.filter(session_id=session_id, pipelined=False).exists()

    # Every task's end asks; while work is left (nearly always), the answer needs no lock.
    if work_left():
        return SessionState.objects.get(pk=session_id)
    with transaction.atomic():
        session = SessionState.objects.select_for_update().get(pk=session_id)
        if session.status not in (SessionStatus.IN_PROGRESS, SessionStatus.STALLED):
            return session
        if work_left():  # asked again under the lock: the first answer may be stale
            return session
        if session.status == SessionStatus.STALLED:
            session.mark_in_progress()
        failed = Batch.objects.filter(session_id=session_id, status=BatchStatus.FAILED).count()
        succeeded = Batch.objects.filter(
            session_id=session_id, status=BatchStatus.SUCCEEDED
        ).count()
        if failed == 0:
            session.mark_completed()
        elif succeeded == 0:
            session.mark_failed(f"every unit failed ({failed}); see the session's failed batches")
        else:
            session.mark_partially_completed(
                f"{failed} of {failed + succeeded} units failed; see the session's failed batches"
            )
        session.save()
        ScanTarget.objects.filter(pk=session.target_id).update(last_scan_time=timezone.now())
        events_record(
            [
                DomainEvent(
                    event_type=SESSION_FINISHED,
                    aggregate_type="session",
                    aggregate_id=str(session.pk),
                    payload={
                        "session_id": str(session.pk),
                        "status": session.status,
                        "items_found": session.items_found,
                        "failed_batches": failed,
                    },
                )
            ]
        )
    log = logger.info if session.status == SessionStatus.COMPLETED else logger.error
    log(
        "session finished %s: %s",
        session.status,
        session.failure_reason or "all units succeeded",
        extra={"session_id": str(session.pk)},
    )
    return session


def _task_fail(task: Task, reason: str) -> None:
    """Fail a task for good: its uncommitted units become FAILED batches. Inside a transaction."""
    task.transition(TaskStatus.FAILED)
    task.last_error = reason
    task.lease_owner = ""
    task.lease_expires_at = None
    task.completed_at = timezone.now()
    task.save(
        update_fields=["status", "last_error", "lease_owner", "lease_expires_at", "completed_at"]
    )
    StagedOutputRecord.objects.filter(task=task).delete()
    if task.kind != TaskKind.DISCOVERY_ENUMERATE:
        return
    units = task.paths_to_scan
    done = set(
        Batch.objects.filter(
            session_id=task.session_id, unit_hash__in=[key_hash(decode_key(u)) for u in units]
        ).values_list("unit_hash", flat=True)
    )
    now = timezone.now()
    failed = [
        Batch(
            session_id=task.session_id,
            task=task,
            unit=unit,
            unit_hash=key_hash(decode_key(unit)),
            status=BatchStatus.FAILED,
            error_details=reason,
            started_at=now,
            completed_at=now,
            pipelined=True,
        )
        for unit in units
        if key_hash(decode_key(unit)) not in done
    ]
    Batch.objects.bulk_create(failed)
    SessionState.objects.filter(pk=task.session_id).update(
        total_batches=F("total_batches") + len(failed),
        failed_batches=F("failed_batches") + len(failed),
        last_update=now,
    )


def _task_return_to_queue(task: Task, reason: str) -> None:
    """RUNNING -> PENDING with the reason, lease dropped, message sent after commit."""
    task.transition(TaskStatus.PENDING)
    task.last_error = reason
    task.lease_owner = ""
    task.lease_expires_at = None
    task.enqueued_at = timezone.now()
    task.save(
        update_fields=["status", "last_error", "lease_owner", "lease_expires_at", "enqueued_at"]
    )
    tasks_enqueue_on_commit([task.pk])


# The end of the reason given when an attempt that ended was not counted (``_attempt_spent``).
NOT_COUNTED = " (it had committed units: not counted)"


def _attempt_spent(task: Task) -> bool:
    """Whether the attempt that just ended counts against the task's limit: one that committed
    units (say, a long task cut by its time limit, or killed, after some of them) is given
    back. Inside the transaction that locked the task; saves ``attempts`` if it changes."""
    if task.attempt_progressed:
        task.attempts -= 1
        task.save(update_fields=["attempts"])
    return task.attempts >= task.max_attempts


def task_release_after_error(*, task_id: uuid.UUID, worker_id: str, error: Exception) -> str:
    """An unexpected error ended a run: retry the task later, or fail it past its attempt limit
    (``_attempt_spent``)."""
    reason = f"{type(error).__name__}: {error}"[:2000]
    with transaction.atomic():
        task = (
            Task.objects.select_for_update()
            .filter(pk=task_id, status=TaskStatus.RUNNING, lease_owner=worker_id)
            .first()
        )
        if task is None:
            return "lease_lost"
        progressed = task.attempt_progressed
        if _attempt_spent(task):
            _task_fail(task, f"failed on attempt {task.attempts} of {task.max_attempts}: {reason}")
            outcome = "failed"
        else:
            _task_return_to_queue(task, reason + (NOT_COUNTED if progressed else ""))
            outcome = "retry"
    if outcome == "failed":
        session_refresh_status(session_id=task.session_id)
    return outcome


# --- resume ------------------------------------------------------------------------------------
def _session_reopen(session: SessionState) -> bool:
    """What a resume and a requeue do first, the session locked: refuse one being deleted, and
    take one that finished with failures (PARTIALLY_COMPLETED, FAILED) back to IN_PROGRESS,
    unless another session of its target is active. Returns whether it was taken back. Call it
    before moving the session's counters with ``F()``: it saves the session whole."""
    if session.purge_started_at is not None:
        raise SessionConflict(f"Session {session.pk} is being deleted; start a new one.")
    if session.status not in (SessionStatus.PARTIALLY_COMPLETED, SessionStatus.FAILED):
        return False
    _target_lock_idle(target_id=session.target_id, reopening=session.pk)
    session.mark_in_progress()
    session.save()
    return True


def _batches_forgotten(session_id: uuid.UUID, failed: QuerySet[Batch]) -> int:
    """Delete failed batches (their units are to be listed again) and take them out of the
    session's counters, their processing time included: the counters stay the sums of the
    session's batches. Returns how many. Inside a transaction."""
    # A batch without both times has a NULL elapsed time, which SUM leaves out.
    elapsed = ExpressionWrapper(F("completed_at") - F("started_at"), output_field=DurationField())
    totals = failed.aggregate(count=Count("pk"), seconds=Sum(elapsed))
    count = totals["count"]
    failed.delete()
    SessionState.objects.filter(pk=session_id).update(
        total_batches=F("total_batches") - count,
        failed_batches=F("failed_batches") - count,
        processing_seconds=F("processing_seconds")
        - (totals["seconds"].total_seconds() if totals["seconds"] else 0.0),
    )
    return count


def _retry_failed_units(session: SessionState) -> int:
    """Give the failed units of a finished session another task. Inside a transaction."""
    cfg = engine_settings()
    failed = Batch.objects.filter(session=session, status=BatchStatus.FAILED)
    units = list(failed.values_list("unit", flat=True))
    if not units:
        return 0
    _batches_forgotten(session.pk, failed)
    size = cfg.pipeline_group_size
    tasks_create(
        [
            Task(
                session=session,
                kind=TaskKind.DISCOVERY_ENUMERATE,
                payload={"paths_to_scan": sorted(units[i : i + size], key=decode_key)},
                max_attempts=cfg.max_attempts,
                enqueued_at=timezone.now(),
            )
            for i in range(0, len(units), size)
        ]
    )
    return len(units)


def _message_maybe_lost(now: datetime, *, queue_empty: bool) -> Q:
    """Pending tasks whose message may be lost, to be sent again.

    - Unclaimed past RESEND_AFTER in a session that has not moved for as long. A session that
      is moving has a queue that is moving: re-sending its backlog would only make duplicates
      (harmless, but each costs a claim attempt).
    - With nothing waiting in the broker's queue (``queue_empty``), unclaimed for longer than a
      lease: a worker that received its message would have claimed it by then. Its message died
      with a worker killed between receiving and claiming (an unacknowledged delivery comes back
      only after the broker's visibility timeout, an hour), or with the broker.
    """
    cfg = engine_settings()
    cutoff = now - cfg.resend_after
    maybe_lost = (Q(enqueued_at__lt=cutoff) | Q(enqueued_at__isnull=True)) & Q(
        session__last_update__lt=cutoff
    )
    if queue_empty:
        maybe_lost |= Q(enqueued_at__lt=now - cfg.lease) | Q(enqueued_at__isnull=True)
    return maybe_lost


def _resend_pending(session_id: uuid.UUID, *, maybe_lost: Q | None) -> int:
    """Send the session's pending tasks again: all of them, or those ``maybe_lost`` selects.
    Inside a transaction that holds the session's lock.

    A task locked right now is being claimed: it needs no message, and is skipped rather than
    waited for. (A claim locks its task, then the session of a session not yet IN_PROGRESS;
    waiting here, with the session locked, would be the other half of a deadlock.)
    """
    now = timezone.now()
    pending = Task.objects.filter(
        session_id=session_id, kind__in=RUNNABLE_KINDS, status=TaskStatus.PENDING
    )
    if maybe_lost is not None:
        pending = pending.filter(maybe_lost)
    ids = list(pending.select_for_update(skip_locked=True).values_list("pk", flat=True))
    Task.objects.filter(pk__in=ids).update(enqueued_at=now)
    tasks_enqueue_on_commit(ids)
    return len(ids)


def resume_target(
    *,
    session_id: uuid.UUID | str,
    only_waiting_too_long: bool = False,
    queue_empty: bool | None = None,
) -> SessionState:
    """Resume a session (seed 000's ResumeTarget). Safe to call on any session, any number of times.

    An active session has its pending tasks sent again (their messages may be lost; with
    ``only_waiting_too_long``, just those the Reaper would re-send, the broker asked whether its
    queue is empty unless the caller says) and its Pipeliner run; a PARTIALLY_COMPLETED or
    FAILED one has its failed units retried, unless another session of its target is active.
    """
    from enumeration.services.pipeliner import pipeline_advance

    maybe_lost = None
    if only_waiting_too_long:
        if queue_empty is None:
            queue_empty = waiting_messages() == 0
        maybe_lost = _message_maybe_lost(timezone.now(), queue_empty=queue_empty)
    with transaction.atomic():
        session = SessionState.objects.select_for_update().get(pk=session_id)
        reopened = _session_reopen(session)
        if session.status == SessionStatus.COMPLETED:
            raise SessionConflict(f"Session {session.pk} is already COMPLETED; start a new one.")
        retried = _retry_failed_units(session) if reopened else 0
        resent = _resend_pending(session.pk, maybe_lost=maybe_lost)
    logger.info(
        "session resumed: %d failed units retried, %d pending tasks sent again",
        retried,
        resent,
        extra={"session_id": str(session.pk)},
    )
    pipeline_advance(session_id=session.pk)
    return session_refresh_status(session_id=session.pk)


def sessions_resume_active() -> int:
    """The Orchestrator's start-up: resume every active session. Returns how many.

    Every worker does this when it starts, so it re-sends only what has waited too long: a
    worker joining a busy run must not send the whole backlog again. First it takes back the
    tasks of workers it can see were killed on this machine, so that a restart does not wait
    for their leases to expire.
    """
    tasks_take_back_orphaned()
    ids = list(
        SessionState.objects.filter(status__in=ACTIVE_SESSION_STATUSES).values_list("pk", flat=True)
    )
    # The broker is asked once for all of them (each question opens a connection, and takes
    # seconds when the broker is down).
    queue_empty = waiting_messages() == 0 if ids else False
    for session_id in ids:
        resume_target(session_id=session_id, only_waiting_too_long=True, queue_empty=queue_empty)
    return len(ids)


def task_requeue(*, task_id: uuid.UUID | str) -> Task:
    """An operator's requeue of a FAILED task: its failed units are forgotten and tried again.
    Refused, as a resume is, for a session being deleted or one whose target another session is
    enumerating."""
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=task_id)
        if task.status != TaskStatus.FAILED:
            raise SessionConflict(f"Only a FAILED task can be requeued; this one is {task.status}.")
        session = SessionState.objects.select_for_update().get(pk=task.session_id)
        # Before the counters move: the reopened session is saved whole.
        _session_reopen(session)
        _batches_forgotten(session.pk, Batch.objects.filter(task=task, status=BatchStatus.FAILED))
        task.transition(TaskStatus.PENDING)
        task.attempts = 0
        task.enqueued_at = timezone.now()
        task.save(update_fields=["status", "attempts", "enqueued_at"])
        if task.kind in RUNNABLE_KINDS:
            tasks_enqueue_on_commit([task.pk])
    return task


# --- watch -------------------------------------------------------------------------------------
_OWNER_GONE = "ended with its process"


@dataclass
class ReapResult:
    requeued: int = 0
    failed: int = 0
    resent: int = 0


def _tasks_orphaned(
    now: datetime, limit: int, task_ids: list[uuid.UUID | str] | None = None
) -> list[Task]:
    """RUNNING tasks (of ``task_ids`` when given), locked, whose lease has not expired but whose
    owner this process can see is gone (``owners``: a worker killed on this host)."""
    running = Task.objects.filter(status=TaskStatus.RUNNING, lease_expires_at__gte=now)
    if task_ids is not None:
        running = running.filter(pk__in=task_ids)
    gone = [
        pk for pk, owner in running.values_list("pk", "lease_owner")[:limit] if owner_is_gone(owner)
    ]
    if not gone:
        return []
    locked = Task.objects.select_for_update(skip_locked=True).filter(
        pk__in=gone, status=TaskStatus.RUNNING
    )
    # Asked again of the locked rows: a task may have been claimed anew in between.
    return [task for task in locked if owner_is_gone(task.lease_owner)]


def _tasks_take_back(tasks: list[tuple[Task, str]], result: ReapResult) -> set[uuid.UUID]:
    """Return leased tasks to the queue, or fail those past their attempt limit; ``why`` says
    what became of each lease. Inside the transaction that locked them. Returns their sessions."""
    for task, why in tasks:
        owner, attempt, progressed = task.lease_owner, task.attempts, task.attempt_progressed
        if _attempt_spent(task):
            _task_fail(task, f"lease of {owner} {why} on attempt {attempt} of {task.max_attempts}")
            result.failed += 1
            continue
        given_back = NOT_COUNTED if progressed else ""
        _task_return_to_queue(task, f"lease of {owner} {why} on attempt {attempt}{given_back}")
        result.requeued += 1
    return {task.session_id for task, _ in tasks}


def _report(result: ReapResult) -> None:
    if result.requeued or result.failed or result.resent:
        logger.warning(
            "reaper: %d requeued, %d failed past their attempt limit, %d re-sent",
            result.requeued,
            result.failed,
            result.resent,
        )


def tasks_reap(*, limit: int = 500) -> ReapResult:
    """The Reaper: requeue tasks whose lease expired or whose owner it sees is gone, fail those
    past their attempt limit, and re-send tasks left waiting unclaimed too long (their message
    may have died with the broker)."""
    # The broker is asked first, outside the transaction that holds the rows.
    queue_empty = waiting_messages() == 0
    now = timezone.now()
    result = ReapResult()
    with transaction.atomic():
        expired = list(
            Task.objects.select_for_update(skip_locked=True)
            .filter(status=TaskStatus.RUNNING, lease_expires_at__lt=now)
            .order_by("lease_expires_at")[:limit]
        )
        touched = _tasks_take_back(
            [
                *((task, "expired") for task in expired),
                *((task, _OWNER_GONE) for task in _tasks_orphaned(now, limit)),
            ],
            result,
        )
        stale = list(
            Task.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(
                _message_maybe_lost(now, queue_empty=queue_empty),
                status=TaskStatus.PENDING,
                kind__in=RUNNABLE_KINDS,
            )
            .values_list("pk", flat=True)[:limit]
        )
        Task.objects.filter(pk__in=stale).update(enqueued_at=now)
        tasks_enqueue_on_commit(stale)
        result.resent = len(stale)
    for session_id in touched:
        session_refresh_status(session_id=session_id)
    _report(result)
    return result


def tasks_take_back_orphaned(
    *, task_ids: list[uuid.UUID | str] | None = None, limit: int = 500
) -> ReapResult:
    """Of the Reaper's work, only this: the tasks (of ``task_ids`` when given) whose owner this
    process can see is gone go back to the queue (or fail past their attempt limit). Run by a
    worker at start-up, so that one restarted where another was killed does not wait for that
    one's leases, and for a task whose message came back with its dead worker's lease on it."""
    result = ReapResult()
    with transaction.atomic():
        orphaned = _tasks_orphaned(timezone.now(), limit, task_ids)
        touched = _tasks_take_back([(task, _OWNER_GONE) for task in orphaned], result)
    for session_id in touched:
        session_refresh_status(session_id=session_id)
    _report(result)
    return result


def sessions_detect_stalled() -> list[SessionState]:
    """Mark STALLED, and alert on, the sessions that have not moved past the threshold: IN_PROGRESS
    ones with no commit and no task heartbeating, and INITIALIZED ones no worker has started."""
    cfg = engine_settings()
    cutoff = timezone.now() - cfg.stall_after
    # A single huge directory is staged batch by batch: only its task's heartbeat moves.
    heartbeating = Task.objects.filter(
        session=OuterRef("pk"), status=TaskStatus.RUNNING, heartbeat_at__gte=cutoff
    )
    stalled = []
    with transaction.atomic():
        for session in SessionState.objects.select_for_update(skip_locked=True).filter(
            ~Exists(heartbeating),
            status__in=STALLABLE_SESSION_STATUSES,
            last_update__lt=cutoff,
        ):
            try:
                session.mark_stalled()
            except InvalidTransition:
                continue
            session.save(update_fields=["status", "failure_reason"])
            stalled.append(session)
    for session in stalled:
        # ERROR level: Sentry's logging integration turns this into an alert.
        logger.error(
            "enumeration stalled: %s", session.failure_reason, extra={"session_id": str(session.pk)}
        )
    return stalled
