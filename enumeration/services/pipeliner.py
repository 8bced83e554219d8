"""The Pipeliner: committed output becomes the next stage's tasks.

Its cursor is the ``pipelined`` flag of each committed Batch, set in the transaction that creates
the tasks from that batch's records. Batches are taken with ``SKIP LOCKED``, so several Pipeliners
(one after every commit on every worker, plus beat's safety net) never take the same batch, and a
record committed late is never skipped the way an id-ordered cursor would skip it.
"""

import logging
import uuid

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


def _pipeline_round(session_id: uuid.UUID) -> tuple[int, int]:
    """One transaction over up to BATCHES_PER_ROUND batches. Returns (batches, tasks)."""
    cfg = engine_settings()
    with transaction.atomic():
        batch_ids = list(
            Batch.objects.select_for_update(skip_locked=True)
            .filter(session_id=session_id, pipelined=False)
            .order_by("completed_at")
            .values_list("pk", flat=True)[:BATCHES_PER_ROUND]
        )
        if not batch_ids:
            return 0, 0
        records = TaskOutputRecord.objects.filter(batch_id__in=batch_ids)
        tasks: list[Task] = []
        paths: list[str] = []
        for path in (
            records.filter(record_type=RecordType.DIRECTORY)
            .order_by("object_key")
            .values_list("object_key", flat=True)
            .iterator(chunk_size=2000)
        ):
            paths.append(path)
            if len(paths) == cfg.pipeline_group_size:
                tasks.append(_enumerate_task(session_id, paths, cfg.max_attempts))
                paths = []
        if paths:
            tasks.append(_enumerate_task(session_id, paths, cfg.max_attempts))
        record_ids: list[int] = []
        for record_id in (
            records.filter(record_type=RecordType.FILE)
            .order_by("pk")
            .values_list("pk", flat=True)
            .iterator(chunk_size=5000)
        ):
            record_ids.append(record_id)
            if len(record_ids) == cfg.classification_group_size:
                tasks.append(_classification_task(session_id, record_ids, cfg.max_attempts))
                record_ids = []
        if record_ids:
            tasks.append(_classification_task(session_id, record_ids, cfg.max_attempts))
        handed_on = records.filter(record_type__in=[RecordType.DIRECTORY, RecordType.FILE]).count()
        if tasks:
            tasks_create(tasks)
        Batch.objects.filter(pk__in=batch_ids).update(pipelined=True)
        SessionState.objects.filter(pk=session_id).update(
            items_processed=F("items_processed") + handed_on, last_update=timezone.now()
        )
    return len(batch_ids), len(tasks)


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
