"""The plugin pool survives plugins that hang, crash or talk nonsense, and leaks no password."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nms.plugin_pool import PluginRun, run_plugin
from nms.plugins.contract import Task
from tests.emulators.wsman import WSManEmulator, running_emulator

REPO = Path(__file__).resolve().parents[2]
PLUGINS = Path(__file__).resolve().parent / "plugins"
WINRM_PLUGIN = [sys.executable, "-m", "nms.plugins.winrm"]
USER = "Administrator"
PASSWORD = 'P00l-Pa$$word"quoted'


def plugin(name: str, *arguments: str) -> list[str]:
    return [sys.executable, str(PLUGINS / name), *arguments]


def make_tasks(count: int, port: int = 5985, ip: str = "127.0.0.1") -> list[Task]:
    return [
        {
            "request_id": f"req-{index}",
            "device_id": index,
            "ip": ip,
            "port": port,
            "protocol": "winrm",
            "credential": {"username": USER, "password": PASSWORD, "transport": "basic"},
            "timeout": 5,
        }
        for index in range(count)
    ]


@pytest.fixture
def pool_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="nms.plugin_pool")
    return caplog


@pytest.fixture
def emulator() -> Iterator[WSManEmulator]:
    with running_emulator(["127.0.0.1"], username=USER, password=PASSWORD) as started:
        yield started


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "nms.plugin_pool" and record.levelno >= logging.ERROR
    ]


def assert_failed_as_a_whole(plugin_run: PluginRun, tasks: list[Task], reason: str) -> None:
    assert plugin_run.results == []
    assert not plugin_run.ok and reason in (plugin_run.error or "")
    assert set(plugin_run.failures) == {task["request_id"] for task in tasks}
    assert all(reason in why for why in plugin_run.failures.values())


def process_gone(pid: int) -> bool:
    """No such process, or only a zombie that nothing reaps (as in a container without init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_hanging_plugin_and_its_children_are_killed_at_the_timeout(
    pool_log: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Given a plugin that starts a child and never answers
    pidfile = tmp_path / "pids"
    tasks = make_tasks(3)

    # When the pool runs it with a 1.5-second timeout
    started = time.monotonic()
    plugin_run = run_plugin(plugin("hang.py", str(pidfile)), "poll", tasks, timeout=1.5)
    elapsed = time.monotonic() - started

    # Then it gave up after about the timeout, with nothing but failures
    assert 1.5 <= elapsed < 3.0
    assert_failed_as_a_whole(plugin_run, tasks, "timed out after 1.5s")
    assert plugin_run.timed_out and plugin_run.exit_code == -9
    # And the plugin and its child are gone: the whole process group was killed
    pids = [int(line) for line in pidfile.read_text().split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 2
    while not all(process_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(process_gone(pid) for pid in pids)
    assert any("timed out" in message for message in errors_logged(pool_log))


def test_plugin_exiting_3_gives_no_results_even_with_well_formed_output(
    pool_log: pytest.LogCaptureFixture,
) -> None:
    # Given a plugin that prints good-looking results, echoes its input to stderr and exits 3
    tasks = make_tasks(2)

    # When the pool runs it
    plugin_run = run_plugin(plugin("exit_code.py", "3"), "discovery", tasks, timeout=30)

    # Then its output is not trusted: no results, every task failed, the exit code logged
    assert_failed_as_a_whole(plugin_run, tasks, "exited with code 3")
    assert plugin_run.exit_code == 3
    (message,) = errors_logged(pool_log)
    assert "exited with code 3" in message
    # And the log shows its stderr, with the password it echoed redacted
    assert "stderr: debug: got" in message and "********" in message
    assert PASSWORD not in pool_log.text
    assert PASSWORD.replace('"', '\\"') not in pool_log.text


def test_plugin_printing_garbage_gives_no_results_and_a_logged_error(
    pool_log: pytest.LogCaptureFixture,
) -> None:
    # Given a plugin that prints something that is not JSON and exits 0
    tasks = make_tasks(2)

    # When the pool runs it
    plugin_run = run_plugin(plugin("garbage.py"), "poll", tasks, timeout=30)

    # Then there are no results, every task failed, and the error was logged
    assert_failed_as_a_whole(plugin_run, tasks, "not valid JSON")
    assert plugin_run.exit_code == 0
    assert any("not valid JSON" in message for message in errors_logged(pool_log))


def test_output_of_the_wrong_shape_gives_no_results(pool_log: pytest.LogCaptureFixture) -> None:
    # Given a plugin whose JSON results lack the contract's fields
    tasks = make_tasks(2)

    # When the pool runs it, then nothing of it is kept and the mismatch is named
    plugin_run = run_plugin(plugin("wrong_shape.py"), "poll", tasks, timeout=30)
    assert_failed_as_a_whole(plugin_run, tasks, "results[0].success must be true or false")
    assert errors_logged(pool_log)


def test_unknown_results_are_dropped_and_tasks_without_a_result_count_as_failed(
    pool_log: pytest.LogCaptureFixture,
) -> None:
    # Given a plugin that answers the first of three tasks and one nobody asked for
    tasks = make_tasks(3)

    # When the pool runs it
    plugin_run = run_plugin(plugin("partial.py"), "discovery", tasks, timeout=30)

    # Then the one answer is kept, the stranger dropped with a warning, the other two failed
    assert plugin_run.ok
    assert [r["request_id"] for r in plugin_run.results] == ["req-0"]
    assert plugin_run.failures == {
        "req-1": "the plugin returned no result for this task",
        "req-2": "the plugin returned no result for this task",
    }
    warnings = [r.getMessage() for r in pool_log.records if r.levelno == logging.WARNING]
    assert any("unknown request_id nobody-asked" in message for message in warnings)
    assert any("2 task(s) got no result" in message for message in warnings)


def test_plugin_flooding_stdout_is_killed(pool_log: pytest.LogCaptureFixture) -> None:
    # Given a plugin that prints far more than the pool accepts
    flood = [sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('x' * 65536)"]
    tasks = make_tasks(1)

    # When the pool runs it with a 1 MB limit, then it is stopped long before its timeout
    started = time.monotonic()
    plugin_run = run_plugin(flood, "poll", tasks, timeout=30, max_output_bytes=1_000_000)
    assert time.monotonic() - started < 10
    assert_failed_as_a_whole(plugin_run, tasks, "more than 1000000 bytes")


def test_missing_executable_is_a_failed_run_not_a_crash(
    pool_log: pytest.LogCaptureFixture,
) -> None:
    # Given a plugin path that does not exist, when the pool runs it, then every task failed
    tasks = make_tasks(2)
    plugin_run = run_plugin(["/nonexistent/census-plugin"], "poll", tasks, timeout=5)
    assert_failed_as_a_whole(plugin_run, tasks, "cannot start the plugin")


def test_credentials_reach_the_plugin_on_stdin_only() -> None:
    # Given a plugin that reports its arguments and environment, and a worker environment that
    # holds a secret of the project's own
    tasks = make_tasks(1)
    os.environ["CENSUS_TEST_WORKER_SECRET"] = "worker-only"
    try:
        # When the pool runs it
        plugin_run = run_plugin(plugin("introspect.py"), "discovery", tasks, timeout=30)
    finally:
        del os.environ["CENSUS_TEST_WORKER_SECRET"]

    # Then the password is in neither, and the worker's environment did not leak through
    data = plugin_run.results[0]["data"]
    assert PASSWORD not in " ".join(data["argv"])
    assert all(PASSWORD not in value for value in data["environment"].values())
    assert "CENSUS_TEST_WORKER_SECRET" not in data["environment"]
    assert "PATH" in data["environment"]

    # And the pool refuses to put a password in argv or the environment at all
    with pytest.raises(ValueError, match="stdin only"):
        run_plugin(plugin("introspect.py", PASSWORD), "discovery", tasks, timeout=30)
    with pytest.raises(ValueError, match="stdin only"):
        run_plugin(plugin("introspect.py"), "discovery", tasks, 30, env={"X": PASSWORD})


def test_tasks_that_break_the_contract_are_refused_before_anything_runs() -> None:
    # Given two tasks with the same request_id, when submitted, then the pool refuses them
    tasks = make_tasks(2)
    tasks[1]["request_id"] = tasks[0]["request_id"]
    with pytest.raises(ValueError, match="its own request_id"):
        run_plugin(plugin("partial.py"), "poll", tasks, timeout=30)


def test_pool_goes_on_after_broken_plugins_and_never_logs_the_password(
    pool_log: pytest.LogCaptureFixture, emulator: WSManEmulator, tmp_path: Path
) -> None:
    # Given a run of every kind of broken plugin
    tasks = make_tasks(2, port=emulator.port)
    broken = [
        run_plugin(plugin("hang.py", str(tmp_path / "pids")), "poll", tasks, timeout=1),
        run_plugin(plugin("exit_code.py", "3"), "poll", tasks, timeout=30),
        run_plugin(plugin("garbage.py"), "poll", tasks, timeout=30),
    ]
    assert [plugin_run.results for plugin_run in broken] == [[], [], []]

    # When the WinRM plugin runs right after them
    plugin_run = run_plugin(WINRM_PLUGIN, "poll", tasks, timeout=30, cwd=REPO)

    # Then it works as if nothing had happened
    assert plugin_run.ok and plugin_run.failures == {}
    assert [r["request_id"] for r in plugin_run.succeeded] == ["req-0", "req-1"]
    assert plugin_run.succeeded[0]["data"]["memory"]["total_bytes"] > 0
    # And in all of that, no log line carried the password
    assert len(errors_logged(pool_log)) == 3
    assert PASSWORD not in pool_log.text
