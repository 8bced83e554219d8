"""Targets and sessions: one enumeration of one target, its status machine and its counters."""

import functools
import uuid
from datetime import timedelta

from django.db import connection, models
from django.utils import timezone

from enumeration.choices import SessionStatus, TargetType
from enumeration.models.timeline import Timeline


class InvalidTransition(Exception):
    """A status change the state machine forbids."""

    def __init__(self, entity: str, current: str, target: str) -> None:
        super().__init__(f"{entity} cannot go from {current} to {target}")
        self.entity, self.current, self.target = entity, current, target


class ScanTarget(models.Model):
    """Something Census enumerates. ``location`` is a lossless key (see ``connectors.keys``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255)
    target_type = models.CharField(max_length=32, choices=TargetType.choices)
    location = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    last_scan_time = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["target_type", "location"], name="scan_target_unique")
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.target_type}:{self.name}"


# The session state machine. PARTIALLY_COMPLETED, STALLED and FAILED are where a run rests, not
# dead ends: a resume (or, for STALLED, fresh progress) takes the session back to IN_PROGRESS.
# INITIALIZED -> STALLED is a session no worker has started within the threshold (no worker
# consumes its queue); the first claim takes it on to IN_PROGRESS.
SESSION_TRANSITIONS: dict[str, frozenset[str]] = {
    SessionStatus.INITIALIZED: frozenset(
        {SessionStatus.IN_PROGRESS, SessionStatus.FAILED, SessionStatus.STALLED}
    ),
    SessionStatus.IN_PROGRESS: frozenset(
        {
            SessionStatus.COMPLETED,
            SessionStatus.FAILED,
            SessionStatus.STALLED,
            SessionStatus.PARTIALLY_COMPLETED,
        }
    ),
    SessionStatus.STALLED: frozenset({SessionStatus.IN_PROGRESS, SessionStatus.FAILED}),
    SessionStatus.PARTIALLY_COMPLETED: frozenset({SessionStatus.IN_PROGRESS}),
    SessionStatus.FAILED: frozenset({SessionStatus.IN_PROGRESS}),
    SessionStatus.COMPLETED: frozenset(),
}
ACTIVE_SESSION_STATUSES = (
    SessionStatus.INITIALIZED,
    SessionStatus.IN_PROGRESS,
    SessionStatus.STALLED,
)
FINISHED_SESSION_STATUSES = tuple(s for s in SessionStatus if s not in ACTIVE_SESSION_STATUSES)
# Where a session is watched for stalling: waiting for its first claim, or running.
STALLABLE_SESSION_STATUSES = (SessionStatus.INITIALIZED, SessionStatus.IN_PROGRESS)


class Checkpoint(models.Model):
    """Where a target's listing can restart (a cursor for paged sources)."""

    target = models.OneToOneField(ScanTarget, on_delete=models.CASCADE, related_name="checkpoint")
    data = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"checkpoint of {self.target_id}"

    def is_temporary(self) -> bool:
        """A checkpoint not saved yet has no id: it is only in memory."""
        return self.pk is None


# Seed 001's SessionMetrics: the counters a session's commits move (``process_completed_batches``).
SESSION_COUNTERS = (
    "total_batches",
    "failed_batches",
    "items_found",
    "items_processed",
    "files_found",
    "directories_found",
    "processing_seconds",
)


