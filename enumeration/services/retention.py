"""Retention: finished sessions are deleted once they are old enough, each target's newest kept.

A session of a million files has a million output records, so a session is deleted in chunks,
each in its own short transaction: its batches with their records, a chunk of rows at a time,
then its tasks and the session itself. The session is marked first (``purge_started_at``), so a
deletion that dies half way is finished by the next run, and a half-deleted session can never
be resumed or mistaken for a whole one.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from enumeration.models import Batch, DomainEvent, SessionState, Task, TaskOutputRecord
from enumeration.models.sessions import FINISHED_SESSION_STATUSES
from enumeration.services.events import SESSION_DELETED, events_record

logger = logging.getLogger(__name__)


class SessionNotFinished(Exception):
    """Only a finished session can be deleted: an active one still has work under way."""


@dataclass
class PurgeResult:
    sessions: int = 0  # deleted to the end
    records: int = 0  # output records deleted
    unfinished: int = 0  # marked, not yet deleted to the end (``max_chunks`` reached)


def sessions_expired(*, older_than: timedelta, keep_latest: int) -> QuerySet[SessionState]:
    """Finished sessions completed before ``older_than`` ago, other than each target's
    ``keep_latest`` most recently completed ones (what the target looks like now)."""
    ranked = (
        SessionState.objects.filter(
            status__in=FINISHED_SESSION_STATUSES, purge_started_at__isnull=True
        )
        .annotate(
            newest=Window(
                RowNumber(),
                partition_by=[F("target_id")],
                order_by=[F("completed_at").desc(nulls_last=True), F("created_at").desc()],
            )
        )
        .filter(newest__gt=keep_latest)
    )
    # The age is filtered outside: inside, Django would filter before ranking, and the newest
    # sessions of a target would be ranked among the old ones only.
    return SessionState.objects.filter(
        pk__in=ranked.values("pk"), completed_at__lt=timezone.now() - older_than
    )


def session_purge_start(*, session_id: uuid.UUID | str) -> SessionState:
    """Mark a finished session for deletion (idempotent); the deletion itself is
    ``session_purge``'s. Raises SessionNotFinished for an active session."""
    with transaction.atomic():
        session = SessionState.objects.select_for_update().get(pk=session_id)
        if session.status not in FINISHED_SESSION_STATUSES:
            raise SessionNotFinished(
                f"Session {session.pk} is {session.status}; only a finished session "
                "(COMPLETED, PARTIALLY_COMPLETED or FAILED) can be deleted."
            )
        if session.purge_started_at is None:
            session.purge_started_at = timezone.now()
            session.save(update_fields=["purge_started_at"])
    return session


def _batch_chunks(session_id: uuid.UUID, rows: int) -> tuple[list[uuid.UUID], int]:
    """Ids of the session's next batches holding about ``rows`` records together (at least one
    batch, however large), and how many records they hold."""
    chunk: list[uuid.UUID] = []
    total = 0
    for batch_id, items in (
        Batch.objects.filter(session_id=session_id)
        .order_by("pk")
        .values_list("pk", "items_processed")[: max(rows, 1)]
    ):
        if chunk and total + items > rows:
            break
        chunk.append(batch_id)
        total += items
    return chunk, total


def _records_delete_some(batch_id: uuid.UUID, rows: int) -> int:
    """Delete up to ``rows`` records of one batch, found by the batch's key; how many went."""
    some = TaskOutputRecord.objects.filter(batch_id=batch_id).values("pk")[:rows]
    _, deleted = TaskOutputRecord.objects.filter(pk__in=some).delete()
    return deleted.get("enumeration.TaskOutputRecord", 0)


