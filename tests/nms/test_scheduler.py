"""The scheduler tick (seed 003 §2, §6): claim the window since the last tick and the devices with
a grid point in it, split ToPing/ToSkip, one fping for them, failure events for the unreachable,
the rest handed to the poller; and two tick runners never poll a device twice in one interval."""

from __future__ import annotations

import base64
import itertools
import json
import math
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.db import connection
from django.utils import timezone

from nms.choices import DeviceStatus
from nms.fping import FpingOptions
from nms.models import Device, DeviceEvent, MetricSample, grid_point_after
from nms.services.devices import device_provision
from nms.services.poller import DueGroup, poll_batches, poll_batches_dispatch
from nms.services.scheduler import Claim, due_devices_claim, scheduler_tick
from nms.tasks_monitoring import poll_batches_send

pytest_plugins = ["tests.nms.fixtures_monitoring"]

FAST_PING = FpingOptions(timeout_ms=200, retries=0, interval_ms=0.5)


class Dispatched:
    """Stands in for the poller's dispatch: remembers what the tick handed over."""

    def __init__(self) -> None:
        self.groups: list[DueGroup] = []
        self.calls = 0

    def __call__(self, *, groups, dispatched_at) -> int:
        self.calls += 1
        self.groups.extend(groups)
        return 1 if groups else 0

    @property
    def ids(self) -> set[int]:
        return {device_id for group in self.groups for device_id in group.ids}


@pytest.mark.django_db
def test_only_active_devices_past_their_deadline_are_claimed(make_devices):
    now = timezone.now()
    due = make_devices(["127.0.0.1", "127.0.0.2"], schedule_anchor=now - timedelta(seconds=5))
    make_devices(["127.0.0.3"], schedule_anchor=now + timedelta(seconds=5))
    make_devices(["127.0.0.4"], status=DeviceStatus.INACTIVE)
    make_devices(["127.0.0.5"], status=DeviceStatus.DISCOVERED)
    claim = due_devices_claim(now=now)
    assert claim.groups == [
        DueGroup(
            True, "winrm", due[0].credential_id, [d.pk for d in due], ["127.0.0.1", "127.0.0.2"]
        )
    ]
    # And a second claim at the same moment finds nothing: that window is taken
    assert due_devices_claim(now=now).groups == []


@pytest.mark.django_db
def test_a_device_is_due_once_per_point_of_its_grid(make_devices):
    # Given a device on a 10 s grid anchored at t0, and ticks at the times below
    t0 = timezone.now().replace(microsecond=0)
    (device,) = make_devices(["127.0.0.1"], interval=10, schedule_anchor=t0)

    def due_at(seconds: float) -> bool:
        return due_devices_claim(now=t0 + timedelta(seconds=seconds)).device_ids == [device.pk]

    # Then it is due at its anchor, and again only once each grid point is passed
    ticks = (-1, 0, 5, 9.999, 10, 10)
    assert [due_at(s) for s in ticks] == [False, True, False, False, True, False]
    # A tick that comes late (beat was down for 35 s) polls it once, not once per missed point
    assert due_at(45) is True
    # And the grid keeps its phase: due again at 50, not 55
    assert [due_at(s) for s in (49, 50, 55)] == [False, True, False]


def test_the_next_deadline_is_the_first_grid_point_after_now():
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    assert grid_point_after(anchor, 60, anchor - timedelta(seconds=1)) == anchor
    assert grid_point_after(anchor, 60, anchor) == anchor + timedelta(seconds=60)
    assert grid_point_after(anchor, 60, anchor + timedelta(seconds=61)) == anchor + timedelta(
        seconds=120
    )
    device = Device(status=DeviceStatus.ACTIVE, schedule_anchor=anchor, polling_interval_seconds=7)
    assert timezone.now() < device.next_deadline <= timezone.now() + timedelta(seconds=7)
    assert Device(status=DeviceStatus.INACTIVE, schedule_anchor=anchor).next_deadline is None