class SessionState(Timeline):
    """One enumeration of one target (seed 001's SessionState, with SessionMetrics folded in)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    target = models.ForeignKey(ScanTarget, on_delete=models.PROTECT, related_name="sessions")
    source_type = models.CharField(max_length=32, choices=TargetType.choices)
    status = models.CharField(
        max_length=32, choices=SessionStatus.choices, default=SessionStatus.INITIALIZED
    )
    failure_reason = models.TextField(blank=True)
    last_checkpoint = models.ForeignKey(
        Checkpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Options of the run (batch sizes and the like). Never credentials.
    config = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when retention (or an operator) starts deleting a finished session, which then goes
    # chunk by chunk and may be interrupted: a marked session is being deleted, may already
    # miss records, cannot be resumed, and is finished by the next retention run.
    purge_started_at = models.DateTimeField(null=True, blank=True)

    # SessionMetrics.
    total_batches = models.PositiveBigIntegerField(default=0)
    failed_batches = models.PositiveBigIntegerField(default=0)
    items_found = models.PositiveBigIntegerField(default=0)
    items_processed = models.PositiveBigIntegerField(default=0)
    files_found = models.PositiveBigIntegerField(default=0)
    directories_found = models.PositiveBigIntegerField(default=0)
    # Seed 001's processing time: the listing and commit of every unit, summed. Kept here, in
    # the commit's own UPDATE, so that /metrics sums one row per session instead of every batch.
    processing_seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "last_update"])]
        constraints = [
            # A start, a resume and a requeue lock the target and refuse with a message
            # (services.sessions); this makes a second active session impossible regardless.
            models.UniqueConstraint(
                fields=["target"],
                condition=models.Q(status__in=ACTIVE_SESSION_STATUSES),
                name="one_active_session_per_target",
            )
        ]

    def __str__(self) -> str:
        return f"session {self.id} ({self.status})"

    # --- transitions ---------------------------------------------------------------------
    def can_transition(self, target: str) -> bool:
        return target in SESSION_TRANSITIONS[self.status]

    def _transition(self, target: str) -> None:
        if not self.can_transition(target):
            raise InvalidTransition("session", self.status, target)
        self.status = target

    def mark_in_progress(self) -> None:
        self._transition(SessionStatus.IN_PROGRESS)
        self.failure_reason = ""
        self.completed_at = None
        self.mark_timeline_started()

    def mark_completed(self) -> None:
        self._transition(SessionStatus.COMPLETED)
        self.mark_timeline_completed()

    def mark_partially_completed(self, reason: str) -> None:
        self._transition(SessionStatus.PARTIALLY_COMPLETED)
        self.failure_reason = reason
        self.mark_timeline_completed()

    def mark_failed(self, reason: str) -> None:
        self._transition(SessionStatus.FAILED)
        self.failure_reason = reason
        self.mark_timeline_completed()

    def mark_stalled(self) -> None:
        since = self.last_update.isoformat()
        if self.status == SessionStatus.INITIALIZED:
            reason = f"no worker has started it since {since}"
        else:
            reason = f"no progress since {since}"
        self._transition(SessionStatus.STALLED)
        self.failure_reason = reason

    # --- metrics -------------------------------------------------------------------------
    @property
    def has_failed_batches(self) -> bool:
        return self.failed_batches > 0

    def is_stalled(self, threshold: timedelta) -> bool:
        return (
            self.status in STALLABLE_SESSION_STATUSES
            and timezone.now() - self.last_update > threshold
        )

    def process_completed_batches(
        self,
        *,
        batches: int,
        failed: int,
        files: int,
        directories: int,
        items: int,
        processed: int = 0,
        seconds: float = 0.0,
    ) -> None:
        """Add committed units to the counters, atomically in the database; ``processed`` is
        what their commit already handed on to the next stage, ``seconds`` their processing
        time.

        Several workers commit units of one session at once, so the counters are moved in the
        database (``column = column + n``) rather than read-modify-write. Call inside the
        units' transaction.

        A commit is progress: a STALLED session (say, one flagged while a worker listed a huge
        directory) goes back to IN_PROGRESS in the same UPDATE, decided on the row as it is then.
        """
        # One statement prepared here rather than by the ORM: it runs in every commit, and
        # compiling the Case and F() expressions cost more than the database spent on it.
        added = {
            "total_batches": batches,
            "failed_batches": failed,
            "items_found": items,
            "items_processed": processed,
            "files_found": files,
            "directories_found": directories,
            "processing_seconds": seconds,
        }
        ops = connection.ops
        with connection.cursor() as cursor:
            cursor.execute(
                _counters_update_sql(),
                [
                    SessionStatus.STALLED,
                    SessionStatus.IN_PROGRESS,
                    SessionStatus.STALLED,
                    *(added[name] for name in SESSION_COUNTERS),
                    ops.adapt_datetimefield_value(timezone.now()),
                    SessionState._meta.pk.get_db_prep_value(self.pk, connection),
                ],
            )


@functools.cache
def _counters_update_sql() -> str:
    """``process_completed_batches``'s UPDATE. Every right-hand side reads the row as it was, so
    the failure reason is cleared exactly when the status leaves STALLED."""
    column = {f.name: connection.ops.quote_name(f.column) for f in SessionState._meta.fields}
    added = ", ".join(f"{column[name]} = {column[name]} + %s" for name in SESSION_COUNTERS)
    status, reason = column["status"], column["failure_reason"]
    return (
        f"UPDATE {SessionState._meta.db_table} SET "
        f"{status} = CASE WHEN {status} = %s THEN %s ELSE {status} END, "
        f"{reason} = CASE WHEN {status} = %s THEN '' ELSE {reason} END, "
        f"{added}, {column['last_update']} = %s WHERE {column['id']} = %s"
    )
