"""The health monitor (seed 003 §3): failures counted per device within a window, deactivation at
the threshold, counted atomically however many workers report at once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from nms.choices import DeviceStatus, FailureReason
from nms.models import Device, DeviceEvent
from nms.services.health import device_failure_record, device_failures_record

pytest_plugins = ["tests.nms.fixtures_monitoring"]


def failures_of(device: Device) -> list[DeviceEvent]:
    return list(DeviceEvent.objects.filter(device=device, kind="failure").order_by("occurred_at"))


@pytest.mark.django_db
def test_failures_within_the_window_add_up(make_devices, nms_settings):
    nms_settings(FAILURE_WINDOW_SECONDS=60, FAILURE_THRESHOLD=5)
    (device,) = make_devices(["127.0.0.1"])
    start = timezone.now()
    for seconds in (0, 30, 80):  # each within 60 s of the previous one
        device_failure_record(
            device_id=device.pk,
            reason=FailureReason.POLL,
            detail="refused",
            occurred_at=start + timedelta(seconds=seconds),
        )
    device.refresh_from_db()
    assert device.failure_count == 3
    assert device.last_failure_at == start + timedelta(seconds=80)
    events = failures_of(device)
    assert [(e.reason, e.detail) for e in events] == [("poll", "refused")] * 3


@pytest.mark.django_db
def test_a_failure_after_the_window_starts_again_at_one(make_devices, nms_settings):
    nms_settings(FAILURE_WINDOW_SECONDS=60, FAILURE_THRESHOLD=3)
    (device,) = make_devices(["127.0.0.1"])
    start = timezone.now()
    device_failure_record(device_id=device.pk, reason="ping", occurred_at=start)
    device_failure_record(
        device_id=device.pk, reason="ping", occurred_at=start + timedelta(seconds=10)
    )
    # When the third comes 61 s after the second
    outcome = device_failure_record(
        device_id=device.pk, reason="ping", occurred_at=start + timedelta(seconds=71)
    )
    device.refresh_from_db()
    # Then the count restarts and the device stays active
    assert device.failure_count == 1
    assert device.status == DeviceStatus.ACTIVE
    assert outcome.deactivated == []


@pytest.mark.django_db
def test_threshold_deactivates_resets_the_count_and_records_the_change(make_devices, nms_settings):
    nms_settings(FAILURE_WINDOW_SECONDS=60, FAILURE_THRESHOLD=3)
    (device, healthy) = make_devices(["127.0.0.1", "127.0.0.2"])
    for _ in range(2):
        assert device_failure_record(device_id=device.pk, reason="plugin").deactivated == []
    outcome = device_failure_record(device_id=device.pk, reason="poll", detail="401")
    assert outcome.deactivated == [device.pk]
    device.refresh_from_db()
    assert device.status == DeviceStatus.INACTIVE
    assert device.schedule_anchor is None  # out of the schedule
    assert device.failure_count == 0
    change = DeviceEvent.objects.get(device=device, kind="status")
    assert (change.from_status, change.to_status) == ("active", "inactive")
    assert "3 failures within 60s" in change.detail
    assert len(failures_of(device)) == 3
    # And the other device is untouched
    healthy.refresh_from_db()
    assert (healthy.status, healthy.failure_count) == (DeviceStatus.ACTIVE, 0)


@pytest.mark.django_db
def test_failures_of_an_inactive_device_are_not_counted(make_devices):
    (device,) = make_devices(["127.0.0.1"], status=DeviceStatus.INACTIVE)
    outcome = device_failure_record(device_id=device.pk, reason="ping")
    assert outcome.ignored == [device.pk] and outcome.recorded == []
    device.refresh_from_db()
    assert device.failure_count == 0
    assert not failures_of(device)


@pytest.mark.django_db
def test_a_batch_counts_each_device_once_with_its_own_detail(make_devices):
    devices = make_devices([f"127.0.0.{i}" for i in range(1, 6)])
    outcome = device_failures_record(
        failures={device.pk: f"detail {device.ip}" for device in devices}, reason="ping"
    )
    assert outcome.recorded == sorted(device.pk for device in devices)
    assert {e.detail for e in DeviceEvent.objects.filter(kind="failure")} == {
        f"detail 127.0.0.{i}" for i in range(1, 6)
    }


def test_unknown_reason_is_refused():
    with pytest.raises(ValueError, match="unknown failure reason"):
        device_failures_record(failures={1: ""}, reason="bored")


@pytest.mark.django_db(transaction=True)
def test_concurrent_reports_count_exactly_and_deactivate_once(make_devices, nms_settings):
    # Given a device and a threshold of 5
    nms_settings(FAILURE_WINDOW_SECONDS=600, FAILURE_THRESHOLD=5)
    (device,) = make_devices(["127.0.0.1"])
    barrier = threading.Barrier(12)
    errors: list[BaseException] = []

    def report() -> None:
        try:
            barrier.wait()
            device_failure_record(device_id=device.pk, reason="poll")
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    # When 12 workers report a failure at the same moment
    threads = [threading.Thread(target=report) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Then exactly 5 were counted, the device was deactivated once, the rest were dropped
    assert not errors
    device.refresh_from_db()
    assert device.status == DeviceStatus.INACTIVE
    assert DeviceEvent.objects.filter(device=device, kind="status").count() == 1
    assert DeviceEvent.objects.filter(device=device, kind="failure").count() == 5
