"""End to end with real processes: a discovery profile finds 20 emulated Windows hosts, they are
provisioned, celery beat ticks the scheduler, a celery worker on the `poll` and `default` queues
runs the discovery, the ticks and the polls through the WinRM plugin against 20 emulated
Windows hosts on 127.0.0.1-127.0.0.20, and PostgreSQL gets the metrics. Five hosts then go away:
their devices fail their polls, reach the threshold and are deactivated, and the other fifteen
go on being polled."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from django.db.models import Count, Max
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.periodic import periodic_jobs_install
from nms.choices import DeviceStatus, RunStatus
from nms.models import Device, DeviceEvent, DiscoveryRun, MetricSample
from nms.services.devices import device_provision
from nms.services.discovery import discovery_profile_create, discovery_run_start

pytest_plugins = ["tests.nms.fixtures_monitoring"]

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers, pytest.mark.slow]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def samples_per_device() -> dict[int, int]:
    return dict(
        MetricSample.objects.values("device_id")
        .annotate(n=Count("id"))
        .values_list("device_id", "n")
    )


def test_discovery_provisioning_and_polling_of_twenty_hosts_deactivates_the_five_that_die(
    hosts_emulator, credential, monitoring_processes
):
    # Given beat ticking the scheduler every second (the job migrate installs) and a worker on
    # the poll and default queues
    periodic_jobs_install()
    tick_job = PeriodicTask.objects.get(task="nms.tasks_monitoring.scheduler_tick")
    tick_job.interval, _ = IntervalSchedule.objects.get_or_create(
        every=1, period=IntervalSchedule.SECONDS
    )
    tick_job.save()
    env = {
        "CENSUS_NMS_FPING_TIMEOUT_MS": "200",
        "CENSUS_NMS_FPING_RETRIES": "0",
        "CENSUS_NMS_POLL_DEVICE_TIMEOUT": "3",
        "CENSUS_NMS_FAILURE_THRESHOLD": "3",
        "CENSUS_NMS_FAILURE_WINDOW_SECONDS": "60",
    }
    monitoring_processes.worker("monitor", queues="poll,default", concurrency=2, env=env)
    beat = monitoring_processes.beat(env=env)
    # When a discovery profile for the 20 emulated hosts runs (on the worker)
    first, last = hosts_emulator.addresses[0], hosts_emulator.addresses[-1]
    profile = discovery_profile_create(
        name="twenty hosts",
        targets=f"{first}-{last}",
        credential_id=credential.pk,
        port=hosts_emulator.port,
    )
    run = discovery_run_start(profile_id=profile.pk)
    wait_until(
        lambda: DiscoveryRun.objects.get(pk=run.pk).status == RunStatus.COMPLETED,
        timeout=90,
        what="the discovery run",
    )
    # Then there are 20 discovered devices, named by their hosts
    devices = list(Device.objects.filter(discovery_profile=profile).order_by("id"))
    assert len(devices) == 20
    assert all(
        d.status == DeviceStatus.DISCOVERED and d.hostname.startswith("WIN-") for d in devices
    )
    # When they are provisioned with a 2 s interval
    for device in devices:
        device_provision(device_id=device.pk, interval_seconds=2)
    devices = sorted(devices, key=lambda d: tuple(int(p) for p in d.ip.split(".")))

    # When the ticks run, then every device gets metric rows in PostgreSQL
    wait_until(
        lambda: len([n for n in samples_per_device().values() if n >= 2]) == 20,
        timeout=90,
        what="two samples of each of the 20 devices",
    )
    assert "nms.tasks_monitoring.scheduler_tick" in beat.output()
    sample = MetricSample.objects.filter(device=devices[0]).latest("collected_at")
    assert sample.data["memory"]["total_bytes"] > 0

    # When five hosts stop answering
    dying = devices[15:]
    for device in dying:
        hosts_emulator.stop(device.ip)
    stopped_at = timezone.now()

    # Then those five fail their polls and are deactivated at the threshold
    dying_ids = [d.pk for d in dying]
    wait_until(
        lambda: Device.objects.filter(pk__in=dying_ids, status=DeviceStatus.INACTIVE).count() == 5,
        timeout=90,
        what="the five dead devices to be deactivated",
    )
    for device in Device.objects.filter(pk__in=dying_ids):
        assert device.schedule_anchor is None and device.failure_count == 0
        assert device.last_poll_success is False
        assert "connection refused" in device.last_poll_error
        # (a loaded machine may have timed out a poll or two before the stop: they count too)
        failures = DeviceEvent.objects.filter(
            device=device, kind="failure", occurred_at__gte=stopped_at
        )
        assert set(failures.values_list("reason", flat=True)) == {"poll"}  # connection refused
        change = DeviceEvent.objects.filter(device=device, kind="status").latest("occurred_at")
        assert change.to_status == DeviceStatus.INACTIVE
        assert change.detail.startswith("3 failures within ")  # the threshold

    # And the fifteen others are still active and still polled
    deactivated_at = DeviceEvent.objects.filter(kind="status").aggregate(t=Max("occurred_at"))["t"]
    alive_ids = [d.pk for d in devices[:15]]
    before = samples_per_device()
    wait_until(
        lambda: all(samples_per_device().get(pk, 0) >= before.get(pk, 0) + 2 for pk in alive_ids),
        timeout=60,
        what="two more samples of each of the fifteen live devices",
    )
    assert Device.objects.filter(pk__in=alive_ids, status=DeviceStatus.ACTIVE).count() == 15
    assert not DeviceEvent.objects.filter(device_id__in=alive_ids, kind="failure").exists()
    assert not DeviceEvent.objects.filter(
        device_id__in=alive_ids, kind="status", to_status=DeviceStatus.INACTIVE
    ).exists()
    # And no dead device was polled after its deactivation
    assert not MetricSample.objects.filter(
        device_id__in=dying_ids, collected_at__gt=deactivated_at
    ).exists()
