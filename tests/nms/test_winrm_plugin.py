"""The WinRM plugin, run as a real subprocess through the pool, against emulated Windows hosts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nms.plugin_pool import PluginRun, run_plugin
from nms.plugins.contract import Mode, Task
from nms.plugins.winrm import DISCOVERY_SCRIPT, POLL_SCRIPT, encoded_command, poll_data
from tests.emulators.wsman import WSManEmulator, bindable_loopback_addresses, running_emulator

REPO = Path(__file__).resolve().parents[2]
PLUGIN = [sys.executable, "-m", "nms.plugins.winrm"]
USER = "Administrator"
PASSWORD = "Wind0ws-S3cret!pw"
DEVICES = 20


@pytest.fixture(scope="module")
def addresses() -> list[str]:
    found = bindable_loopback_addresses(DEVICES)
    if len(found) < DEVICES:
        pytest.skip(f"this machine lets us bind only {len(found)} of 127.0.0.1-{DEVICES}")
    return found


@pytest.fixture
def emulator(addresses: list[str]) -> Iterator[WSManEmulator]:
    with running_emulator(addresses, username=USER, password=PASSWORD) as started:
        yield started


def make_tasks(
    emulator: WSManEmulator,
    addresses: list[str],
    *,
    password: str = PASSWORD,
    timeout: float = 5.0,
) -> list[Task]:
    return [
        {
            "request_id": f"req-{address}",
            "device_id": index,
            "ip": address,
            "port": emulator.port,
            "protocol": "winrm",
            "credential": {
                "username": USER,
                "password": password,
                "transport": "basic",
                "scheme": "http",
            },
            "timeout": timeout,
        }
        for index, address in enumerate(addresses, start=1)
    ]


def run(mode: Mode, tasks: list[Task], timeout: float = 60.0) -> PluginRun:
    return run_plugin(PLUGIN, mode, tasks, timeout, cwd=REPO)


def by_ip(plugin_run: PluginRun, tasks: list[Task]) -> dict[str, Any]:
    ip_of = {task["request_id"]: task["ip"] for task in tasks}
    return {ip_of[result["request_id"]]: result for result in plugin_run.results}


def test_discovery_returns_hostname_and_os_of_every_device(
    emulator: WSManEmulator, addresses: list[str]
) -> None:
    # Given twenty Windows hosts
    tasks = make_tasks(emulator, addresses)

    # When the plugin discovers them
    plugin_run = run("discovery", tasks)

    # Then each gave its name and operating system, from one script in one shell
    assert plugin_run.ok and plugin_run.failures == {}
    results = by_ip(plugin_run, tasks)
    assert set(results) == set(addresses)
    for address, result in results.items():
        assert result["success"] is True and result["error"] is None
        assert result["data"]["hostname"] == "WIN-" + address.replace(".", "-")
        assert result["data"]["os"]["caption"].startswith("Microsoft Windows")
        assert result["data"]["os"]["version"].startswith("10.0.")
        assert emulator.script_counts(address) == {"discovery": 1}
        counts = emulator.request_counts(address)
        assert (counts["Create"], counts["Command"], counts["Delete"]) == (1, 1, 1)


def test_poll_collects_every_metric_in_four_round_trips_per_device(
    emulator: WSManEmulator, addresses: list[str]
) -> None:
    # Given twenty Windows hosts
    tasks = make_tasks(emulator, addresses)

    # When the plugin polls them
    plugin_run = run("poll", tasks)

    # Then each result has CPU, memory, disks, interfaces, uptime and automatic services
    assert plugin_run.ok and len(plugin_run.succeeded) == DEVICES
    for result in plugin_run.results:
        data = result["data"]
        assert 0 <= data["cpu_percent"] <= 100
        memory = data["memory"]
        assert memory["total_bytes"] >= memory["free_bytes"] > 0
        expected_used = (memory["total_bytes"] - memory["free_bytes"]) * 100 / memory["total_bytes"]
        assert memory["used_percent"] == pytest.approx(expected_used, abs=0.1)
        assert data["disks"][0]["name"] == "C:"
        assert data["disks"][0]["size_bytes"] > data["disks"][0]["free_bytes"] > 0
        assert {i["name"]: i["status"] for i in data["interfaces"]}["Ethernet0"] == "Up"
        assert data["uptime_seconds"] > 86_400
        services = data["services"]
        assert services["automatic_not_running"]
        assert services["automatic_total"] == services["automatic_running"] + len(
            services["automatic_not_running"]
        )

    # And each device cost one script and four HTTP requests: Create, Command, Receive, Delete
    for address in addresses:
        assert emulator.script_counts(address) == {"poll": 1}
        assert emulator.request_counts(address)["total"] == 4
        assert emulator.host(address).open_shell_count() == 0


def test_stopped_devices_fail_with_connection_refused_while_the_others_succeed(
    emulator: WSManEmulator, addresses: list[str]
) -> None:
    # Given twenty hosts of which five are down
    down = addresses[3:8]
    for address in down:
        emulator.stop(address)
    tasks = make_tasks(emulator, addresses, timeout=30)

    # When the plugin polls all twenty
    started = time.monotonic()
    plugin_run = run("poll", tasks)
    elapsed = time.monotonic() - started

    # Then the five are failures that say why, and the fifteen others have their metrics
    assert plugin_run.ok
    results = by_ip(plugin_run, tasks)
    for address in down:
        assert results[address]["success"] is False
        assert "connection refused" in results[address]["error"]
        assert plugin_run.failures[f"req-{address}"] == results[address]["error"]
    assert {a for a, r in results.items() if r["success"]} == set(addresses) - set(down)
    # A refused connection is known at once: nobody waited for the 30-second timeout
    assert elapsed < 15

    # And once they are back, the next poll reaches them
    for address in down:
        emulator.restart(address)
    assert len(run("poll", tasks).succeeded) == DEVICES


def test_wrong_password_fails_the_device_with_an_authentication_error(
    emulator: WSManEmulator, addresses: list[str]
) -> None:
    # Given a credential with the wrong password
    tasks = make_tasks(emulator, addresses[:2], password="not-the-password")

    # When the plugin discovers with it
    plugin_run = run("discovery", tasks)

    # Then every device failed on authentication
    assert plugin_run.ok and plugin_run.succeeded == []
    for result in plugin_run.results:
        error = result["error"] or ""
        assert "authentication failed" in error and "(HTTP 401)" in error


def test_slow_device_fails_at_its_own_timeout_while_the_others_succeed(
    emulator: WSManEmulator, addresses: list[str]
) -> None:
    # Given three hosts, one of which takes a minute to run any script
    slow = addresses[1]
    emulator.behaviour(slow).output_delay = 60
    tasks = make_tasks(emulator, addresses[:3], timeout=2)

    # When the plugin polls them with a two-second timeout per device
    started = time.monotonic()
    plugin_run = run("poll", tasks)
    elapsed = time.monotonic() - started

    # Then the slow one failed at its timeout, the others succeeded, and nobody waited a minute
    results = by_ip(plugin_run, tasks)
    assert results[slow]["success"] is False
    assert "timed out after 2s" in results[slow]["error"]
    assert [results[a]["success"] for a in (addresses[0], addresses[2])] == [True, True]
    assert elapsed < 8
    # And the plugin deleted the shell it left running there
    assert emulator.host(slow).open_shell_count() == 0


def test_bad_output_and_script_errors_are_failures_that_say_what_happened(
    emulator: WSManEmulator, addresses: list[str]
) -> None:
    # Given one host whose script prints garbage and one whose script fails
    garbled, failing = addresses[0], addresses[1]
    emulator.behaviour(garbled).stdout = b"Get-CimInstance : <garbled>\r\n"
    emulator.behaviour(failing).exit_code = 1
    emulator.behaviour(failing).stderr = (
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/'
        b'2004/04"><S S="Error">Access is denied._x000D__x000A_</S></Objs>'
    )
    tasks = make_tasks(emulator, addresses[:3])

    # When the plugin polls them
    results = by_ip(run("poll", tasks), tasks)

    # Then each failure names its cause, and the third host is unaffected
    assert results[garbled]["success"] is False
    assert "output is not JSON" in results[garbled]["error"]
    assert results[failing]["success"] is False
    assert "exit code 1" in results[failing]["error"]
    assert "Access is denied." in results[failing]["error"]
    assert results[addresses[2]]["success"] is True


def test_malformed_task_is_a_failure_result_and_the_batch_goes_on(
    emulator: WSManEmulator, addresses: list[str]
) -> None:
    # Given a batch with a good task, one with a bad port, and one for another protocol
    good, bad_port, snmp = make_tasks(emulator, addresses[:3])
    bad_port["port"] = "winrm"  # type: ignore[typeddict-item]
    snmp["protocol"] = "snmp"
    document = {"mode": "discovery", "tasks": [good, bad_port, snmp]}

    # When the plugin reads it directly (the pool would refuse the malformed task)
    completed = subprocess.run(
        PLUGIN, input=json.dumps(document).encode(), capture_output=True, cwd=REPO, timeout=60
    )

    # Then it still exits 0 with one result per task
    assert completed.returncode == 0
    results = {r["request_id"]: r for r in json.loads(completed.stdout)["results"]}
    assert results[good["request_id"]]["success"] is True
    assert "invalid task: tasks[1].port" in results[bad_port["request_id"]]["error"]
    assert "'snmp' is not WinRM" in results[snmp["request_id"]]["error"]


def test_unreadable_input_exits_2_without_output() -> None:
    # Given stdin that is not JSON, when the plugin reads it, then it exits 2 and says why
    completed = subprocess.run(
        PLUGIN, input=b"{not json", capture_output=True, cwd=REPO, timeout=60
    )
    assert completed.returncode == 2
    assert completed.stdout == b""
    assert b"stdin is not a JSON document" in completed.stderr


def test_password_never_appears_on_the_plugin_stdout_or_stderr(
    emulator: WSManEmulator, addresses: list[str]
) -> None:
    # Given hosts that fail in every way, one of which even prints the password back
    emulator.stop(addresses[0])
    emulator.behaviour(addresses[1]).stdout = f"echo {PASSWORD} is not JSON".encode()
    emulator.behaviour(addresses[2]).output_delay = 30
    tasks = make_tasks(emulator, addresses[:4], timeout=2)
    tasks.append(make_tasks(emulator, addresses[4:5], password=PASSWORD + "-wrong")[0])
    document = {"mode": "poll", "tasks": tasks}

    # When the plugin runs them with its most talkative logging
    completed = subprocess.run(
        [*PLUGIN, "--log-level", "DEBUG"],
        input=json.dumps(document).encode(),
        capture_output=True,
        cwd=REPO,
        timeout=60,
    )

    # Then the password is nowhere in what it wrote, though it did report every failure
    assert completed.returncode == 0
    assert PASSWORD.encode() not in completed.stdout
    assert PASSWORD.encode() not in completed.stderr
    results = json.loads(completed.stdout)["results"]
    assert [r["success"] for r in results] == [False, False, False, True, False]
    assert "********" in results[1]["error"]
    assert b"DEBUG" in completed.stderr  # the logging really was on


def test_scripts_fit_the_cmd_exe_command_line_limit() -> None:
    # Given the plugin's scripts, when encoded for powershell -EncodedCommand, then cmd.exe
    # (which WinRS runs the command through) can take them: 8191 characters at most
    for script in (DISCOVERY_SCRIPT, POLL_SCRIPT):
        assert len(encoded_command(script)) < 8191


def test_poll_data_accepts_powershell_single_items_and_nulls() -> None:
    # Given output where PowerShell printed a one-element array as the element, and none as null
    printed = {
        "cpu_percent": 12,
        "memory": {"total_bytes": 1000, "free_bytes": 250},
        "disks": {"name": "C:", "size_bytes": 100, "free_bytes": 40},
        "interfaces": None,
        "uptime_seconds": 3600.7,
        "services": {
            "automatic_total": 40,
            "automatic_running": 39,
            "automatic_not_running": "sppsvc",
        },
    }

    # When it is read, then it has the contract's shape
    data = poll_data(printed)
    assert data["disks"] == [{"name": "C:", "size_bytes": 100, "free_bytes": 40}]
    assert data["interfaces"] == []
    assert data["services"]["automatic_not_running"] == ["sppsvc"]
    assert data["memory"]["used_percent"] == 75.0
    assert data["uptime_seconds"] == 3600
