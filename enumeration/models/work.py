"""Units of dispatch (Task), of commit (Batch) and what they found (TaskOutputRecord)."""

import functools
import uuid
from collections.abc import Callable

from django.db import models
from django.utils import timezone

from enumeration.choices import BatchStatus, RecordType, TaskKind, TaskStatus
from enumeration.idranges import ranges_count
from enumeration.models.fields import DigestField, uuid7
from enumeration.models.sessions import InvalidTransition, SessionState
from enumeration.models.timeline import Timeline

TASK_TRANSITIONS: dict[str, frozenset[str]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.FAILED}),
    # RUNNING -> PENDING is the Reaper returning a task whose lease expired.
    TaskStatus.RUNNING: frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.PENDING}),
    # FAILED -> PENDING is an operator's requeue.
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING}),
    TaskStatus.COMPLETED: frozenset(),
}


@functools.cache
def _positional_defaults(model: type[models.Model]) -> list[tuple[str, Callable[[], object]]]:
    """Each concrete field's attribute name and default, in the order of positional ``__init__``
    arguments."""
    return [(f.attname, f.get_default) for f in model._meta.concrete_fields]


class Task(models.Model):
    """A unit of dispatch: claimed with a lease by one worker at a time.

    ``payload`` holds ids and keys only: for DISCOVERY_ENUMERATE, ``paths_to_scan`` (lossless keys);
    for CLASSIFICATION, ``record_id_ranges``: the FILE records to classify, as sorted inclusive
    ``[first, last]`` ranges of ``TaskOutputRecord`` ids (``enumeration.idranges``).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the index on (session, kind, status) leads with it.
    session = models.ForeignKey(
        SessionState, on_delete=models.CASCADE, related_name="tasks", db_index=False
    )
    kind = models.CharField(max_length=32, choices=TaskKind.choices)
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    payload = models.JSONField(default=dict)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    # The attempt that last committed units: set in their transaction, cleared by each claim.
    # An attempt that committed a unit is not counted against max_attempts, however it ended
    # (an error, SIGKILL, a lease that ran out): the limit is for runs that get nowhere. A task
    # has finitely many units and a committed one is never listed again, so the retries end.
    # (Staging part of a large unit does not count: a growing directory has no end of it.)
    last_commit_attempt = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=255, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"]),
            # The Reaper's look for pending tasks whose message may be lost: the runnable kinds
            # only (``dispatch.RUNNABLE_KINDS``; a test keeps the two the same). CLASSIFICATION
            # tasks wait, pending, for a classifier: one per thousand files found, for good,
            # which the Reaper would otherwise read and drop at every pass.
            models.Index(
                fields=["enqueued_at"],
                condition=models.Q(status=TaskStatus.PENDING, kind=TaskKind.DISCOVERY_ENUMERATE),
                name="task_runnable_pending",
            ),
            models.Index(fields=["session", "kind", "status"]),
            # The API's and the admin's order.
            models.Index(fields=["created_at", "id"], name="task_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    def session_id_str(self) -> str:
        return str(self.session_id)

    def can_transition(self, target: str) -> bool:
        return target in TASK_TRANSITIONS[self.status]

    def transition(self, target: str) -> None:
        if not self.can_transition(target):
            raise InvalidTransition("task", self.status, target)
        self.status = target

    @property
    def attempt_progressed(self) -> bool:
        """Whether the current attempt has committed a unit."""
        return self.attempts > 0 and self.last_commit_attempt == self.attempts

    @property
    def paths_to_scan(self) -> list[str]:
        return list(self.payload.get("paths_to_scan", []))

    @property
    def record_id_ranges(self) -> list[list[int]]:
        return [list(r) for r in self.payload.get("record_id_ranges", [])]

    @property
    def units(self) -> int:
        """What the task takes on: directories to list, or records to classify."""
        return len(self.payload.get("paths_to_scan", ())) + ranges_count(
            self.payload.get("record_id_ranges", ())
        )


BATCH_TRANSITIONS: dict[str, frozenset[str]] = {
    BatchStatus.IN_PROGRESS: frozenset(
        {BatchStatus.SUCCEEDED, BatchStatus.FAILED, BatchStatus.PARTIALLY_COMPLETED}
    ),
    BatchStatus.SUCCEEDED: frozenset(),
    BatchStatus.FAILED: frozenset(),
    BatchStatus.PARTIALLY_COMPLETED: frozenset(),
}


class Batch(Timeline):
    """One committed unit of work (a directory): its completion marker and its BatchMetrics.

    A row exists only once the unit's records are in ``TaskOutputRecord``: it is written in the
    same transaction. The unique key on (session, unit) makes a replayed unit impossible.
    ``pipelined`` is the Pipeliner's cursor: set in the transaction that made the next stage's
    tasks from this unit's records.
    """

    # Time-ordered: a unit's records are keyed by (batch, key hash), so new keys land together.
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # No index of its own: the unique key (session, unit_hash) leads with it.
    session = models.ForeignKey(
        SessionState, on_delete=models.CASCADE, related_name="batches", db_index=False
    )
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="batches")
    unit = models.TextField()
    unit_hash = DigestField()
    status = models.CharField(
        max_length=32, choices=BatchStatus.choices, default=BatchStatus.IN_PROGRESS
    )
    expected_items = models.PositiveBigIntegerField(default=0)
    items_processed = models.PositiveBigIntegerField(default=0)
    # Entries already staged by an interrupted attempt and excluded from this listing.
    items_resumed = models.PositiveBigIntegerField(default=0)
    error_details = models.TextField(blank=True)
    checkpoint = models.JSONField(default=dict, blank=True)
    pipelined = models.BooleanField(default=False)
    # Every record of the unit has an id in [first_record_id, last_record_id] (None: it has no
    # record). Written with the records; the output table has no index on session or task, so
    # a session's or a task's records are found along its id by these bounds (selectors).
    first_record_id = models.BigIntegerField(null=True, blank=True, editable=False)
    last_record_id = models.BigIntegerField(null=True, blank=True, editable=False)
    # Timeline's, without its index: a session's stall check reads the session's own, and no
    # query filters or orders batches by it; the index only cost each directory's insert.
    last_update = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "unit_hash"], name="batch_unit_once")
        ]
        indexes = [
            models.Index(
                fields=["session"], condition=models.Q(pipelined=False), name="batch_unpipelined"
            ),
            # (``task`` has the ForeignKey's own index: a second one only cost every insert.)
            # The API's order; one row per directory listed, so a sort would grow with history.
            models.Index(fields=["completed_at", "id"], name="batch_completed"),
        ]
        verbose_name_plural = "batches"

    # Set by the commit, not stored: how many subdirectories the unit found.
    found_subdirectories = 0

    @classmethod
    def started(cls, **values: object) -> "Batch":
        """A new, unsaved batch started now, ``values`` given by attribute name (``task_id``,
        not ``task``). Made through Django's positional path, the one ``from_db`` takes: a
        worker makes one for every directory it lists, and the keyword path costs twice as
        much."""
        now = timezone.now()
        values.setdefault("started_at", now)
        values.setdefault("last_update", now)
        row = [
            values.pop(name) if name in values else default()
            for name, default in _positional_defaults(cls)
        ]
        if values:
            raise TypeError(f"Batch has no field {', '.join(map(repr, values))}")
        return cls(*row)

    def __str__(self) -> str:
        return f"batch {self.unit} ({self.status})"

    def _transition(self, target: str) -> None:
        if target not in BATCH_TRANSITIONS[self.status]:
            raise InvalidTransition("batch", self.status, target)
        self.status = target

    def mark_successful(self, items_processed: int) -> None:
        if items_processed < 0:
            raise ValueError("items_processed cannot be negative")
        self._transition(BatchStatus.SUCCEEDED)
        self.items_processed = items_processed
        self.expected_items = max(self.expected_items, items_processed)
        self.mark_timeline_completed()

    def mark_failed(self, error: BaseException | str) -> None:
        self._transition(BatchStatus.FAILED)
        self.error_details = str(error)
        self.mark_timeline_completed()

    def hold_record_ids(self, first: int, last: int) -> None:
        """Say that the unit's records have ids from ``first`` to ``last``."""
        if first > last:
            raise ValueError(f"record ids from {first} to {last}: an empty range")
        self.first_record_id, self.last_record_id = first, last

    def completion_percentage(self) -> float:
        if self.expected_items == 0:
            return 100.0 if self.status == BatchStatus.SUCCEEDED else 0.0
        return 100.0 * self.items_processed / self.expected_items


