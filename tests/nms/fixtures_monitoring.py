"""Fixtures of the network monitor's tests (scheduler, poller, metrics, health).

Loaded with ``pytest_plugins = ["tests.nms.fixtures_monitoring"]`` by the modules that use them.
Everything here stays on loopback: emulated WinRM hosts on 127.0.0.x, and an address made
unreachable by an nftables rule of the test's own that drops ICMP echo requests to it on ``lo``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from nms.choices import DeviceStatus
from nms.crypto import encrypt_json
from nms.models import CredentialProfile, Device
from tests.emulators.wsman import (
    WSManEmulator,
    bindable_loopback_addresses,
    running_emulator,
)
from tests.fixtures.workers import celery_worker_command, test_database_url

USER = "Administrator"
PASSWORD = "M0nitor-Pa$$word"
PLUGINS = Path(__file__).resolve().parent / "plugins"
# An address on lo that the `unreachable_address` fixture stops from answering pings.
SILENT_ADDRESS = "127.0.0.250"


def plugin_command(name: str, *arguments: str) -> list[str]:
    """The argv of one of the misbehaving test plugins in tests/nms/plugins/."""
    return [sys.executable, str(PLUGINS / name), *arguments]


@pytest.fixture
def plugin_argv() -> Callable[..., list[str]]:
    return plugin_command


@pytest.fixture
def nms_settings(settings):
    """Fast NMS settings for tests; returns a function that overrides more of them."""
    settings.CENSUS_NMS = {
        **settings.CENSUS_NMS,
        "FPING_TIMEOUT_MS": 200,
        "FPING_RETRIES": 0,
        "POLL_DEVICE_TIMEOUT": 5.0,
        "FAILURE_WINDOW_SECONDS": 300,
        "FAILURE_THRESHOLD": 3,
    }

    def override(**values: object) -> None:
        settings.CENSUS_NMS = {**settings.CENSUS_NMS, **values}

    return override


@pytest.fixture
def credential(db) -> CredentialProfile:
    return CredentialProfile.objects.create(
        name=f"emulated-{uuid.uuid4().hex[:6]}",
        protocol="winrm",
        payload_encrypted=encrypt_json(
            {"username": USER, "password": PASSWORD, "transport": "basic", "scheme": "http"}
        ),
    )


@pytest.fixture
def make_devices(credential) -> Callable[..., list[Device]]:
    """Create active devices straight through the ORM (discovery is tested elsewhere)."""

    def make(
        ips: Sequence[str],
        *,
        port: int = 5985,
        interval: int = 60,
        should_ping: bool = True,
        status: str = DeviceStatus.ACTIVE,
        schedule_anchor: datetime | None = None,
        last_poll_at: datetime | None = None,
    ) -> list[Device]:
        now = timezone.now()
        anchor = schedule_anchor if schedule_anchor is not None else now - timedelta(seconds=1)
        devices = [
            Device(
                ip=ip,
                port=port,
                protocol="winrm",
                hostname="",
                status=status,
                credential=credential,
                polling_interval_seconds=interval,
                should_ping=should_ping,
                schedule_anchor=anchor if status == DeviceStatus.ACTIVE else None,
                last_poll_at=last_poll_at,
            )
            for ip in ips
        ]
        return Device.objects.bulk_create(devices)

    return make


@pytest.fixture
def loopback_addresses() -> Callable[[int], list[str]]:
    def addresses(count: int) -> list[str]:
        found = bindable_loopback_addresses(count)
        if len(found) < count:
            pytest.skip(f"needs {count} bindable loopback addresses, found {len(found)}")
        return found

    return addresses


@pytest.fixture
def hosts_emulator(loopback_addresses) -> Iterator[WSManEmulator]:
    """Emulated Windows hosts on 127.0.0.1-127.0.0.20, one port for all."""
    with running_emulator(loopback_addresses(20), username=USER, password=PASSWORD) as started:
        yield started


def _nft(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", *arguments], capture_output=True, text=True, check=False)


@pytest.fixture
def unreachable_address() -> Iterator[str]:
    """SILENT_ADDRESS stops answering pings for the duration of the test.

    An nftables table of the test's own drops ICMP echo requests to it on input (so nothing is
    sent anywhere: the request is dropped on lo), and is deleted afterwards. Needs nft and
    CAP_NET_ADMIN (Debian package nftables; the suite runs as root in CI).
    """
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed (Debian: apt-get install nftables)")
    table = f"census_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    created = _nft("add", "table", "inet", table)
    if created.returncode != 0:
        pytest.skip(f"cannot create an nftables table: {created.stderr.strip()}")
    try:
        for arguments in (
            ("add", "chain", "inet", table, "in", "{ type filter hook input priority 0; }"),
            (
                "add",
                "rule",
                "inet",
                table,
                "in",
                "ip",
                "daddr",
                SILENT_ADDRESS,
                "icmp",
                "type",
                "echo-request",
                "drop",
            ),
        ):
            done = _nft(*arguments)
            assert done.returncode == 0, done.stderr
        yield SILENT_ADDRESS
    finally:
        _nft("delete", "table", "inet", table)


# --- real processes: poll workers, beat, tick loops ---------------------------------------------

REPO = Path(__file__).resolve().parents[2]


class MonitoringProcess:
    """One real process of the monitor (a celery worker, celery beat, `nms_tick --loop`), in a
    process group of its own, its output in a log file."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_bytes().decode("utf-8", "replace")

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {text!r} in its output:\n{self.output()[-4000:]}")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                # The main process only: a celery worker then shuts its pool down warmly.
                self.proc.terminate()
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything it left behind
        self._log_file.close()


@pytest.fixture
def monitoring_processes(tmp_path, broker_url):
    """Start real processes against the test database and broker; all stopped at the end."""
    started: list[MonitoringProcess] = []

    def environment(extra: dict[str, str] | None) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": broker_url,
            "LOG_FORMAT": "text",
            **(extra or {}),
        }

    def start(name: str, command: list[str], env: dict[str, str] | None) -> MonitoringProcess:
        process = MonitoringProcess(name, command, tmp_path / f"{name}.log", environment(env))
        started.append(process)
        return process

    class Starter:
        @staticmethod
        def worker(
            name: str, queues: str = "poll,default", concurrency: int = 2, env=None
        ) -> MonitoringProcess:
            process = start(
                name, celery_worker_command(name, queues=queues, concurrency=concurrency), env
            )
            process.wait_for(" ready.")
            return process

        @staticmethod
        def beat(env=None) -> MonitoringProcess:
            return start(
                "beat",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "beat",
                    "--scheduler",
                    "django_celery_beat.schedulers:DatabaseScheduler",
                    "--max-interval",
                    "1",
                    "-l",
                    "INFO",
                ],
                env,
            )

        @staticmethod
        def tick_loop(name: str, every: float, duration: float, env=None) -> MonitoringProcess:
            return start(
                name,
                [
                    sys.executable,
                    "manage.py",
                    "nms_tick",
                    "--loop",
                    "--every",
                    str(every),
                    "--duration",
                    str(duration),
                ],
                env,
            )

    yield Starter
    for process in started:
        process.stop()
