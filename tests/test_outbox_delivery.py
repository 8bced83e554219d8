"""The outbox hands every event on at least once: a dispatch that dies is redone."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from enumeration.models import DomainEvent
from enumeration.services.events import events_dispatch
from tests.fixtures import event_handlers, workers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def collected(settings):
    settings.CENSUS_EVENT_HANDLERS = ["tests.fixtures.event_handlers.collect"]
    event_handlers.COLLECTED.clear()
    yield event_handlers.COLLECTED
    event_handlers.COLLECTED.clear()


def _event(name: str) -> DomainEvent:
    return DomainEvent.objects.create(
        event_type="TaskCreated", aggregate_type="task", aggregate_id=name, payload={}
    )


def test_a_dispatch_killed_with_the_event_in_hand_is_redone_once_its_claim_expires(
    tmp_path: Path, collected
) -> None:
    # Given two events, and a dispatcher process whose handler hangs once it has the first
    first, second = _event("first"), _event("second")
    handled, log = tmp_path / "handled", tmp_path / "dispatcher.log"
    errors = log.open("w")
    dispatcher = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from enumeration.services.events import events_dispatch; events_dispatch()",
        ],
        cwd=workers.REPO,
        env={
            **os.environ,
            "DATABASE_URL": workers.test_database_url(),
            "CENSUS_EVENT_HANDLERS": "tests.fixtures.event_handlers.hang_after_noting",
            "CENSUS_TEST_HANDLED": str(handled),
            "CENSUS_EVENT_CLAIM_SECONDS": "60",
        },
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )
    try:
        deadline = time.monotonic() + 60
        while not (handled.exists() and handled.read_text()):
            assert dispatcher.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the dispatcher never reached its handler"
            time.sleep(0.05)
    finally:
        # When it is killed there (or the test gave up on it)
        dispatcher.send_signal(signal.SIGKILL)
        dispatcher.wait(timeout=30)
        errors.close()

    # Then both events are claimed and neither is marked dispatched
    assert handled.read_text() == f"{first.pk}\n"
    for event in (first, second):
        event.refresh_from_db()
        assert event.dispatched_at is None and event.claimed_until > timezone.now()

    # And the sweep leaves them while the claim holds
    assert events_dispatch() == 0
    assert collected == []

    # And hands both on once it has expired (made to, rather than waited for), then marks them
    # dispatched: at least once
    DomainEvent.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert events_dispatch() == 2
    assert [e["id"] for e in collected] == [first.pk, second.pk]
    for event in (first, second):
        event.refresh_from_db()
        assert event.dispatched_at is not None and event.attempts == 2
    # And never again
    assert events_dispatch() == 0
    assert len(collected) == 2


def test_a_dispatch_that_outlived_its_claim_still_marks_what_it_handed_on(settings) -> None:
    # Given a dispatch whose handler is so slow that its claim runs out, and another dispatch
    # takes the event meanwhile (and has not finished with it)
    settings.CENSUS_EVENT_HANDLERS = ["tests.test_outbox_delivery.slow_handler"]
    event = _event("slow")

    # When the first dispatch finishes
    assert events_dispatch() == 1

    # Then the event is marked dispatched, though another holds it now: left undispatched, it
    # would be taken back and handed on again for ever
    event.refresh_from_db()
    assert event.claimed_by == "a later dispatch"
    assert event.dispatched_at is not None
    DomainEvent.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert events_dispatch() == 0


def slow_handler(envelope: dict) -> None:
    """Runs past the claim: by the time it returns, a later dispatch holds the event."""
    DomainEvent.objects.filter(pk=envelope["id"]).update(
        claimed_by="a later dispatch", claimed_until=timezone.now() + timedelta(seconds=60)
    )


def test_an_event_claimed_by_a_dispatch_is_not_handed_on_by_another(collected) -> None:
    # Given an event a running dispatch holds (its claim stamped, its handlers not done)
    event = _event("held")
    DomainEvent.objects.filter(pk=event.pk).update(
        claimed_by="another-dispatch",
        claimed_until=timezone.now() + timedelta(seconds=60),
    )

    # When another dispatcher runs, on its ids or as the sweep
    assert events_dispatch(ids=[event.pk]) == 0
    assert events_dispatch() == 0

    # Then it was left to its holder, who marks it when done
    assert collected == []
    event.refresh_from_db()
    assert event.dispatched_at is None and event.claimed_by == "another-dispatch"


def test_a_handler_that_raises_does_not_keep_the_event_or_stop_the_others(
    collected, settings
) -> None:
    settings.CENSUS_EVENT_HANDLERS = [
        "enumeration.services.events.log_event",
        "tests.test_outbox_delivery.broken_handler",
        "tests.fixtures.event_handlers.collect",
    ]
    event = _event("with a broken handler")

    assert events_dispatch() == 1

    assert [e["id"] for e in collected] == [event.pk]
    event.refresh_from_db()
    assert event.dispatched_at is not None
    assert events_dispatch() == 0


def broken_handler(envelope: dict) -> None:
    raise RuntimeError("this handler is broken")
