"""The Pipeliner: committed output becomes the next stage's tasks.

Its cursor is the ``pipelined`` flag of each committed Batch, set in the transaction that creates
the tasks from that batch's records. Batches are taken with ``SKIP LOCKED``, so several Pipeliners
(one after every commit on every worker, plus beat's safety net) never take the same batch, and a
record committed late is never skipped the way an id-ordered cursor would skip it.
"""

import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import TypeVar

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from enumeration.choices import RecordType, SessionStatus, TaskKind
from enumeration.conf import engine_settings
from enumeration.connectors.keys import decode_key
from enumeration.models import Batch, SessionState, Task, TaskOutputRecord
from enumeration.services.dispatch import tasks_create

logger = logging.getLogger(__name__)

BATCHES_PER_ROUND = 100
TASKS_PER_INSERT = 100
T = TypeVar("T")


def _enumerate_task(session_id: uuid.UUID, paths: list[str], max_attempts: int) -> Task:
    return Task(
        session_id=session_id,
        kind=TaskKind.DISCOVERY_ENUMERATE,
        payload={"paths_to_scan": sorted(paths, key=decode_key)},
        max_attempts=max_attempts,
        enqueued_at=timezone.now(),
    )


def _classification_task(session_id: uuid.UUID, record_ids: list[int], max_attempts: int) -> Task:
    return Task(
        session_id=session_id,
        kind=TaskKind.CLASSIFICATION,
        payload={"record_ids": record_ids},
        max_attempts=max_attempts,
    )


def _grouped(values: Iterable[T], size: int) -> Iterator[list[T]]:
    group: list[T] = []
    for value in values:
        group.append(value)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


class _NextStage:
    """The next stage's tasks for some committed batches, made as the records stream by."""

    def __init__(self, session_id: uuid.UUID, batch_ids: list[uuid.UUID]) -> None:
        self.session_id = session_id
        self.records = TaskOutputRecord.objects.filter(batch_id__in=batch_ids)
        self.handed_on = 0

    def tasks(self) -> Iterator[Task]:
        cfg = engine_settings()
        directories = (
            self.records.filter(record_type=RecordType.DIRECTORY)
            .order_by("object_key")
            .values_list("object_key", flat=True)
            .iterator(chunk_size=2000)
        )
        for paths in _grouped(directories, cfg.pipeline_group_size):
            self.handed_on += len(paths)
            yield _enumerate_task(self.session_id, paths, cfg.max_attempts)
        files = (
            self.records.filter(record_type=RecordType.FILE)
            .order_by("pk")
            .values_list("pk", flat=True)
            .iterator(chunk_size=5000)
        )
        for record_ids in _grouped(files, cfg.classification_group_size):
            self.handed_on += len(record_ids)
            yield _classification_task(self.session_id, record_ids, cfg.max_attempts)


def _pipeline_round(session_id: uuid.UUID) -> tuple[int, int]:
    """One transaction over up to BATCHES_PER_ROUND batches. Returns (batches, tasks made)."""
    with transaction.atomic():
        batch_ids = list(
            Batch.objects.select_for_update(skip_locked=True)
            .filter(session_id=session_id, pipelined=False)
            .order_by("completed_at")
            .values_list("pk", flat=True)[:BATCHES_PER_ROUND]
        )
        if not batch_ids:
            return 0, 0
        next_stage = _NextStage(session_id, batch_ids)
        made = 0
        # Saved TASKS_PER_INSERT at a time: memory stays bounded however large the batches.
        for tasks in _grouped(next_stage.tasks(), TASKS_PER_INSERT):
            tasks_create(tasks)
            made += len(tasks)
        Batch.objects.filter(pk__in=batch_ids).update(pipelined=True)
        SessionState.objects.filter(pk=session_id).update(
            items_processed=F("items_processed") + next_stage.handed_on,
            last_update=timezone.now(),
        )
    return len(batch_ids), made


def pipeline_advance(*, session_id: uuid.UUID) -> int:
    """Turn every committed, unpipelined batch of the session into tasks. Returns tasks made."""
    made = 0
    while True:
        batches, tasks = _pipeline_round(session_id)
        made += tasks
        if batches < BATCHES_PER_ROUND:
            return made


def pipeline_sweep() -> int:
    """Beat's safety net: advance every session that has committed batches not yet pipelined,
    then close every active session that has nothing left (its last worker may have died between
    finishing its task and closing the session)."""
    from enumeration.services.sessions import session_refresh_status

    session_ids = (
        Batch.objects.filter(pipelined=False).values_list("session_id", flat=True).distinct()
    )
    made = 0
    for session_id in list(session_ids):
        made += pipeline_advance(session_id=session_id)
    if made:
        logger.info("pipeliner sweep made %d tasks", made)
    active = SessionState.objects.filter(
        status__in=[SessionStatus.IN_PROGRESS, SessionStatus.STALLED]
    ).values_list("pk", flat=True)
    for session_id in list(active):
        session_refresh_status(session_id=session_id)
    return made
