"""Outbox retention: dispatched events are deleted after their replay window, never before
their dispatch."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from enumeration import tasks
from enumeration.models import DomainEvent
from enumeration.services import events
from enumeration.services.events import events_prune, events_prune_expired

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parent.parent


def _events(count: int, *, dispatched_days_ago: float | None, occurred_days_ago: float = 60):
    now = timezone.now()
    dispatched = None if dispatched_days_ago is None else now - timedelta(days=dispatched_days_ago)
    return DomainEvent.objects.bulk_create(
        DomainEvent(
            event_type="TaskCreated",
            aggregate_type="task",
            aggregate_id=f"t{i}",
            occurred_at=now - timedelta(days=occurred_days_ago),
            dispatched_at=dispatched,
        )
        for i in range(count)
    )


def _ids(rows) -> set[int]:
    return {row.pk for row in rows}


def test_events_dispatched_before_the_window_go_and_the_rest_stay(settings) -> None:
    # Given events dispatched 40 days ago, 10 days ago, and old ones never dispatched (their
    # handlers keep failing), with a 30-day window
    settings.CENSUS = {**settings.CENSUS, "EVENT_RETENTION_DAYS": 30, "RETENTION_CHUNK": 3}
    expired = _events(7, dispatched_days_ago=40)
    recent = _events(2, dispatched_days_ago=10)
    undispatched = _events(2, dispatched_days_ago=None, occurred_days_ago=90)

    # When the outbox retention job runs
    with CaptureQueriesContext(connection) as queries:
        result = events_prune_expired()

    # Then the expired events are gone, three per transaction, and the others are all there
    assert (result.events, result.unfinished) == (7, False)
    assert set(DomainEvent.objects.values_list("pk", flat=True)) == _ids(recent) | _ids(
        undispatched
    )
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 3 + 3 + 1
    assert not _ids(expired) & set(DomainEvent.objects.values_list("pk", flat=True))


def test_a_window_of_zero_days_keeps_every_event(settings) -> None:
    settings.CENSUS = {**settings.CENSUS, "EVENT_RETENTION_DAYS": 0}
    kept = _events(3, dispatched_days_ago=400)

    assert events_prune_expired().events == 0
    assert DomainEvent.objects.count() == len(kept)


def test_a_run_out_of_time_stops_after_one_chunk_and_its_task_hands_on_the_rest(
    settings, runs_without_budget
) -> None:
    # Given 10 expired events, 4 per transaction, and a task with no time to spend
    settings.CENSUS = {**settings.CENSUS, "EVENT_RETENTION_DAYS": 1, "RETENTION_CHUNK": 4}
    _events(10, dispatched_days_ago=2)
    runs = runs_without_budget(events, "events_prune_expired")

    # When the retention task runs (its re-sends run in process, as a worker would take them)
    tasks.prune_events.delay()

    # Then each run deleted one chunk and handed on, until none was left
    assert [r.events for r in runs] == [4, 4, 2]
    assert [r.unfinished for r in runs] == [True, True, False]
    assert not DomainEvent.objects.exists()


def test_the_oldest_dispatched_go_first_through_an_index(settings) -> None:
    # Given events dispatched 50 and 40 days ago, written newest first (ids do not follow the
    # dispatch: a sweep hands on late what a dead process had claimed)
    settings.CENSUS = {**settings.CENSUS, "EVENT_RETENTION_DAYS": 30, "RETENTION_CHUNK": 2}
    later = _events(2, dispatched_days_ago=40)
    earlier = _events(2, dispatched_days_ago=50)

    # When a run has time for one chunk only
    result = events_prune(older_than=timedelta(days=30), chunk_rows=2, max_seconds=0)

    # Then the two dispatched first went, and the run says it has more to do
    assert (result.events, result.unfinished) == (2, True)
    assert set(DomainEvent.objects.values_list("pk", flat=True)) == _ids(later)
    assert not _ids(earlier) & set(DomainEvent.objects.values_list("pk", flat=True))


def test_a_negative_age_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        events_prune(older_than=timedelta(days=-1), chunk_rows=10)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CENSUS_EVENT_RETENTION_DAYS", "-1", "must be at least 0"),
        ("CENSUS_SESSION_RETENTION_DAYS", "-30", "must be at least 0"),
        ("CENSUS_RETENTION_CHUNK", "0", "must be at least 1"),
    ],
)
def test_a_retention_setting_out_of_range_stops_start_up_saying_so(
    name: str, value: str, message: str
) -> None:
    # (A negative age would have made every session, or every dispatched event, expired.)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env={**os.environ, name: value},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert f"{name} ({value}) {message}" in result.stderr
