"""The poller (seed 003 §2, §8) in this process against the WS-Management emulator: metrics
written with COPY, success=false and broken plugins turned into failure events, credentials
decrypted once per batch, and a message delivered twice polls once."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

import nms.services.poller as poller_module
from nms.choices import DeviceStatus
from nms.models import Device, DeviceEvent, MetricSample
from nms.services.poller import database_now, devices_poll

pytest_plugins = ["tests.nms.fixtures_monitoring"]

pytestmark = pytest.mark.django_db


@pytest.fixture
def at_emulator(hosts_emulator, make_devices):
    """Active devices on the first n emulated hosts."""

    def make(count: int, start: int = 0, **options):
        addresses = hosts_emulator.addresses[start : start + count]
        return make_devices(addresses, port=hosts_emulator.port, **options)

    return make


def failure_reasons() -> dict[int, list[str]]:
    reasons: dict[int, list[str]] = {}
    for event in DeviceEvent.objects.filter(kind="failure").order_by("pk"):
        reasons.setdefault(event.device_id, []).append(event.reason)
    return reasons


def test_a_batch_is_polled_and_its_metrics_written(at_emulator, hosts_emulator, nms_settings):
    devices = at_emulator(5)
    outcome = devices_poll(device_ids=[d.pk for d in devices], dispatched_at=database_now())
    assert sorted(outcome.succeeded) == sorted(d.pk for d in devices)
    assert MetricSample.objects.count() == 5
    sample = MetricSample.objects.get(device=devices[0])
    assert sample.data["memory"]["total_bytes"] > 0 and "cpu_percent" in sample.data
    for device in Device.objects.filter(pk__in=[d.pk for d in devices]):
        assert device.last_poll_success is True and device.last_poll_error == ""
        assert device.last_poll_at is not None
    assert all(hosts_emulator.script_counts(a)["poll"] == 1 for a in hosts_emulator.addresses[:5])
    assert not DeviceEvent.objects.exists()


def test_success_false_is_a_poll_failure_of_that_device_only(at_emulator, hosts_emulator):
    devices = at_emulator(3)
    hosts_emulator.stop(devices[1].ip)
    outcome = devices_poll(device_ids=[d.pk for d in devices], dispatched_at=database_now())
    assert sorted(outcome.succeeded) == sorted([devices[0].pk, devices[2].pk])
    assert failure_reasons() == {devices[1].pk: ["poll"]}
    dead = Device.objects.get(pk=devices[1].pk)
    assert dead.last_poll_success is False
    assert "connection refused" in dead.last_poll_error
    assert dead.failure_count == 1
    assert MetricSample.objects.filter(device=dead).count() == 0


@pytest.mark.parametrize(
    ("plugin", "error"),
    [
        ("hang.py", "timed out"),
        ("exit_code.py", "exited with code 3"),
        ("garbage.py", "not valid JSON"),
    ],
)
def test_a_broken_plugin_fails_every_device_of_the_batch_and_the_pool_goes_on(
    at_emulator, settings, nms_settings, caplog, tmp_path, plugin_argv, plugin, error
):
    # Given a plugin that hangs, exits 3 or prints garbage
    nms_settings(POLL_BATCH_TIMEOUT=2.0)
    arguments = {"hang.py": [str(tmp_path / "pids")], "exit_code.py": ["3"], "garbage.py": []}
    good = settings.CENSUS_NMS["PLUGINS"]["winrm"]
    settings.CENSUS_NMS = {
        **settings.CENSUS_NMS,
        "PLUGINS": {"winrm": plugin_argv(plugin, *arguments[plugin])},
    }
    devices = at_emulator(4)
    caplog.set_level(logging.INFO)
    # When a batch is polled
    outcome = devices_poll(device_ids=[d.pk for d in devices], dispatched_at=database_now())
    # Then no result is kept, the error is logged, and each device has one "plugin" failure
    assert outcome.succeeded == [] and MetricSample.objects.count() == 0
    assert any(error in message for message in outcome.plugin_errors)
    assert any(
        r.name == "nms.plugin_pool" and r.levelno == logging.ERROR and error in r.getMessage()
        for r in caplog.records
    )
    assert failure_reasons() == {d.pk: ["plugin"] for d in devices}
    assert all(
        not d.last_poll_success and error in d.last_poll_error
        for d in Device.objects.filter(pk__in=[d.pk for d in devices])
    )
    # And the secret never reached a log line, even from the plugin that echoes its input
    assert "M0nitor-Pa$$word" not in caplog.text
    # And the next batch, with a working plugin, is polled as usual
    # (with the usual timeout: 2 s is for the broken plugins, not for a busy machine)
    settings.CENSUS_NMS = {
        **settings.CENSUS_NMS,
        "PLUGINS": {"winrm": good},
        "POLL_BATCH_TIMEOUT": 0.0,
    }
    others = at_emulator(4, start=4)
    again = devices_poll(device_ids=[d.pk for d in others], dispatched_at=database_now())
    assert len(again.succeeded) == 4


def test_a_message_delivered_twice_polls_once(at_emulator, hosts_emulator):
    devices = at_emulator(3)
    stamp = database_now()
    first = devices_poll(device_ids=[d.pk for d in devices], dispatched_at=stamp)
    second = devices_poll(device_ids=[d.pk for d in devices], dispatched_at=stamp)
    assert first.polled == 3 and second.polled == 0 and second.skipped == 3
    assert MetricSample.objects.count() == 3
    assert all(hosts_emulator.script_counts(a)["poll"] == 1 for a in hosts_emulator.addresses[:3])


def test_a_stale_message_and_an_inactive_device_are_skipped(at_emulator, hosts_emulator):
    (fresh, inactive) = at_emulator(2, interval=60)
    Device.objects.filter(pk=inactive.pk).update(status=DeviceStatus.INACTIVE, schedule_anchor=None)
    stale = devices_poll(
        device_ids=[fresh.pk], dispatched_at=database_now() - timedelta(seconds=61)
    )
    assert stale.polled == 0
    outcome = devices_poll(device_ids=[fresh.pk, inactive.pk], dispatched_at=database_now())
    assert outcome.succeeded == [fresh.pk] and outcome.skipped == 1
    assert hosts_emulator.script_counts(inactive.ip)["poll"] == 0


def test_each_credential_is_decrypted_once_per_batch(at_emulator, monkeypatch):
    devices = at_emulator(10)
    calls: list[str] = []
    real = poller_module.decrypt_json
    monkeypatch.setattr(
        poller_module, "decrypt_json", lambda token: calls.append(token) or real(token)
    )
    outcome = devices_poll(device_ids=[d.pk for d in devices], dispatched_at=database_now())
    assert len(outcome.succeeded) == 10
    assert len(calls) == 1


def test_an_unreadable_credential_is_shown_but_not_counted_as_ill_health(at_emulator, credential):
    devices = at_emulator(2)
    type(credential).objects.filter(pk=credential.pk).update(payload_encrypted="not-a-token")
    outcome = devices_poll(device_ids=[d.pk for d in devices], dispatched_at=database_now())
    assert outcome.succeeded == [] and len(outcome.not_counted) == 2
    assert not DeviceEvent.objects.exists()
    device = Device.objects.get(pk=devices[0].pk)
    assert device.last_poll_success is False
    assert "cannot be decrypted" in device.last_poll_error
    assert device.failure_count == 0


def test_three_failed_polls_deactivate_a_device(at_emulator, hosts_emulator, nms_settings):
    nms_settings(FAILURE_THRESHOLD=3)
    (device,) = at_emulator(1, interval=1)
    hosts_emulator.stop(device.ip)
    for _ in range(3):
        # each poll is a fresh claim, one interval after the previous one
        Device.objects.filter(pk=device.pk).update(
            last_poll_at=timezone.now() - timedelta(seconds=5)
        )
        devices_poll(device_ids=[device.pk], dispatched_at=database_now())
    device.refresh_from_db()
    assert device.status == DeviceStatus.INACTIVE and device.schedule_anchor is None
    assert failure_reasons() == {device.pk: ["poll", "poll", "poll"]}


def test_nms_poll_command_polls_in_this_process(at_emulator, hosts_emulator):
    from io import StringIO

    from django.core.management import call_command

    alive, dead = at_emulator(2)
    hosts_emulator.stop(dead.ip)
    out = StringIO()
    call_command("nms_poll", str(alive.pk), str(dead.pk), stdout=out)
    assert "polled 2" in out.getvalue() and "succeeded 1, failed 1" in out.getvalue()
    assert f"device {dead.pk}: connection refused" in out.getvalue()
    assert MetricSample.objects.filter(device_id=alive.pk).count() == 1
