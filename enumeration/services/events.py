"""The outbox: domain events written with the change that caused them, dispatched after commit."""

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from enumeration.models import DomainEvent

logger = logging.getLogger(__name__)

TASK_CREATED = "TaskCreated"
SESSION_FINISHED = "SessionFinished"
SESSION_DELETED = "SessionDeleted"
DISPATCH_CHUNK = 500

EventHandler = Callable[[dict], None]


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
    """Hand undispatched events to the handlers, each event at most once.

    An event is claimed by the one UPDATE that stamps ``dispatched_at``, so concurrent
    dispatchers never hand the same event on twice. ``ids`` limits the run to the events one
    transaction wrote (the fast path right after commit); without it, this is the periodic sweep
    for events whose dispatch died with its process.
    """
    pending = DomainEvent.objects.filter(dispatched_at__isnull=True)
    if ids is not None:
        pending = pending.filter(pk__in=ids)
    candidates = list(pending.order_by("pk").values_list("pk", flat=True)[:limit])
    if not candidates:
        return 0
    now = timezone.now()
    DomainEvent.objects.filter(pk__in=candidates, dispatched_at__isnull=True).update(
        dispatched_at=now, attempts=F("attempts") + 1
    )
    claimed = DomainEvent.objects.filter(pk__in=candidates, dispatched_at=now).order_by("pk")
    handlers = _handlers()
    dispatched = 0
    for event in claimed:
        envelope = event.envelope()
        for handler in handlers:
            try:
                handler(envelope)
            except Exception:
                logger.exception("event handler failed", extra={"event_id": event.pk})
        dispatched += 1
    return dispatched


def log_event(envelope: dict) -> None:
    """The default handler: one structured log line per event."""
    logger.info(
        "domain event %s",
        envelope["type"],
        extra={"event": envelope, "session_id": envelope["payload"].get("session_id")},
    )
