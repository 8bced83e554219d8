"""The outbox: domain events written with the change that caused them, dispatched after commit."""

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.module_loading import import_string

from enumeration.models import DomainEvent

logger = logging.getLogger(__name__)

TASK_CREATED = "TaskCreated"
SESSION_FINISHED = "SessionFinished"
SESSION_DELETED = "SessionDeleted"
DISPATCH_CHUNK = 500

EventHandler = Callable[[dict], None]


@dataclass
class PruneResult:
    events: int = 0  # deleted
    unfinished: bool = False  # out of time with more to delete: the next run goes on


def _handlers() -> list[EventHandler]:
    return [import_string(path) for path in getattr(settings, "CENSUS_EVENT_HANDLERS", [])]


# Inside `events_deferred`: the ids of the events recorded so far, dispatched when it ends.
_deferred: ContextVar[list[int] | None] = ContextVar("census_events_deferred", default=None)


def events_record(events: Iterable[DomainEvent]) -> list[DomainEvent]:
    """Write events in the caller's transaction; dispatch them once it commits (or, inside
    `events_deferred`, when that block ends)."""
    created = DomainEvent.objects.bulk_create(list(events))
    if created:
        ids = [event.pk for event in created if event.pk is not None]
        deferred = _deferred.get()
        if deferred is not None:
            deferred.extend(ids)
        else:
            transaction.on_commit(lambda: _dispatch_chunked(ids), robust=True)
    return created


def _dispatch_chunked(ids: list[int]) -> None:
    """Dispatch the events of ``ids``, ``DISPATCH_CHUNK`` at a time. A chunk that fails leaves
    itself and the rest to the periodic sweep."""
    for start in range(0, len(ids), DISPATCH_CHUNK):
        try:
            events_dispatch(ids=ids[start : start + DISPATCH_CHUNK], limit=DISPATCH_CHUNK)
        except Exception:
            logger.exception("event dispatch failed; the sweep will retry")
            return


@contextmanager
def events_deferred() -> Iterator[None]:
    """Dispatch the events recorded inside the block once, when it ends, instead of after each
    of its commits (a task that commits many small groups makes many events). The block must
    not end inside a transaction; events whose transaction rolled back do not exist and are
    not dispatched. A dispatch that dies here is the periodic sweep's to finish."""
    ids: list[int] = []
    token = _deferred.set(ids)
    try:
        yield
    finally:
        _deferred.reset(token)
        _dispatch_chunked(ids)


def events_dispatch(*, ids: list[int] | None = None, limit: int = DISPATCH_CHUNK) -> int:
    """Hand undispatched events to the handlers, each event at least once.

    A dispatch claims its events for ``CENSUS_EVENT_CLAIM_SECONDS`` with one UPDATE that stamps
    its own token, so concurrent dispatchers never hand the same event on together; it stamps
    ``dispatched_at`` once every handler has had them. A dispatch that dies in between (its
    process killed, its database gone) leaves them claimed: once the claim expires the sweep
    hands them on again, so a handler may see an event twice and should be idempotent by its
    id. A handler that raises is logged; the event counts as handed on. ``ids`` limits the run
    to the events one transaction wrote (the fast path right after commit); without it, this is
    the periodic sweep. Claims are stamped and compared with the database's clock, so a worker
    whose own clock runs ahead cannot take a live claim.
    """
    free = Q(dispatched_at__isnull=True) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=Now())
    )
    pending = DomainEvent.objects.filter(free)
    if ids is not None:
        pending = pending.filter(pk__in=ids)
    candidates = list(pending.order_by("pk").values_list("pk", flat=True)[:limit])
    if not candidates:
        return 0
    token = uuid.uuid4().hex
    claim = timedelta(seconds=settings.CENSUS["EVENT_CLAIM_SECONDS"])
    DomainEvent.objects.filter(free, pk__in=candidates).update(
        claimed_by=token,
        claimed_until=ExpressionWrapper(Now() + claim, output_field=DateTimeField()),
        attempts=F("attempts") + 1,
    )
    claimed = list(DomainEvent.objects.filter(pk__in=candidates, claimed_by=token).order_by("pk"))
    handlers = _handlers()
    for event in claimed:
        envelope = event.envelope()
        for handler in handlers:
            try:
                handler(envelope)
            except Exception:
                logger.exception("event handler failed", extra={"event_id": event.pk})
    # Whoever holds them now: had this dispatch outlived its claim, another took them and hands
    # them on again (at least once); left undispatched, they would be taken back for ever.
    DomainEvent.objects.filter(pk__in=[e.pk for e in claimed], dispatched_at__isnull=True).update(
        dispatched_at=timezone.now()
    )
    return len(claimed)


def log_event(envelope: dict) -> None:
    """The default handler: one structured log line per event."""
    logger.info(
        "domain event %s",
        envelope["type"],
        extra={"event": envelope, "session_id": envelope["payload"].get("session_id")},
    )


def events_prune(
    *, older_than: timedelta, chunk_rows: int, max_seconds: float | None = None
) -> PruneResult:
    """Delete the events dispatched more than ``older_than`` ago, oldest first, ``chunk_rows``
    per transaction, for at most ``max_seconds`` (at least one chunk: each run gets somewhere).
    An event not dispatched yet stays, however old: deleting it would lose it."""
    if older_than < timedelta(0):
        raise ValueError("an event's age cannot be negative")
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    # Oldest dispatch first, along its index; a subquery, not a list of ids: SQLite binds at
    # most 32,766 parameters and the chunk has no such bound.
    old = DomainEvent.objects.filter(dispatched_at__lt=timezone.now() - older_than)
    result = PruneResult()
    while True:
        chunk = old.order_by("dispatched_at").values("pk")[:chunk_rows]
        deleted = DomainEvent.objects.filter(pk__in=chunk).delete()[0]
        result.events += deleted
        if deleted < chunk_rows:
            break
        if deadline is not None and time.monotonic() >= deadline:
            result.unfinished = True
            break
    if result.events:
        logger.info("outbox: %d dispatched events deleted", result.events)
    return result


def events_prune_expired(*, max_seconds: float | None = None) -> PruneResult:
    """The outbox retention job: CENSUS_EVENT_RETENTION_DAYS (0 keeps every event)."""
    cfg = settings.CENSUS
    if not cfg["EVENT_RETENTION_DAYS"]:
        return PruneResult()
    return events_prune(
        older_than=timedelta(days=cfg["EVENT_RETENTION_DAYS"]),
        chunk_rows=cfg["RETENTION_CHUNK"],
        max_seconds=max_seconds,
    )