@pytest.mark.django_db
def test_devices_provisioned_together_fall_due_spread_over_their_interval(make_devices):
    # Given 1,200 devices provisioned together (the admin's bulk action spreads them)
    herd = make_devices(
        [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(1_200)],
        status=DeviceStatus.DISCOVERED,
    )
    for device in herd:
        device_provision(device_id=device.pk, interval_seconds=60, spread=True)
    # When beat ticks every 5 s for one interval
    start = timezone.now()
    due_devices_claim(now=start)
    per_tick = [
        len(due_devices_claim(now=start + timedelta(seconds=5 * k)).device_ids)
        for k in range(1, 13)
    ]
    # Then every device fell due once, and no tick took more than twice its share (100)
    assert sum(per_tick) == 1_200
    assert max(per_tick) <= 200, per_tick


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
    # And a tick right after it finds nothing due: their next grid points are ahead
    assert scheduler_tick(fping_options=FAST_PING, dispatch=dispatched).claimed == 0


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
def test_ten_thousand_due_together_are_claimed_at_once_and_handed_over_in_few_messages(
    make_devices, broker_url, settings
):
    # Given 10,000 devices due together
    make_devices(
        [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(10_000)], should_ping=False
    )
    queue = redis.Redis.from_url(broker_url)
    # When one tick runs
    result = scheduler_tick()
    # Then it claimed them all and sent at most DISPATCH_MESSAGES messages, to `default`
    assert (result.claimed, result.qualified) == (10_000, 10_000)
    assert result.messages == queue.llen("default") == settings.CENSUS_NMS["DISPATCH_MESSAGES"]
    assert queue.llen("poll") == 0
    handed_over: list[list[int]] = []
    for raw in queue.lrange("default", 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "nms.tasks_monitoring.poll_batches_send"
        assert len(message["headers"]["argsrepr"]) < 100
        (batches, stamp), _, _ = json.loads(base64.b64decode(message["body"]))
        handed_over.extend(batches)
        # And a worker that runs one publishes its batches as poll tasks
        poll_batches_send(batches, stamp)
    ids = [device_id for batch in handed_over for device_id in batch]
    assert len(ids) == len(set(ids)) == 10_000
    assert queue.llen("poll") == len(handed_over) == 100  # POLL_BATCH_SIZE 100
    polled = set()
    for raw in queue.lrange("poll", 0, -1):
        (batch, _), _, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
        polled.update(batch)
    assert len(polled) == 10_000


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_take_disjoint_windows_and_each_grid_point_once(make_devices):
    # Given 3,000 devices on a 1 s grid, phases spread over the second
    start = timezone.now()
    for i in range(10):
        make_devices(
            [f"10.{i}.{j // 256}.{j % 256}" for j in range(300)],
            interval=1,
            should_ping=False,
            schedule_anchor=start + timedelta(seconds=i / 10),
        )
    # When four runners claim as fast as they can for 3 s
    barrier = threading.Barrier(4)
    claims: list[list] = [[] for _ in range(4)]

    def runner(index: int) -> None:
        try:
            barrier.wait()
            while time.monotonic() < stop:
                claims[index].append(due_devices_claim())
        finally:
            connection.close()

    stop = time.monotonic() + 3
    threads = [threading.Thread(target=runner, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then their windows follow each other without a gap or an overlap
    everything = sorted((c for part in claims for c in part), key=lambda c: c.until)
    for previous, claim in itertools.pairwise(everything):
        assert claim.since == previous.until or claim.since == claim.until
    assert sum(1 for part in claims if any(c.groups for c in part)) >= 2  # side by side

    # And each device was claimed by exactly the windows that hold a point of its grid (a window
    # that holds two, the first one, claims it once)
    def holds_a_point(claim: Claim, anchor: datetime) -> bool:
        def points_until(moment: datetime) -> int:  # grid points <= moment, exactly
            return (moment - anchor) // timedelta(seconds=1) + 1 if moment >= anchor else 0

        return points_until(claim.until) > (0 if claim.since is None else points_until(claim.since))

    times = Counter(device_id for claim in everything for device_id in claim.device_ids)
    for device in Device.objects.all():
        expected = sum(1 for claim in everything if holds_a_point(claim, device.schedule_anchor))
        assert times[device.pk] == expected, (device.pk, times[device.pk], expected)
    assert sum(times.values()) >= 3 * 3_000  # and that was most points of three seconds


def test_poll_batches_group_by_protocol_and_credential():
    groups = [
        DueGroup(True, "winrm", 1, [6, 0, 4], ["127.0.0.7", "127.0.0.1", "127.0.0.5"]),
        DueGroup(False, "winrm", 1, [2]),
        DueGroup(False, "winrm", 2, [1, 3, 5]),
    ]
    assert poll_batches(groups, size=2) == [[0, 2], [4, 6], [1, 3], [5]]


@pytest.mark.django_db
def test_dispatch_sends_ids_only_to_the_poll_queue(make_devices, broker_url):
    devices = make_devices(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    due = due_devices_claim().groups
    sent = poll_batches_dispatch(groups=due, dispatched_at=timezone.now())
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
    # Given 20 devices on the emulator, polled every 3 s, pinged before each poll, their grids
    # spread over the interval so that something falls due in every window of either runner
    interval = 3
    devices = make_devices(hosts_emulator.addresses, port=hosts_emulator.port, interval=interval)
    anchor = timezone.now()
    for index, device in enumerate(devices):
        device.schedule_anchor = anchor - timedelta(seconds=interval * index / len(devices))
    Device.objects.bulk_update(devices, ["schedule_anchor"])
    env = {"CENSUS_NMS_FPING_TIMEOUT_MS": "200", "CENSUS_NMS_FPING_RETRIES": "0"}
    monitoring_processes.worker("poller", queues="poll", concurrency=2, env=env)
    # When two tick loops race for a minute, one ticking every second and one every 0.7 s (at the
    # same period their phases could lock, one of them always just after the other)
    duration = 60.0
    started = time.monotonic()
    runners = [
        monitoring_processes.tick_loop(f"tick{i}", every=every, duration=duration, env=env)
        for i, every in ((1, 1.0), (2, 0.7))
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
        # (every poll the host answered left a sample, or a failure if the machine was too
        # slow to wait for the answer; a sample is stamped with its poll's claim, so the gaps
        # below are the gaps between claims, whatever each plugin run's latency)
        failed = DeviceEvent.objects.filter(
            device=device, kind="failure", reason__in=["poll", "plugin"]
        ).count()
        assert len(times) <= polls <= len(times) + failed, (device.ip, len(times), polls, failed)
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
    assert "claimed 2, pinged 2, unreachable 0, dispatched 2 in 1 message(s)" in out.getvalue()
    assert redis.Redis.from_url(broker_url).llen("poll") == 1
    out = StringIO()
    call_command("nms_tick", stdout=out)
    assert "claimed 0" in out.getvalue()
