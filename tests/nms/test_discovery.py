"""Discovery (seed 003 §1) against emulated Windows hosts on 127.0.0.1-20: in this process through
the service, then end to end through the API and a real celery worker consuming ``poll``.

The password is searched for everywhere it must not be: log records, the message on the broker,
the worker's output.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.db import connection
from rest_framework.test import APIClient

from nms.choices import DeviceStatus, RunStatus, TargetOutcome
from nms.models import (
    Device,
    DeviceEvent,
    DiscoveryProfile,
    DiscoveryRun,
    DiscoveryRunTarget,
)
from nms.services.discovery import (
    DiscoveryInvalid,
    discovery_run_execute,
    discovery_run_start,
    discovery_runs_resend,
)
from nms.tasks import run_discovery
from tests.emulators.wsman import WSManEmulator, hostname_for
from tests.nms.conftest import HOST_PASSWORD

ADDRESSES = [f"127.0.0.{i}" for i in range(1, 21)]
FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED)


@pytest.fixture
def small_batches(settings) -> None:
    settings.CENSUS_NMS = {
        **settings.CENSUS_NMS,
        "DISCOVERY_BATCH_SIZE": 8,
        "DISCOVERY_DEVICE_TIMEOUT": 5.0,
        "DISCOVERY_BATCH_TIMEOUT": 60.0,
    }


def outcomes(run: DiscoveryRun) -> dict[str, str]:
    return dict(DiscoveryRunTarget.objects.filter(run=run).values_list("ip", "outcome"))


def run_profile(profile: DiscoveryProfile) -> DiscoveryRun:
    return discovery_run_execute(run_id=discovery_run_start(profile_id=profile.pk).pk)


# --- in this process -----------------------------------------------------------------------------
@pytest.mark.django_db
def test_auto_provision_makes_twenty_active_devices_with_spread_deadlines(
    emulator: WSManEmulator, make_profile, small_batches
) -> None:
    # Given twenty hosts and an auto-provisioning profile polling every 60 s
    profile = make_profile(port=emulator.port, interval=60)

    # When its discovery runs
    started = discovery_run_start(profile_id=profile.pk)
    assert started.status == RunStatus.PENDING
    assert DiscoveryRunTarget.objects.filter(run=started).count() == 20
    before = time.time()
    run = discovery_run_execute(run_id=started.pk)

    # Then every target created an active device named by its host, with its OS
    assert run.status == RunStatus.COMPLETED, run.error
    assert (run.targets_total, run.targets_succeeded, run.targets_failed) == (20, 20, 0)
    assert run.devices_created == 20
    assert set(outcomes(run).values()) == {TargetOutcome.CREATED}
    devices = list(Device.objects.order_by("ip"))
    assert {d.ip: d.hostname for d in devices} == {a: hostname_for(a) for a in ADDRESSES}
    for device in devices:
        assert device.status == DeviceStatus.ACTIVE
        assert device.port == emulator.port
        assert device.os.startswith("Microsoft Windows")
        assert device.discovery_profile_id == profile.pk
        assert device.credential_id == profile.credential_id
        assert device.polling_interval_seconds == 60
    # And their first deadlines are spread over the interval, not all in one tick
    # (each is its creation time plus its share of the interval; the run took until `after`)
    after = time.time()
    anchors = [d.schedule_anchor.timestamp() for d in devices]
    assert all(before - 1 < anchor < after + 60 for anchor in anchors)
    assert len({round(anchor) for anchor in anchors}) >= 10
    # And each device has its status event
    assert DeviceEvent.objects.filter(kind="status", to_status="active").count() == 20
    # And each host ran the discovery script exactly once
    assert all(emulator.script_counts(a) == {"discovery": 1} for a in ADDRESSES)


@pytest.mark.django_db
def test_a_second_run_finds_every_device_existing_and_duplicates_nothing(
    emulator: WSManEmulator, make_profile, small_batches
) -> None:
    profile = make_profile(port=emulator.port)
    run_profile(profile)
    ids = set(Device.objects.values_list("pk", flat=True))

    again = run_profile(profile)

    assert again.status == RunStatus.COMPLETED
    assert set(outcomes(again).values()) == {TargetOutcome.EXISTING}
    assert (again.targets_succeeded, again.devices_created) == (20, 0)
    assert set(Device.objects.values_list("pk", flat=True)) == ids
    assert set(DiscoveryRunTarget.objects.filter(run=again).values_list("device", flat=True)) == ids


@pytest.mark.django_db
def test_without_auto_provision_devices_are_discovered_and_not_scheduled(
    emulator: WSManEmulator, make_profile, small_batches
) -> None:
    profile = make_profile(port=emulator.port, targets="127.0.0.1-127.0.0.3", auto_provision=False)

    run_profile(profile)

    assert (
        list(Device.objects.values_list("status", "schedule_anchor"))
        == [(DeviceStatus.DISCOVERED, None)] * 3
    )


@pytest.mark.django_db
def test_stopped_hosts_fail_with_the_plugin_error_while_the_others_succeed(
    emulator: WSManEmulator, make_profile, small_batches
) -> None:
    # Given five of the twenty hosts down
    down = ADDRESSES[5:10]
    for address in down:
        emulator.stop(address)
    profile = make_profile(port=emulator.port)

    # When discovery runs
    run = run_profile(profile)

    # Then those five failed with the plugin's error, and fifteen devices exist
    assert run.status == RunStatus.COMPLETED
    assert (run.targets_succeeded, run.targets_failed, run.devices_created) == (15, 5, 15)
    for target in DiscoveryRunTarget.objects.filter(run=run):
        if target.ip in down:
            assert target.outcome == TargetOutcome.FAILED
            assert f"connection refused by {target.ip}:{emulator.port}" in target.error
            assert target.device is None
        else:
            assert target.outcome == TargetOutcome.CREATED and target.error == ""
    assert set(Device.objects.values_list("ip", flat=True)) == set(ADDRESSES) - set(down)


@pytest.mark.django_db
def test_a_wrong_password_fails_every_target_with_an_auth_error(
    emulator: WSManEmulator, make_credential, make_profile, small_batches
) -> None:
    profile = make_profile(port=emulator.port, credential=make_credential(password="wrong-one"))

    run = run_profile(profile)

    assert run.status == RunStatus.FAILED
    assert (run.targets_succeeded, run.targets_failed) == (0, 20)
    errors = set(DiscoveryRunTarget.objects.filter(run=run).values_list("error", flat=True))
    assert len(errors) == 20
    assert all("authentication failed" in e and "(HTTP 401)" in e for e in errors)
    assert "no target succeeded" in run.error and "authentication failed" in run.error
    assert not Device.objects.exists()


FLAKY_PLUGIN = """
import json, sys
document = json.load(sys.stdin)
ips = [task["ip"] for task in document["tasks"]]
if {FAIL!r} in ips:
    print("kaput", file=sys.stderr)
    sys.exit(3)