def session_purge(
    *,
    session_id: uuid.UUID | str,
    chunk_rows: int,
    max_chunks: int | None = None,
    deadline: float | None = None,
) -> tuple[bool, int]:
    """Delete a marked session, ``chunk_rows`` output records per transaction. Returns (whether
    it is gone, records deleted). Stops after ``max_chunks`` transactions, or after the first
    transaction that ends past ``deadline`` (``time.monotonic()``), when given; calling it again
    goes on where it stopped."""
    session = SessionState.objects.filter(pk=session_id).first()
    if session is None:
        return True, 0  # deleted meanwhile by another run
    if session.purge_started_at is None:
        raise ValueError(f"session {session.pk} is not marked for deletion")
    records = 0
    chunks = 0
    while True:
        if max_chunks is not None and chunks >= max_chunks:
            return False, records
        if chunks and deadline is not None and time.monotonic() >= deadline:
            return False, records
        batch_ids, held = _batch_chunks(session.pk, chunk_rows)
        if not batch_ids:
            break
        with transaction.atomic():
            if held > chunk_rows and (some := _records_delete_some(batch_ids[0], chunk_rows)):
                # One batch of more than a chunk (a directory of millions of files): its records
                # go a chunk per transaction first, not in one DELETE of them all.
                records += some
                chunks += 1
                continue
            # Deleting a Batch deletes its records (on_delete=CASCADE, one DELETE by batch id,
            # on the records' (batch, key hash) key).
            _, deleted = Batch.objects.filter(pk__in=batch_ids).delete()
        records += deleted.get("enumeration.TaskOutputRecord", 0)
        chunks += 1
    # Then its tasks (with what they staged, by task), a thousand at a time: a CLASSIFICATION
    # task carries a thousand record ids. Last the session itself.
    while task_ids := list(
        Task.objects.filter(session_id=session.pk).values_list("pk", flat=True)[:1000]
    ):
        with transaction.atomic():
            Task.objects.filter(pk__in=task_ids).delete()
    with transaction.atomic():
        if SessionState.objects.filter(pk=session.pk).delete()[0]:
            events_record(
                [
                    DomainEvent(
                        event_type=SESSION_DELETED,
                        aggregate_type="session",
                        aggregate_id=str(session.pk),
                        payload={
                            "session_id": str(session.pk),
                            "target_id": str(session.target_id),
                            "items_found": session.items_found,
                        },
                    )
                ]
            )
    logger.info(
        "session deleted: %d output records",
        records,
        extra={"session_id": str(session.pk)},
    )
    return True, records


def sessions_purge_marked(
    *,
    chunk_rows: int | None = None,
    max_chunks: int | None = None,
    max_seconds: float | None = None,
) -> PurgeResult:
    """Delete every session marked for deletion, oldest mark first; ``max_chunks`` bounds the
    transactions spent on each, ``max_seconds`` the time spent in all (at least one transaction
    is always spent: each run gets somewhere). The rest is the next run's."""
    chunk_rows = chunk_rows or settings.CENSUS["RETENTION_CHUNK"]
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    result = PurgeResult()
    marked = SessionState.objects.filter(purge_started_at__isnull=False).order_by(
        "purge_started_at"
    )
    for session_id in marked.values_list("pk", flat=True):
        if result.records and deadline is not None and time.monotonic() >= deadline:
            result.unfinished += 1  # not started: out of time
            continue
        gone, records = session_purge(
            session_id=session_id, chunk_rows=chunk_rows, max_chunks=max_chunks, deadline=deadline
        )
        result.records += records
        if gone:
            result.sessions += 1
        else:
            result.unfinished += 1
    if result.sessions or result.unfinished:
        logger.info(
            "retention: %d sessions deleted (%d output records), %d still being deleted",
            result.sessions,
            result.records,
            result.unfinished,
        )
    return result


def sessions_purge_expired(
    *, max_chunks: int | None = None, max_seconds: float | None = None
) -> PurgeResult:
    """The retention job: mark the sessions past CENSUS_SESSION_RETENTION_DAYS (none when it is
    0), then delete every marked session, including deletions an earlier run left half done."""
    cfg = settings.CENSUS
    if cfg["SESSION_RETENTION_DAYS"]:
        expired = sessions_expired(
            older_than=timedelta(days=cfg["SESSION_RETENTION_DAYS"]),
            keep_latest=cfg["SESSION_RETENTION_KEEP"],
        )
        for session_id in expired.values_list("pk", flat=True):
            _mark_if_still_expired(session_id, expired)
    return sessions_purge_marked(max_chunks=max_chunks, max_seconds=max_seconds)


def _mark_if_still_expired(session_id: uuid.UUID, expired: QuerySet[SessionState]) -> bool:
    """Mark one session the retention job found expired, asking again under its lock: since
    it was listed it may have been resumed (and even finished again, now the newest of its
    target), or deleted by another run."""
    with transaction.atomic():
        session = SessionState.objects.select_for_update().filter(pk=session_id).first()
        if session is None or not expired.filter(pk=session_id).exists():
            return False
        session.purge_started_at = timezone.now()
        session.save(update_fields=["purge_started_at"])
    return True


def purge_sessions_soon() -> None:
    """Have the marked sessions deleted: by a worker; on the embedded default by this process's
    background worker (the web process's), or here in a process that has none."""
    if settings.CENSUS_IN_PROCESS_WORKER:
        from enumeration.services.inprocess import background_worker_purge_soon

        if not background_worker_purge_soon():
            sessions_purge_marked()
        return
    from enumeration.tasks import purge_sessions

    try:
        purge_sessions.apply_async(retry=False)
    except Exception:
        # The marks are in the database: the daily retention job finishes them.
        logger.warning("could not ask a worker to delete the marked sessions", exc_info=True)
