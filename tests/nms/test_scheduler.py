"""The scheduler tick (seed 003 §2, §6): claim due devices in one statement, split ToPing/ToSkip,
one fping for the batch, failure events for the unreachable, new deadlines that keep each
device's phase, the rest handed to the poller; and two tick runners never poll a device twice in
one interval."""

from __future__ import annotations

import base64
import itertools
import json
import math
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import redis
from django.db import connection
from django.utils import timezone

from nms.choices import DeviceStatus
from nms.fping import FpingOptions
from nms.models import Device, DeviceEvent, MetricSample
from nms.services.poller import DueDevice, poll_batches, poll_batches_dispatch
from nms.services.scheduler import due_devices_claim, scheduler_tick

pytest_plugins = ["tests.nms.fixtures_monitoring"]

FAST_PING = FpingOptions(timeout_ms=200, retries=0, interval_ms=0.5)


class Dispatched:
    """Stands in for the poller's dispatch: remembers what the tick handed over."""

    def __init__(self) -> None:
        self.devices: list[DueDevice] = []
        self.calls = 0

    def __call__(self, *, devices, dispatched_at) -> int:
        self.calls += 1
        self.devices.extend(devices)
        return 1 if devices else 0

    @property
    def ids(self) -> set[int]:
        return {device.id for device in self.devices}


@pytest.mark.django_db
def test_only_active_devices_past_their_deadline_are_claimed(make_devices):
    now = timezone.now()
    due = make_devices(["127.0.0.1", "127.0.0.2"], next_deadline=now - timedelta(seconds=5))
    make_devices(["127.0.0.3"], next_deadline=now + timedelta(seconds=5))
    make_devices(["127.0.0.4"], status=DeviceStatus.INACTIVE)
    make_devices(["127.0.0.5"], status=DeviceStatus.DISCOVERED)
    claimed = due_devices_claim(now=now)
    assert {d.id for d in claimed} == {d.pk for d in due}
    assert claimed[0].ip == "127.0.0.1" and claimed[0].port == 5985
    # And a second claim at the same moment finds nothing: the deadlines moved
    assert due_devices_claim(now=now) == []


@pytest.mark.django_db
def test_new_deadlines_keep_each_devices_phase(make_devices):
    now = timezone.now().replace(microsecond=0)
    polled_before = now - timedelta(minutes=5)

    def device(ip: str, interval: int, late: float) -> Device:
        (made,) = make_devices(
            [ip],
            interval=interval,
            next_deadline=now - timedelta(seconds=late),
            last_poll_at=polled_before,
        )
        return made

    on_time = device("127.0.0.1", 60, 0)
    late = device("127.0.0.2", 10, 22)
    very_late = device("127.0.0.3", 10, 27)
    due_devices_claim(now=now)
    for made in (on_time, late, very_late):
        made.refresh_from_db()
    assert on_time.next_deadline == now + timedelta(seconds=60)
    # 22 s late on a 10 s grid: the next point of the same grid is +8 s
    assert late.next_deadline == now + timedelta(seconds=8)
    # 27 s late: +3 s would poll it again at once, so the point after that, +13 s
    assert very_late.next_deadline == now + timedelta(seconds=13)


