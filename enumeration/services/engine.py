"""The worker loop of seed 002: claim a task, list its units one by one, commit each atomically.

1. Claim the task with a lease (a conditional UPDATE: only one worker wins).
2. Skip every unit that already has a completion marker (a Batch) in this session.
3. List the next unit in sorted order; stage each streamed batch (lease checked in the same
   transaction, so a worker that lost its lease stops writing). A unit interrupted mid-listing
   keeps what it staged and passes those key hashes to the connector as an exclusion set.
4. Commit the unit: staged rows move to ``task_output_records``, its Batch is written, the
   session's counters move, staging for the unit is emptied: one transaction.
5. Every unit done: empty the task's staging, mark it COMPLETED, run the Pipeliner.
"""

import io
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.logging import log_context
from enumeration.choices import BatchStatus, RecordType, SessionStatus, TaskKind, TaskStatus
from enumeration.conf import EngineSettings, engine_settings
from enumeration.connectors import Entry, UnitUnreadable, connector_for
from enumeration.connectors.keys import decode_key, encode_key, key_hash
from enumeration.models import Batch, SessionState, StagedOutputRecord, Task, TaskOutputRecord
from enumeration.models.sessions import ACTIVE_SESSION_STATUSES

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This worker no longer holds the task: it must stop writing."""


@dataclass
class RunOutcome:
    status: str  # "completed", "skipped", "lease_lost", "failed", "retry"
    units_committed: int = 0
    units_skipped: int = 0


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# --- claim and lease ---------------------------------------------------------------------------
def task_claim(*, task_id: uuid.UUID | str, worker_id: str) -> Task | None:
    """Claim a PENDING task for ``worker_id``; None when another worker has it or it is done."""
    cfg = engine_settings()
    now = timezone.now()
    with transaction.atomic():
        won = Task.objects.filter(
            pk=task_id,
            status=TaskStatus.PENDING,
            session__status__in=ACTIVE_SESSION_STATUSES,
        ).update(
            status=TaskStatus.RUNNING,
            lease_owner=worker_id,
            lease_expires_at=now + cfg.lease,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            started_at=Coalesce(F("started_at"), now),
        )
        if not won:
            return None
        task = Task.objects.select_related("session", "session__target").get(pk=task_id)
        session = SessionState.objects.select_for_update().get(pk=task.session_id)
        if session.status in (SessionStatus.INITIALIZED, SessionStatus.STALLED):
            session.mark_in_progress()
            session.save(
                update_fields=[
                    "status",
                    "failure_reason",
                    "completed_at",
                    "started_at",
                    "last_update",
                ]
            )
        task.session = session
    return task


def _heartbeat(task_id: uuid.UUID, worker_id: str, lease: timedelta) -> None:
    """Extend the lease; raise LeaseLost when it is not ours any more. Call inside a transaction."""
    now = timezone.now()
    still_ours = Task.objects.filter(
        pk=task_id, status=TaskStatus.RUNNING, lease_owner=worker_id
    ).update(lease_expires_at=now + lease, heartbeat_at=now)
    if not still_ours:
        raise LeaseLost(f"task {task_id} is no longer leased to {worker_id}")


# --- staging -----------------------------------------------------------------------------------
_STAGED_COLUMNS = (
    "session_id",
    "task_id",
    "unit_hash",
    "record_type",
    "container",
    "object_key",
    "object_key_hash",
    "name",
    "size",
    "modified_at",
    "metadata",
)


def _csv_text(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _copy_staged(task: Task, unit_key: str, unit_hash: str, entries: list[Entry]) -> None:
    """PostgreSQL: COPY the batch into staging (CSV: an unquoted empty field is NULL)."""
    buf = io.StringIO()
    prefix = f"{task.session_id},{task.pk},{unit_hash},"
    container = _csv_text(unit_key)
    for e in entries:
        buf.write(prefix)
        buf.write(e.record_type)
        buf.write(",")
        buf.write(container)
        buf.write(",")
        buf.write(_csv_text(encode_key(e.key)))
        buf.write(",")
        buf.write(e.key_hash)
        buf.write(",")
        buf.write(_csv_text(encode_key(e.name)))
        buf.write(",")
        buf.write("" if e.size is None else str(e.size))
        buf.write(",")
        buf.write("" if e.modified_at is None else e.modified_at.isoformat())
        buf.write(",")
        buf.write(_csv_text(json.dumps(e.metadata)))
        buf.write("\n")
    buf.seek(0)
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(
            f"COPY {StagedOutputRecord._meta.db_table} ({', '.join(_STAGED_COLUMNS)}) "
            "FROM STDIN WITH (FORMAT csv)",
            buf,
        )


def _insert_staged(task: Task, unit_key: str, unit_hash: str, entries: list[Entry]) -> None:
    StagedOutputRecord.objects.bulk_create(
        [
            StagedOutputRecord(
                session_id=task.session_id,
                task_id=task.pk,
                unit_hash=unit_hash,
                record_type=e.record_type,
                container=unit_key,
                object_key=encode_key(e.key),
                object_key_hash=e.key_hash,
                name=encode_key(e.name),
                size=e.size,
                modified_at=e.modified_at,
                metadata=e.metadata,
            )
            for e in entries
        ]
    )


def _stage(
    task: Task,
    worker_id: str,
    cfg: EngineSettings,
    unit_key: str,
    unit_hash: str,
    entries: list[Entry],
) -> None:
    with transaction.atomic():
        _heartbeat(task.pk, worker_id, cfg.lease)
        if connection.vendor == "postgresql":
            _copy_staged(task, unit_key, unit_hash, entries)
        else:
            _insert_staged(task, unit_key, unit_hash, entries)


# --- commit ------------------------------------------------------------------------------------
def _db(value: uuid.UUID) -> object:
    """A UUID as the backend stores it (SQLite keeps 32 hex characters, PostgreSQL a uuid)."""
    return Task._meta.pk.get_db_prep_value(value, connection)


_MOVE_COLUMNS = (
    "session_id, task_id, record_type, container, object_key, object_key_hash, name, size, "
    "modified_at, metadata"
)


def _commit_unit(task: Task, worker_id: str, cfg: EngineSettings, batch: Batch) -> None:
    """One transaction: staged rows -> task_output_records, the Batch marker, the counters."""
    staged = StagedOutputRecord._meta.db_table
    output = TaskOutputRecord._meta.db_table
    with transaction.atomic():
        _heartbeat(task.pk, worker_id, cfg.lease)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT record_type, COUNT(*) FROM {staged} "
                "WHERE task_id = %s AND unit_hash = %s GROUP BY record_type",
                [_db(task.pk), batch.unit_hash],
            )
            by_type = dict(cursor.fetchall())
            total = sum(by_type.values())
            if batch.status == BatchStatus.IN_PROGRESS:
                batch.mark_successful(total)
            batch.save(force_insert=True)
            cursor.execute(
                f"INSERT INTO {output} ({_MOVE_COLUMNS}, batch_id) "
                f"SELECT {_MOVE_COLUMNS}, %s FROM {staged} "
                "WHERE task_id = %s AND unit_hash = %s "
                "ON CONFLICT DO NOTHING",
                [_db(batch.pk), _db(task.pk), batch.unit_hash],
            )
            moved = cursor.rowcount
            cursor.execute(
                f"DELETE FROM {staged} WHERE task_id = %s AND unit_hash = %s",
                [_db(task.pk), batch.unit_hash],
            )
        if moved != total:
            logger.warning(
                "unit %s: %d staged records were already committed", batch.unit, total - moved
            )
        task.session.process_completed_batch(
            failed=batch.status == BatchStatus.FAILED,
            files=by_type.get(RecordType.FILE, 0),
            directories=by_type.get(RecordType.DIRECTORY, 0),
            items=moved,
        )


# --- the loop ----------------------------------------------------------------------------------
def _pause_for_tests(cfg: EngineSettings, unit: bytes, batches_staged: int) -> None:
    """Test hook: pause one listing once, so that a test can kill the worker in the middle of it.

    ``CENSUS_TEST_PAUSE_LISTING=<dir name>:<batches>:<seconds>:<marker file>``.
    """
    if not cfg.test_pause_listing:
        return
    name, batches, seconds, marker = cfg.test_pause_listing.split(":", 3)
    if os.path.basename(unit) != os.fsencode(name) or batches_staged != int(batches):
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # paused once already: the resumed listing runs through
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    logger.warning("test hook: pausing the listing of %s for %ss", encode_key(unit), seconds)
    time.sleep(float(seconds))


def _process_unit(task: Task, worker_id: str, cfg: EngineSettings, unit: bytes) -> Batch:
    unit_key = encode_key(unit)
    unit_hash = key_hash(unit)
    already_staged = set(
        StagedOutputRecord.objects.filter(task=task, unit_hash=unit_hash).values_list(
            "object_key_hash", flat=True
        )
    )
    batch = Batch(
        session_id=task.session_id,
        task=task,
        unit=unit_key,
        unit_hash=unit_hash,
        items_resumed=len(already_staged),
        checkpoint={"unit": unit_key},
    )
    batch.mark_timeline_started()
    if already_staged:
        logger.info(
            "resuming %s: %d entries already staged are excluded", unit_key, len(already_staged)
        )
    connector = connector_for(task.session.source_type)
    staged_batches = 0
    try:
        for entries in connector.list_unit(
            unit, exclude=already_staged, batch_size=cfg.listing_batch_size
        ):
            _stage(task, worker_id, cfg, unit_key, unit_hash, entries)
            staged_batches += 1
            batch.expected_items += len(entries)
            _pause_for_tests(cfg, unit, staged_batches)
    except UnitUnreadable as exc:
        logger.warning("unit %s could not be listed: %s", unit_key, exc)
        batch.mark_failed(exc)
    batch.expected_items += len(already_staged)
    _commit_unit(task, worker_id, cfg, batch)
    return batch


def _finish_task(task: Task, worker_id: str) -> None:
    with transaction.atomic():
        done = Task.objects.filter(
            pk=task.pk, status=TaskStatus.RUNNING, lease_owner=worker_id
        ).update(
            status=TaskStatus.COMPLETED,
            completed_at=timezone.now(),
            lease_owner="",
            lease_expires_at=None,
        )
        if not done:
            raise LeaseLost(f"task {task.pk} is no longer leased to {worker_id}")
        StagedOutputRecord.objects.filter(task=task).delete()


def task_run(*, task_id: uuid.UUID | str, worker_id: str | None = None) -> RunOutcome:
    """Run one DISCOVERY_ENUMERATE task to completion. Safe to call for any message, any time."""
    from enumeration.services.pipeliner import pipeline_advance
    from enumeration.services.sessions import session_refresh_status, task_release_after_error

    worker_id = worker_id or worker_identity()
    task = task_claim(task_id=task_id, worker_id=worker_id)
    if task is None:
        return RunOutcome("skipped")
    cfg = engine_settings()
    outcome = RunOutcome("completed")
    with log_context(session_id=task.session_id, task_id=task.pk):
        if task.kind != TaskKind.DISCOVERY_ENUMERATE:
            raise ValueError(f"task {task.pk} is a {task.kind} task, not an enumeration")
        units = sorted(decode_key(path) for path in task.paths_to_scan)
        done = set(
            Batch.objects.filter(
                session_id=task.session_id, unit_hash__in=[key_hash(u) for u in units]
            ).values_list("unit_hash", flat=True)
        )
        try:
            for unit in units:
                if key_hash(unit) in done:
                    outcome.units_skipped += 1
                    continue
                _process_unit(task, worker_id, cfg, unit)
                outcome.units_committed += 1
                # The Pipeliner runs right after each commit, so the next stage starts early.
                pipeline_advance(session_id=task.session_id)
            _finish_task(task, worker_id)
        except LeaseLost as exc:
            logger.warning("stopping: %s", exc)
            return RunOutcome("lease_lost", outcome.units_committed, outcome.units_skipped)
        except Exception as exc:
            logger.exception("task failed")
            outcome.status = task_release_after_error(
                task_id=task.pk, worker_id=worker_id, error=exc
            )
            return outcome
        logger.info(
            "task completed: %d units committed, %d already done",
            outcome.units_committed,
            outcome.units_skipped,
        )
        pipeline_advance(session_id=task.session_id)
        session_refresh_status(session_id=task.session_id)
    return outcome
