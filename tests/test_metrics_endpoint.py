"""/metrics: Prometheus text computed from the database."""

from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

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
