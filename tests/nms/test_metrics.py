"""The metrics service (seed 003 §7): COPY writes of JSONB rows, the latest sample, a time range,
retention in chunks, and the query endpoints (JWT)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import include, path
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.views import TokenObtainPairView

from nms.models import MetricSample
from nms.services.metrics import (
    Sample,
    metric_sample_latest,
    metric_samples_in_range,
    metric_samples_prune,
    metric_samples_write,
)

pytest_plugins = ["tests.nms.fixtures_monitoring"]

# The endpoints are tested through their own URLconf, as nms.api.urls includes them.
urlpatterns = [
    path("api/auth/token/", TokenObtainPairView.as_view()),
    path("api/nms/", include("nms.api.metrics_urls")),
]

AWKWARD = {
    "cpu_percent": 12.5,
    "path": "C:\\Windows\\System32",
    "quote": 'say "hi"\ttab\nnewline',
    "unicode": "Grüße ✓ 日本",
    "nul": "before\x00after",
    "nested": {"list": [1, None, True, {"x": "\\\\server\\share"}]},
}


@pytest.mark.django_db
def test_copy_writes_every_sample_as_jsonb_exactly(make_devices):
    (device,) = make_devices(["127.0.0.1"])
    now = timezone.now()
    written = metric_samples_write(
        samples=[
            Sample(device.pk, now - timedelta(seconds=i), {**AWKWARD, "i": i}) for i in range(500)
        ]
    )
    assert written == 500
    assert MetricSample.objects.filter(device=device).count() == 500
    latest = metric_sample_latest(device_id=device.pk)
    assert latest.collected_at == now
    # jsonb cannot hold U+0000: it is replaced, everything else comes back as sent
    assert latest.data == {**AWKWARD, "nul": "before\ufffdafter", "i": 0}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT jsonb_typeof(data), data->'nested'->'list'->3->>'x' "
            "FROM nms_metric_samples LIMIT 1"
        )
        assert cursor.fetchone() == ("object", "\\\\server\\share")


@pytest.mark.django_db
def test_a_document_postgresql_refuses_costs_only_its_own_row(make_devices, caplog):
    a, b = make_devices(["127.0.0.1", "127.0.0.2"])
    now = timezone.now()
    written = metric_samples_write(
        samples=[Sample(a.pk, now, {"ok": 1}), Sample(b.pk, now, {"bad": "\ud800"})]
    )
    assert written == 1
    assert list(MetricSample.objects.values_list("device_id", flat=True)) == [a.pk]
    assert "dropped" in caplog.text


@pytest.mark.django_db
def test_nothing_to_write_is_zero():
    assert metric_samples_write(samples=[]) == 0


@pytest.mark.django_db
def test_latest_and_range_read_one_device(make_devices):
    a, b = make_devices(["127.0.0.1", "127.0.0.2"])
    start = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    metric_samples_write(
        samples=[Sample(a.pk, start + timedelta(minutes=m), {"m": m}) for m in range(60)]
        + [Sample(b.pk, start + timedelta(minutes=90), {"m": "b"})]
    )
    assert metric_sample_latest(device_id=a.pk).data == {"m": 59}
    window = metric_samples_in_range(
        device_id=a.pk, since=start + timedelta(minutes=10), until=start + timedelta(minutes=20)
    )
    assert [s.data["m"] for s in window] == list(range(10, 20))
    assert len(metric_samples_in_range(device_id=a.pk, limit=5)) == 5
    assert metric_sample_latest(device_id=b.pk + 1000) is None


@pytest.mark.django_db
def test_retention_deletes_old_samples_in_chunks_and_keeps_the_rest(make_devices, nms_settings):
    nms_settings(METRICS_RETENTION_DAYS=7)
    devices = make_devices([f"127.0.0.{i}" for i in range(1, 4)])
    now = timezone.now()
    old = [
        Sample(d.pk, now - timedelta(days=8, minutes=i), {"i": i})
        for d in devices
        for i in range(250)
    ]
    fresh = [
        Sample(d.pk, now - timedelta(days=6, minutes=i), {"i": i})
        for d in devices
        for i in range(40)
    ]
    metric_samples_write(samples=old + fresh)
    # When the retention job runs with chunks of 100 rows per statement
    deleted = metric_samples_prune(chunk=100)
    # Then every sample older than 7 days is gone, the others stay
    assert deleted == 750
    assert MetricSample.objects.count() == 120
    assert not MetricSample.objects.filter(collected_at__lt=now - timedelta(days=7)).exists()
    assert metric_samples_prune(chunk=100) == 0


@pytest.fixture
def metrics_api(db) -> APIClient:
    get_user_model().objects.create_user("operator", password="operator-pw-1")
    client = APIClient()
    token = client.post(
        "/api/auth/token/", {"username": "operator", "password": "operator-pw-1"}, format="json"
    ).json()["access"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.mark.urls(__name__)
def test_metrics_endpoints_need_a_token(db, make_devices):
    (device,) = make_devices(["127.0.0.1"])
    assert APIClient().get(f"/api/nms/devices/{device.pk}/metrics/latest/").status_code == 401


@pytest.mark.urls(__name__)
def test_metrics_endpoints_latest_and_range(metrics_api, make_devices):
    (device,) = make_devices(["127.0.0.1"])
    assert metrics_api.get(f"/api/nms/devices/{device.pk}/metrics/latest/").status_code == 404
    assert metrics_api.get(f"/api/nms/devices/{device.pk + 99}/metrics/").status_code == 404
    start = timezone.now().replace(microsecond=0) - timedelta(minutes=30)
    metric_samples_write(
        samples=[Sample(device.pk, start + timedelta(minutes=m), {"m": m}) for m in range(30)]
    )
    latest = metrics_api.get(f"/api/nms/devices/{device.pk}/metrics/latest/")
    assert latest.status_code == 200
    assert latest.json()["data"] == {"m": 29} and latest.json()["device"] == device.pk
    since = (start + timedelta(minutes=5)).isoformat()
    until = (start + timedelta(minutes=8)).isoformat()
    window = metrics_api.get(
        f"/api/nms/devices/{device.pk}/metrics/", {"since": since, "until": until}
    )
    assert window.status_code == 200
    assert [row["data"]["m"] for row in window.json()] == [5, 6, 7]
    backwards = metrics_api.get(
        f"/api/nms/devices/{device.pk}/metrics/", {"since": until, "until": since}
    )
    assert backwards.status_code == 400 and "until" in backwards.json()


@pytest.mark.django_db
def test_nms_prune_metrics_command(make_devices):
    from io import StringIO

    from django.core.management import call_command

    (device,) = make_devices(["127.0.0.1"])
    now = timezone.now()
    metric_samples_write(
        samples=[Sample(device.pk, now - timedelta(days=3), {}), Sample(device.pk, now, {})]
    )
    out = StringIO()
    call_command("nms_prune_metrics", "--days", "2", stdout=out)
    assert out.getvalue().strip() == "deleted 1 sample(s)"
    assert MetricSample.objects.count() == 1