print(json.dumps({{"results": [
    {{"request_id": t["request_id"], "success": True, "error": None,
      "data": {{"hostname": "H-" + t["ip"], "os": {{"caption": "Test OS", "version": "1"}}}}}}
    for t in document["tasks"]
]}}))
"""


@pytest.mark.django_db
def test_a_plugin_run_failing_as_a_whole_fails_its_batch_and_the_run_goes_on(
    tmp_path: Path, settings, make_profile, small_batches
) -> None:
    # Given a plugin that crashes on any batch holding 127.0.1.10 (batches of 8 addresses)
    plugin = tmp_path / "flaky.py"
    plugin.write_text(FLAKY_PLUGIN.format(FAIL="127.0.1.10"))
    settings.CENSUS_NMS = {
        **settings.CENSUS_NMS,
        "PLUGINS": {"winrm": [sys.executable, str(plugin)]},
    }
    profile = make_profile(port=5985, targets="127.0.1.1-127.0.1.20")

    # When discovery runs
    run = run_profile(profile)

    # Then the second batch (.9-.16) failed with the reason, and the first and third went on
    failed = {f"127.0.1.{i}" for i in range(9, 17)}
    result = outcomes(run)
    assert {ip for ip, outcome in result.items() if outcome == TargetOutcome.FAILED} == failed
    assert {ip for ip, outcome in result.items() if outcome == TargetOutcome.CREATED} == (
        {f"127.0.1.{i}" for i in range(1, 21)} - failed
    )
    errors = set(
        DiscoveryRunTarget.objects.filter(run=run, outcome=TargetOutcome.FAILED).values_list(
            "error", flat=True
        )
    )
    assert errors == {"plugin run failed: plugin exited with code 3"}
    assert run.status == RunStatus.COMPLETED
    assert Device.objects.get(ip="127.0.1.1").os == "Test OS 1"


@pytest.mark.django_db
def test_running_a_run_twice_is_harmless(emulator: WSManEmulator, make_profile, small_batches):
    # Given a run done once
    run = run_profile(make_profile(port=emulator.port, targets="127.0.0.1-127.0.0.5"))
    emulator.reset_counts()

    # When its message is delivered again
    again = discovery_run_execute(run_id=run.pk)

    # Then nothing happened: no host was contacted, no counter moved
    assert again.status == RunStatus.COMPLETED
    assert (again.targets_succeeded, again.devices_created) == (5, 5)
    assert all(emulator.request_counts(a)["total"] == 0 for a in ADDRESSES[:5])


@pytest.mark.django_db
def test_an_unreadable_credential_fails_the_run_with_the_reason(
    settings, emulator: WSManEmulator, make_profile
) -> None:
    profile = make_profile(port=emulator.port, targets="127.0.0.1-127.0.0.3")
    run = discovery_run_start(profile_id=profile.pk)
    settings.CENSUS_ENCRYPTION_KEYS = ["ZmFrZS1rZXktZmFrZS1rZXktZmFrZS1rZXktZmFrZTE="]

    run = discovery_run_execute(run_id=run.pk)

    assert run.status == RunStatus.FAILED
    assert "cannot be decrypted" in run.error
    assert set(outcomes(run).values()) == {TargetOutcome.FAILED}
    assert run.targets_failed == 3


@pytest.mark.django_db
def test_a_profile_whose_targets_became_nonsense_cannot_start_a_run(make_profile) -> None:
    profile = make_profile(port=5985, targets="127.0.0.1")
    DiscoveryProfile.objects.filter(pk=profile.pk).update(targets="10.0.0.9-10.0.0.1")

    with pytest.raises(DiscoveryInvalid, match="reversed"):
        discovery_run_start(profile_id=profile.pk)
    assert not DiscoveryRun.objects.exists()


@pytest.mark.django_db
def test_the_password_is_in_no_log_record_across_a_discovery_run(
    caplog: pytest.LogCaptureFixture, emulator: WSManEmulator, make_profile, small_batches
) -> None:
    # Given hosts failing in every way: down, slow, printing the password back, and fine
    emulator.stop(ADDRESSES[0])
    emulator.behaviour(ADDRESSES[1]).stdout = f"echo {HOST_PASSWORD} oops".encode()
    emulator.behaviour(ADDRESSES[2]).exit_code = 1
    profile = make_profile(port=emulator.port, targets="127.0.0.1-127.0.0.6")
    caplog.set_level(logging.DEBUG)

    # When discovery runs with every logger at DEBUG
    run = run_profile(profile)

    # Then it logged (the run, the pool) but the password appears in no record
    assert run.targets_failed == 3
    assert caplog.records
    assert any(r.name == "nms.plugin_pool" for r in caplog.records)
    for record in caplog.records:
        assert HOST_PASSWORD not in record.getMessage()
        assert HOST_PASSWORD not in str(record.args)
    assert HOST_PASSWORD not in caplog.text
    # Nor in what the run recorded about its targets
    for error in DiscoveryRunTarget.objects.values_list("error", flat=True):
        assert HOST_PASSWORD not in error


# --- concurrency: real transactions, two threads -------------------------------------------------
def _in_threads(*calls: Callable[[], object]) -> None:
    errors: list[BaseException] = []

    def target(call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


@pytest.mark.django_db(transaction=True)
def test_two_workers_on_one_run_handle_each_target_once(
    emulator: WSManEmulator, make_profile, small_batches
) -> None:
    # Given one run of twenty targets
    run = discovery_run_start(profile_id=make_profile(port=emulator.port).pk)

    # When two workers execute it at the same time (the message delivered twice)
    _in_threads(*(lambda: discovery_run_execute(run_id=run.pk) for _ in range(2)))

    # Then each host was asked once, and each target has one outcome
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED
    assert (run.targets_succeeded, run.devices_created) == (20, 20)
    assert all(emulator.script_counts(a) == {"discovery": 1} for a in ADDRESSES)
    assert Device.objects.count() == 20


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_never_duplicate_a_device(
    emulator: WSManEmulator, make_profile, small_batches
) -> None:
    # Given two runs of one profile
    profile = make_profile(port=emulator.port)
    runs = [discovery_run_start(profile_id=profile.pk) for _ in range(2)]

    # When both execute at the same time
    _in_threads(*(lambda run=run: discovery_run_execute(run_id=run.pk) for run in runs))

    # Then each address made one device: created by one run, found existing by the other
    assert Device.objects.count() == 20
    created = DiscoveryRunTarget.objects.filter(outcome=TargetOutcome.CREATED)
    existing = DiscoveryRunTarget.objects.filter(outcome=TargetOutcome.EXISTING)
    assert sorted(created.values_list("ip", flat=True)) == sorted(ADDRESSES)
    assert sorted(existing.values_list("ip", flat=True)) == sorted(ADDRESSES)
    for run in runs:
        run.refresh_from_db()
        assert run.status == RunStatus.COMPLETED and run.targets_succeeded == 20
    assert sum(run.devices_created for run in runs) == 20


# --- the message on the broker -------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_message_on_the_poll_queue_carries_the_run_id_and_no_credential(
    api: APIClient, broker_url: str, make_profile
) -> None:
    # Given a profile and no worker consuming the poll queue
    profile = make_profile(port=5985, targets="127.0.0.1-127.0.0.3")

    # When a run is started through the API
    response = api.post(f"/api/nms/discovery_profiles/{profile.pk}/run")
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]

    # Then one message waits on the poll queue, as published
    broker = redis.Redis.from_url(broker_url)
    raw = broker.lrange("poll", 0, -1)
    assert len(raw) == 1
    message = json.loads(raw[0])
    body = json.loads(base64.b64decode(message["body"]))
    # And it is a wake-up call: the run id and nothing else
    assert message["headers"]["task"] == "nms.tasks.run_discovery"
    assert body[0] == [run_id] and body[1] == {}
    # And the password is nowhere in it, raw or decoded, nor anywhere on the broker
    assert HOST_PASSWORD.encode() not in raw[0]
    assert HOST_PASSWORD not in json.dumps(body)
    for key in broker.keys("*"):
        if broker.type(key) == b"list":
            assert all(HOST_PASSWORD.encode() not in item for item in broker.lrange(key, 0, -1))


@pytest.mark.django_db
def test_a_run_whose_message_was_lost_is_sent_again(broker_url: str, make_profile) -> None:
    # Given a run left PENDING for ten minutes (its message died with the broker), and a fresh one
    profile = make_profile(port=5985, targets="127.0.0.1")
    lost = discovery_run_start(profile_id=profile.pk)
    DiscoveryRun.objects.filter(pk=lost.pk).update(
        created_at=DiscoveryRun.objects.get(pk=lost.pk).created_at - timedelta(minutes=10)
    )
    discovery_run_start(profile_id=profile.pk)

    # When the safety net runs
    resent = discovery_runs_resend(older_than_seconds=120)

    # Then only the old one was sent again, to the poll queue
    assert resent == [lost.pk]
    raw = redis.Redis.from_url(broker_url).lrange("poll", 0, -1)
    assert [json.loads(base64.b64decode(json.loads(m)["body"]))[0] for m in raw] == [[lost.pk]]


@pytest.mark.django_db
def test_a_running_run_is_sent_again_only_once_it_has_stopped_moving(
    broker_url: str, make_profile, settings
) -> None:
    from django.utils import timezone

    settings.CENSUS_NMS = {**settings.CENSUS_NMS, "DISCOVERY_BATCH_TIMEOUT": 60.0}
    # Given two RUNNING runs started an hour ago with PENDING targets nobody holds: one whose
    # last batch committed a moment ago (its worker is at work on the next), and one whose last
    # batch committed half an hour ago (its worker died, and its message with the broker)
    profile = make_profile(port=5985, targets="127.0.0.1-127.0.0.4")
    moving, quiet = (discovery_run_start(profile_id=profile.pk) for _ in range(2))
    now = timezone.now()
    for run, progress in (
        (moving, now - timedelta(seconds=5)),
        (quiet, now - timedelta(minutes=30)),
    ):
        DiscoveryRun.objects.filter(pk=run.pk).update(
            status=RunStatus.RUNNING,
            started_at=now - timedelta(hours=1),
            last_progress_at=progress,
        )
    redis.Redis.from_url(broker_url).delete("poll")
    # When the safety net runs
    resent = discovery_runs_resend(older_than_seconds=120)
    # Then only the quiet one is sent again: a copy of the moving one would only crowd it
    assert resent == [quiet.pk]


@pytest.mark.django_db
def test_a_message_for_a_deleted_run_is_dropped_quietly() -> None:
    assert run_discovery(987654) == "GONE"


# --- end to end: API, broker, a real worker ------------------------------------------------------
WORKER_ENV = {
    "CENSUS_NMS_DISCOVERY_BATCH_SIZE": "8",
    "CENSUS_NMS_DISCOVERY_DEVICE_TIMEOUT": "5",
    "CENSUS_NMS_DISCOVERY_BATCH_TIMEOUT": "60",
}


def wait_for_run(run_id: int, timeout: float = 120) -> DiscoveryRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = DiscoveryRun.objects.get(pk=run_id)
        if run.status in FINISHED:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout}s")


def start_run(api: APIClient, profile_id: int) -> int:
    response = api.post(f"/api/nms/discovery_profiles/{profile_id}/run")
    assert response.status_code == 202, response.content
    return response.json()["id"]


@pytest.fixture
def lab(api: APIClient, emulator: WSManEmulator) -> dict[str, int]:
    """A credential and an auto-provisioning profile for the twenty hosts, made through the API."""
    credential = api.post(
        "/api/nms/credential_profiles",
        {
            "name": "lab-admin",
            "payload": {
                "username": "Administrator",
                "password": HOST_PASSWORD,
                "transport": "basic",
                "scheme": "http",
            },
        },
        format="json",
    )
    assert credential.status_code == 201, credential.content
    profile = api.post(
        "/api/nms/discovery_profiles",
        {
            "name": "lab",
            "targets": "127.0.0.1-127.0.0.20",
            "port": emulator.port,
            "credential": credential.json()["id"],
            "auto_provision": True,
            "polling_interval_seconds": 300,
        },
        format="json",
    )
    assert profile.status_code == 201, profile.content
    return {"credential": credential.json()["id"], "profile": profile.json()["id"]}


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_a_worker_discovers_twenty_hosts_then_finds_them_again(
    api: APIClient, emulator: WSManEmulator, lab: dict[str, int], start_worker
) -> None:
    # Given a real worker consuming the poll and default queues
    worker = start_worker("nms1", env=WORKER_ENV, queues="poll,default")

    # When discovery is run through the API
    created_at = time.time()
    first = wait_for_run(start_run(api, lab["profile"]))

    # Then twenty active devices exist, named by their hosts, due at spread times
    assert first.status == RunStatus.COMPLETED, first.error
    assert (first.targets_succeeded, first.devices_created) == (20, 20)
    devices = api.get("/api/nms/devices?limit=100").json()
    assert devices["count"] == 20
    assert {d["ip"]: d["hostname"] for d in devices["results"]} == {
        a: hostname_for(a) for a in ADDRESSES
    }
    assert {d["status"] for d in devices["results"]} == {"active"}
    finished_at = time.time()
    anchors = [d.schedule_anchor.timestamp() for d in Device.objects.all()]
    assert all(created_at - 1 < anchor < finished_at + 300 for anchor in anchors)
    assert len({round(anchor) for anchor in anchors}) >= 15
    detail = api.get(f"/api/nms/discovery_runs/{first.pk}").json()
    assert {t["outcome"] for t in detail["targets"]} == {"CREATED"}

    # When it is run again
    second = wait_for_run(start_run(api, lab["profile"]))

    # Then all twenty were found existing, and no device was duplicated
    assert second.status == RunStatus.COMPLETED
    assert set(outcomes(second).values()) == {TargetOutcome.EXISTING}
    assert Device.objects.count() == 20
    # And the worker never wrote the password
    assert HOST_PASSWORD not in worker.output()
    assert "nms.tasks.run_discovery" in worker.output()


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_a_worker_reports_stopped_hosts_and_a_wrong_password_per_target(
    api: APIClient, emulator: WSManEmulator, lab: dict[str, int], start_worker
) -> None:
    # Given a real worker, and five of the twenty hosts stopped
    worker = start_worker("nms2", env=WORKER_ENV, queues="poll,default")
    down = ADDRESSES[12:17]
    for address in down:
        emulator.stop(address)

    # When discovery runs
    run = wait_for_run(start_run(api, lab["profile"]))

    # Then those five failed with the plugin's error and fifteen succeeded
    assert run.status == RunStatus.COMPLETED
    assert (run.targets_succeeded, run.targets_failed) == (15, 5)
    failed = api.get(f"/api/nms/discovery_runs/{run.pk}/targets?outcome=FAILED").json()
    assert sorted(t["ip"] for t in failed["results"]) == sorted(down)
    assert all("connection refused" in t["error"] for t in failed["results"])

    # When the password is changed to a wrong one and discovery runs again
    for address in down:
        emulator.restart(address)
    response = api.patch(
        f"/api/nms/credential_profiles/{lab['credential']}",
        {"payload": {"username": "Administrator", "password": "not-the-password"}},
        format="json",
    )
    assert response.status_code == 200
    run = wait_for_run(start_run(api, lab["profile"]))

    # Then every target failed with an authentication error
    assert run.status == RunStatus.FAILED
    errors = DiscoveryRunTarget.objects.filter(run=run).values_list("outcome", "error")
    assert len(errors) == 20
    assert all(o == TargetOutcome.FAILED and "authentication failed" in e for o, e in errors)
    assert HOST_PASSWORD not in worker.output()


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_two_workers_and_a_duplicated_message_handle_each_target_once(
    api: APIClient, emulator: WSManEmulator, lab: dict[str, int], start_worker
) -> None:
    # Given two real workers
    for name in ("nms3", "nms4"):
        start_worker(
            name, env={**WORKER_ENV, "CENSUS_NMS_DISCOVERY_BATCH_SIZE": "2"}, queues="poll"
        )

    # When a run's message is delivered twice (both workers take one)
    run_id = start_run(api, lab["profile"])
    run_discovery.apply_async(args=[run_id])
    run = wait_for_run(run_id)

    # Then each host was asked once and each target has one outcome
    assert run.status == RunStatus.COMPLETED
    assert (run.targets_succeeded, run.devices_created) == (20, 20)
    assert all(emulator.script_counts(a) == {"discovery": 1} for a in ADDRESSES)