@pytest.mark.django_db
def test_devices_never_polled_spread_over_their_next_interval(make_devices):
    now = timezone.now()
    herd = make_devices([f"127.0.{i // 250}.{i % 250 + 1}" for i in range(400)], interval=60)
    due_devices_claim(now=now, limit=1000)
    offsets = [
        (d.next_deadline - now).total_seconds()
        for d in Device.objects.filter(pk__in=[d.pk for d in herd])
    ]
    # Never sooner than one interval, and spread over the next one (no bucket of 6 s holds
    # more than twice its share)
    assert min(offsets) >= 60 and max(offsets) < 120
    buckets = Counter(int((offset - 60) // 6) for offset in offsets)
    assert len(buckets) == 10 and max(buckets.values()) <= 80


@pytest.mark.django_db
def test_tick_pings_the_ping_devices_reports_the_unreachable_and_dispatches_the_rest(
    make_devices, unreachable_address, nms_settings
):
    # Given a reachable device, a silent one to ping, and a silent one not to ping (ToSkip)
    (alive,) = make_devices(["127.0.0.1"])
    (silent,) = make_devices([unreachable_address])
    (skip,) = make_devices([unreachable_address], port=5986, should_ping=False)
    dispatched = Dispatched()
    # When the tick runs
    result = scheduler_tick(fping_options=FAST_PING, dispatch=dispatched)
    # Then one fping checked the two ToPing devices; the silent one got a "ping" failure event
    assert result.claimed == 3 and result.pinged == 2
    assert result.unreachable == [silent.pk]
    event = DeviceEvent.objects.get(kind="failure")
    assert (event.device_id, event.reason) == (silent.pk, "ping")
    assert unreachable_address in event.detail
    # And the reachable one and the ToSkip one went to the poller
    assert dispatched.ids == {alive.pk, skip.pk}
    # And every one of them has a new deadline in the future, the silent one too
    now = timezone.now()
    assert all(d.next_deadline > now for d in Device.objects.all())


@pytest.mark.django_db
def test_fping_failing_is_logged_and_the_devices_are_polled_unchecked(make_devices, caplog):
    make_devices(["127.0.0.1", "127.0.0.2"])
    dispatched = Dispatched()
    result = scheduler_tick(
        fping_options=FpingOptions(executable="/nonexistent/fping"), dispatch=dispatched
    )
    assert len(dispatched.ids) == 2 and result.unreachable == []
    assert "fping not found" in result.fping_errors[0]
    assert "fping failed" in caplog.text
    assert not DeviceEvent.objects.exists()


@pytest.mark.django_db
def test_ten_thousand_devices_due_together_are_claimed_in_bounded_batches(make_devices):
    make_devices(
        [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(10_000)], should_ping=False
    )
    dispatched = Dispatched()
    # A tick with no time budget takes one batch
    first = scheduler_tick(batch_size=2_000, budget_seconds=0, dispatch=dispatched)
    assert (first.claimed, first.batches) == (2_000, 1)
    # The next one, with time to spare, takes the rest batch by batch
    rest = scheduler_tick(batch_size=2_000, budget_seconds=60, dispatch=dispatched)
    assert (rest.claimed, rest.batches) == (8_000, 4)
    assert len(dispatched.ids) == 10_000 == len(dispatched.devices)


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_share_a_device(make_devices):
    # Given 6,000 due devices and four runners claiming 250 at a time at once
    make_devices(
        [f"10.0.{i // 256}.{i % 256}" for i in range(6_000)], interval=3600, should_ping=False
    )
    barrier = threading.Barrier(4)
    claimed: list[list[int]] = [[] for _ in range(4)]

    def runner(index: int) -> None:
        try:
            barrier.wait()
            while batch := due_devices_claim(limit=250):
                claimed[index].extend(device.id for device in batch)
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # Then every device was claimed exactly once
    everything = [device_id for part in claimed for device_id in part]
    assert len(everything) == len(set(everything)) == 6_000
    assert sum(1 for part in claimed if part) >= 2  # they really ran side by side


def test_poll_batches_group_by_protocol_and_credential():
    devices = [
        DueDevice(
            id=i,
            ip="127.0.0.1",
            port=5985,
            should_ping=True,
            protocol="winrm",
            credential_id=1 + i % 2,
            interval_seconds=60,
        )
        for i in range(7)
    ]
    batches = poll_batches(devices, size=2)
    assert batches == [[0, 2], [4, 6], [1, 3], [5]]


@pytest.mark.django_db
def test_dispatch_sends_ids_only_to_the_poll_queue(make_devices, broker_url):
    devices = make_devices(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    due = due_devices_claim()
    sent = poll_batches_dispatch(devices=due, dispatched_at=timezone.now())
    assert sent == 1
    queue = redis.Redis.from_url(broker_url)
    assert queue.llen("poll") == 1
    message = json.loads(queue.lindex("poll", 0))
    assert message["headers"]["task"] == "nms.tasks_monitoring.poll_devices"
    body = message["body"]
    args, kwargs, _ = json.loads(base64.b64decode(body))
    assert sorted(args[0]) == sorted(d.pk for d in devices) and kwargs == {}
    assert "password" not in base64.b64decode(body).decode().lower()


@pytest.mark.workers
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_tick_runners_for_a_minute_never_poll_a_device_twice_in_an_interval(
    hosts_emulator, make_devices, monitoring_processes
):
    # Given 20 devices on the emulator, polled every 3 s, pinged before each poll
    interval = 3
    devices = make_devices(hosts_emulator.addresses, port=hosts_emulator.port, interval=interval)
    env = {"CENSUS_NMS_FPING_TIMEOUT_MS": "200", "CENSUS_NMS_FPING_RETRIES": "0"}
    monitoring_processes.worker("poller", queues="poll", concurrency=2, env=env)
    # When two tick loops race for a minute, each ticking every second
    duration = 60.0
    started = time.monotonic()
    runners = [
        monitoring_processes.tick_loop(f"tick{i}", every=1.0, duration=duration, env=env)
        for i in (1, 2)
    ]
    for runner in runners:
        assert runner.wait(timeout=duration + 60) == 0, runner.output()[-3000:]
    ran_for = time.monotonic() - started
    time.sleep(3)  # the last polls finish
    # Then both runners claimed devices
    for runner in runners:
        assert "claimed" in runner.output(), runner.output()[-2000:]
    # And no device was polled more often than its deadlines came round, nor twice in a row
    most = math.floor(ran_for / interval) + 1
    for device in devices:
        polls = hosts_emulator.script_counts(device.ip)["poll"]
        assert 0.6 * duration / interval <= polls <= most, (device.ip, polls, most)
        times = list(
            MetricSample.objects.filter(device=device)
            .order_by("collected_at")
            .values_list("collected_at", flat=True)
        )
        assert len(times) == polls
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert min(gaps) >= interval * 0.5, (device.ip, min(gaps))


def test_the_tick_and_the_retention_are_periodic_jobs_on_beat(settings):
    from config.periodic import periodic_jobs

    jobs = {job.task: job for job in periodic_jobs()}
    tick = jobs["nms.tasks_monitoring.scheduler_tick"]
    assert tick.every_seconds == settings.CENSUS_NMS["TICK_SECONDS"]
    assert tick.queue == "default"
    assert jobs["nms.tasks_monitoring.metrics_retention"].every_seconds == 3600
    assert settings.CELERY_TASK_ROUTES["nms.tasks_monitoring.poll_devices"] == {"queue": "poll"}


@pytest.mark.django_db
def test_nms_tick_command_runs_one_tick(make_devices, broker_url, nms_settings):
    from io import StringIO

    from django.core.management import call_command

    make_devices(["127.0.0.1", "127.0.0.2"])
    out = StringIO()
    call_command("nms_tick", stdout=out)
    assert "claimed 2 in 1 batch(es), pinged 2, unreachable 0, dispatched 2" in out.getvalue()
    assert redis.Redis.from_url(broker_url).llen("poll") == 1
    out = StringIO()
    call_command("nms_tick", stdout=out)
    assert "claimed 0" in out.getvalue()
