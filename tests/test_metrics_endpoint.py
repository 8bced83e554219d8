"""/metrics: Prometheus text computed from the database."""

import importlib
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from enumeration.models import Batch, SessionState
from enumeration.services.inprocess import session_drain
from enumeration.services.sessions import enumerate_target

pytestmark = pytest.mark.django_db


def test_metrics_are_prometheus_text_with_sessions_by_status(
    client: Client, tmp_path: Path
) -> None:
    # Given two sessions that have not started yet
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        enumerate_target(path=str(tmp_path / name))

    # When Prometheus scrapes /metrics
    response = client.get("/metrics")

    # Then it gets the text format, with the sessions counted by status
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "census_enumeration_sessions" in text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("census_enumeration_sessions", (("status", "INITIALIZED"),))] == 2
    assert (
        samples[
            (
                "census_enumeration_tasks",
                (("kind", "DISCOVERY_ENUMERATE"), ("status", "PENDING")),
            )
        ]
        == 2
    )


def test_metrics_answer_on_an_empty_database(client: Client) -> None:
    response = client.get("/metrics")

    assert response.status_code == 200
    assert "# TYPE census_enumeration_sessions gauge" in response.content.decode()


def test_processing_time_is_the_sessions_counter_and_a_scrape_reads_no_batch(
    client: Client, tmp_path: Path
) -> None:
    # Given a finished session of a few directories
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").touch()
    session = session_drain(session_id=enumerate_target(path=str(tmp_path)).pk, idle_sleep=0)
    batches = list(Batch.objects.filter(session=session))
    assert len(batches) == 4 and session.processing_seconds > 0

    # When Prometheus scrapes /metrics
    with CaptureQueriesContext(connection) as queries:
        samples = _samples(client.get("/metrics"))

    # Then the processing time is the session's own counter, what its batches took
    elapsed = sum(b.elapsed_seconds for b in batches)
    assert session.processing_seconds == pytest.approx(elapsed)
    assert samples[("census_enumeration_unit_processing_seconds_total", ())] == pytest.approx(
        elapsed
    )
    assert samples[("census_enumeration_units_timed_total", ())] == 4
    # And the scrape read no batch: that table grows with every directory ever listed
    assert not [q["sql"] for q in queries if Batch._meta.db_table in q["sql"]]


def test_the_migration_fills_the_processing_time_of_existing_sessions(tmp_path: Path) -> None:
    # Given a finished session as it was before the counter existed
    (tmp_path / "f").touch()
    session = session_drain(session_id=enumerate_target(path=str(tmp_path)).pk, idle_sleep=0)
    SessionState.objects.filter(pk=session.pk).update(processing_seconds=0)

    # When the migration's data step runs
    backfill = importlib.import_module(
        "enumeration.migrations.0012_session_processing_seconds"
    ).sum_the_batches
    backfill(django_apps, None)

    # Then the session has its batches' time
    elapsed = sum(b.elapsed_seconds for b in Batch.objects.filter(session=session))
    assert elapsed > 0
    assert SessionState.objects.get(pk=session.pk).processing_seconds == pytest.approx(elapsed)


def _samples(response) -> dict:
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }
