"""The Pipeliner: committed output becomes the next stage's tasks.

Its cursor is the ``pipelined`` flag of each committed Batch, set in the transaction that creates
the tasks from that batch's records. Batches are taken with ``SKIP LOCKED``, so several Pipeliners
(one after every commit on every worker, plus beat's safety net) never take the same batch, and a
record committed late is never skipped the way an id-ordered cursor would skip it.
"""

import logging
import operator
import uuid
from collections.abc import Iterable, Iterator
from typing import TypeVar

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from enumeration.choices import RecordType, SessionStatus, TaskKind
from enumeration.conf import engine_settings
from enumeration.connectors.keys import decode_key
from enumeration.idranges import IdRange, id_ranges, ranges_grouped
from enumeration.models import Batch, SessionState, Task, TaskOutputRecord
from enumeration.services.dispatch import tasks_create

logger = logging.getLogger(__name__)

BATCHES_PER_ROUND = 100
TASKS_PER_INSERT = 100
T = TypeVar("T")
_first = operator.itemgetter(0)


def _enumerate_task(session_id: uuid.UUID, paths: list[str], max_attempts: int) -> Task:
    return Task(
        session_id=session_id,
        kind=TaskKind.DISCOVERY_ENUMERATE,
        payload={"paths_to_scan": sorted(paths, key=decode_key)},
        max_attempts=max_attempts,
        enqueued_at=timezone.now(),
    )


def _classification_task(
    session_id: uuid.UUID, record_id_ranges: list[IdRange], max_attempts: int
) -> Task:
    return Task(
        session_id=session_id,
        kind=TaskKind.CLASSIFICATION,
        payload={"record_id_ranges": record_id_ranges},
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


# The records of some batches, one batch at a time: LATERAL with OFFSET 0 keeps PostgreSQL on the
# ``batch_id`` index whatever its statistics say. (Asked as one ``batch_id IN (...)`` through a
# cursor and ordered by id, a table never analysed mid-run was read whole through its primary key
# at every round: quadratic in the records committed.)
_LATERAL_RECORDS = (
    "SELECT r.{column} FROM {batches} b CROSS JOIN LATERAL ("
    "SELECT {column} FROM {records} WHERE batch_id = b.id AND record_type = %s OFFSET 0) r "
    "WHERE b.id = ANY(%s) ORDER BY r.{column}"
)


def next_stage_tasks(
    session_id: uuid.UUID, *, directory_keys: Iterable[str], file_id_ranges: Iterable[IdRange]
) -> Iterator[Task]:
    """Unsaved next-stage tasks: the subdirectories in DISCOVERY_ENUMERATE tasks of
    ``PIPELINE_GROUP_SIZE``, then the files (ascending ranges of their record ids) in
    CLASSIFICATION tasks of ``CLASSIFICATION_GROUP_SIZE``. Consumes its iterables lazily."""
    cfg = engine_settings()
    for paths in _grouped(directory_keys, cfg.pipeline_group_size):
        yield _enumerate_task(session_id, paths, cfg.max_attempts)
    for ranges in ranges_grouped(file_id_ranges, cfg.classification_group_size):
        yield _classification_task(session_id, ranges, cfg.max_attempts)


def handed_on(tasks: Iterable[Task]) -> int:
    """How many committed records these next-stage tasks take on (the session's
    ``items_processed``)."""
    return sum(t.units for t in tasks)


class _NextStage:
    """The next stage's tasks for some committed batches, made as the records stream by."""

    def __init__(self, session_id: uuid.UUID, batch_ids: list[uuid.UUID]) -> None:
        self.session_id = session_id
        self.batch_ids = batch_ids

    def _column(self, record_type: str, column: str, chunk_size: int) -> Iterator:
        """One column of the batches' records of one type, in the column's order."""
        if connection.vendor != "postgresql":
            yield from (
                TaskOutputRecord.objects.filter(
                    batch_id__in=self.batch_ids, record_type=record_type
                )
                .order_by(column)
                .values_list(column, flat=True)
                .iterator(chunk_size=chunk_size)
            )
            return
        sql = _LATERAL_RECORDS.format(
            column=column,
            batches=Batch._meta.db_table,
            records=TaskOutputRecord._meta.db_table,
        )
        with connection.chunked_cursor() as cursor:
            cursor.execute(sql, [record_type, self.batch_ids])
            while rows := cursor.fetchmany(chunk_size):
                yield from map(_first, rows)

    def tasks(self) -> Iterator[Task]:
        return next_stage_tasks(
            self.session_id,
            directory_keys=self._column(RecordType.DIRECTORY, "object_key", 2000),
            file_id_ranges=id_ranges(self._column(RecordType.FILE, "id", 20000)),
        )


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
        made = taken = 0
        # Saved TASKS_PER_INSERT at a time: memory stays bounded however large the batches.
        for tasks in _grouped(_NextStage(session_id, batch_ids).tasks(), TASKS_PER_INSERT):
            tasks_create(tasks)
            made += len(tasks)
            taken += handed_on(tasks)
        Batch.objects.filter(pk__in=batch_ids).update(pipelined=True)
        SessionState.objects.filter(pk=session_id).update(
            items_processed=F("items_processed") + taken,
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
