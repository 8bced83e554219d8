"""Reads of the enumeration domain, shared by the API, the admin and the commands.

Writes go through ``enumeration.services``; nothing here changes a row.
"""

import uuid
from collections import defaultdict

from django.db.models import Count, QuerySet

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
