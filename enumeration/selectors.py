"""Reads of the enumeration domain, shared by the API, the admin and the commands.

Writes go through ``enumeration.services``; nothing here changes a row.
"""

import uuid
from collections import defaultdict

from django.db.models import Count, Max, Min, Q, QuerySet

from enumeration.models import Batch, ScanTarget, SessionState, Task, TaskOutputRecord


def scan_target_list() -> QuerySet[ScanTarget]:
    return ScanTarget.objects.all()


def session_list() -> QuerySet[SessionState]:
    return SessionState.objects.select_related("target")


def session_task_counts(*, session_id: uuid.UUID) -> dict[str, dict[str, int]]:
    """How many tasks the session has, by kind then status (one grouped, indexed query)."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    rows = (
        Task.objects.filter(session_id=session_id)
        .values_list("kind", "status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for kind, status, n in rows:
        counts[kind][status] = n
    return dict(counts)


def batch_list() -> QuerySet[Batch]:
    return Batch.objects.all()


def task_list(*, with_payload: bool = True) -> QuerySet[Task]:
    """Tasks; a listing can leave out ``payload``, which holds up to thousands of record ids."""
    tasks = Task.objects.all()
    return tasks if with_payload else tasks.defer("payload")


def output_record_list() -> QuerySet[TaskOutputRecord]:
    return TaskOutputRecord.objects.all()


def records_found_by(
    records: QuerySet[TaskOutputRecord], **owner: uuid.UUID
) -> QuerySet[TaskOutputRecord]:
    """``records`` narrowed to those of one session, task or batch (``session_id=...``,
    ``task_id=...`` or ``id=...`` of the batch).

    The output table has no index of its own on session or task (each costs every write of a
    run), so they are found along the primary key, between the lowest and highest record id of
    the owner's batches: an indexed range that holds the owner's records and, at most, those
    that other sessions committed at the same time. Without it a page of the newest session
    read every older session's records first. A batch with records but no bounds (committed by
    a worker of the code before them, until migration 0015 fills them) cannot be trusted to
    lie in any range: the owner's records are then found through their batches, as before.
    """
    (key, value), *others = owner.items()
    if others:
        raise TypeError("records are found by one owner at a time")
    bounds = Batch.objects.filter(**owner).aggregate(
        first=Min("first_record_id"),
        last=Max("last_record_id"),
        unbounded=Count("pk", filter=Q(items_processed__gt=0, first_record_id__isnull=True)),
    )
    if bounds["unbounded"]:
        return records.filter(**{f"batch__{key}": value})
    if bounds["first"] is None:
        return records.none()  # nothing committed
    column = "batch_id" if key == "id" else key
    return records.filter(**{column: value}, id__range=(bounds["first"], bounds["last"]))
