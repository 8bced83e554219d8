"""The outbox: domain events written with the change that caused them, dispatched after commit."""

import logging
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from enumeration.models import DomainEvent

logger = logging.getLogger(__name__)

TASK_CREATED = "TaskCreated"
SESSION_FINISHED = "SessionFinished"

EventHandler = Callable[[dict], None]


def _handlers() -> list[EventHandler]:
    return [import_string(path) for path in getattr(settings, "CENSUS_EVENT_HANDLERS", [])]


def events_record(events: Iterable[DomainEvent]) -> list[DomainEvent]:
    """Write events in the caller's transaction; dispatch them once it commits."""
    created = DomainEvent.objects.bulk_create(list(events))
    if created:
        ids = [event.pk for event in created if event.pk is not None]
        transaction.on_commit(lambda: events_dispatch(ids=ids), robust=True)
    return created


def events_dispatch(*, ids: list[int] | None = None, limit: int = 500) -> int:
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