class OutputColumns(models.Model):
    """The columns a found object has, in staging and in the permanent table alike."""

    # Not indexed here: the subclasses' own keys, (batch, hash) and (task, ...), serve them.
    # No foreign-key constraints in the database on these bulk tables: rows are written by COPY
    # in the transaction that writes (or holds) their parents, and the checks cost more per row
    # than the write itself (docs/benchmarks.md). Deletes cascade through the ORM only along an
    # indexed key (a record's batch, a staged row's task): a cascade along these two would be a
    # scan of the whole table for every session or task deleted.
    session = models.ForeignKey(
        SessionState,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    task = models.ForeignKey(
        Task, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    record_type = models.CharField(max_length=16, choices=RecordType.choices)
    container = models.TextField()
    object_key = models.TextField()
    object_key_hash = DigestField()
    name = models.TextField()
    size = models.BigIntegerField(null=True, blank=True)
    modified_at = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True


class TaskOutputRecord(OutputColumns):
    """What a task found, committed: once per session, by constraint.

    The unique key is (batch, key hash), and a Batch is unique per session and unit
    (``batch_unit_once``). An object's key names its unit (its parent directory, or prefix, or
    schema), so it can only be committed under that unit's one Batch of the session: the two keys
    together make a second copy of a record impossible, as (session, key hash) did, with one
    index fewer per row (the same key serves "the records of a batch").
    """

    batch = models.ForeignKey(
        Batch,
        on_delete=models.CASCADE,
        related_name="records",
        db_index=False,
        db_constraint=False,
    )

    class Meta:
        db_table = "task_output_records"
        constraints = [
            models.UniqueConstraint(
                fields=["batch", "object_key_hash"], name="output_record_once_per_batch"
            )
        ]
        # Two indexes per row, the primary key and the key above: each index on this table cost
        # about a fifth of a million-file run (docs/benchmarks.md). The records of a task or a
        # session are found through their batches (Batch has both indexes).

    def __str__(self) -> str:
        return self.object_key


class StagedOutputRecord(OutputColumns):
    """The per-task staging area: what a unit has found so far, before its commit.

    Seed 002 names a table per task (``temp_outputs_{task_id}``); one table keyed by task gives the
    same isolation without DDL per task. On PostgreSQL it is UNLOGGED: after a database crash it
    comes back empty and the interrupted unit is simply listed again.
    """

    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    unit_hash = DigestField()

    class Meta:
        db_table = "staged_output_records"
        constraints = [
            models.UniqueConstraint(fields=["task", "object_key_hash"], name="staged_record_once")
        ]
        indexes = [models.Index(fields=["task", "unit_hash"])]

    def __str__(self) -> str:
        return f"staged {self.object_key}"
