"""The plugin pool: runs a monitoring plugin on a batch of tasks (seed 003 §1, §2 and §8).

A plugin is an executable that reads one JSON document on stdin and writes one on stdout
(docs/plugins.md). `run_plugin` starts it in a process group of its own, hands it the tasks on
stdin, reads its stdout, and gives it `timeout` seconds for the whole batch: past that the
process group is killed. A run that fails as a whole (timeout, exit code other than 0, output that
is not JSON or does not have the contract's shape) yields no results at all, an error logged on the
``nms.plugin_pool`` logger, and a failure reason for every request_id, so that the caller can
record one failure event per device. Results for request_ids that were not asked for are dropped
with a warning; tasks left without a result count as failed.

Credentials travel only on the plugin's stdin: never in its arguments or environment (the child
gets a small allow-listed environment, not the worker's, which holds the project's own secrets),
and never in a log line: stderr excerpts are redacted before they are logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from nms.plugins.contract import (
    ContractError,
    Mode,
    Result,
    Task,
    redact,
    validate_mode,
    validate_output,
    validate_task,
)

logger = logging.getLogger("nms.plugin_pool")

DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
STDERR_TAIL_BYTES = 2048
_CHUNK = 64 * 1024

# The only variables of the worker's environment a plugin inherits.
ENVIRONMENT_ALLOWLIST = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYTHONPATH",
    "SYSTEMROOT",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
)


@dataclass(frozen=True)
class PluginRun:
    """What one run of a plugin produced, and for each task that did not succeed, why."""

    mode: Mode
    # The results that answer a task, successful or not; empty when the run failed as a whole.
    results: list[Result]
    # request_id → reason, for every task without a successful result.
    failures: dict[str, str]
    # Why the run failed as a whole; None when the plugin answered with a well-formed document.
    error: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    duration: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def succeeded(self) -> list[Result]:
        return [result for result in self.results if result["success"]]

    @property
    def failed_request_ids(self) -> list[str]:
        return list(self.failures)


@dataclass
class _Exchange:
    stdout: bytes
    stderr_tail: bytes
    exit_code: int | None
    timed_out: bool
    overflowed: bool


def run_plugin(
    executable: Sequence[str],
    mode: Mode,
    tasks: Sequence[Task],
    timeout: float,
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> PluginRun:
    """Run `executable` on `tasks` in `mode`, killing it after `timeout` seconds.

    `env` adds variables to the allow-listed environment. Raises ValueError when the tasks break
    the contract (a programming error on our side) or when a password would reach the plugin other
    than on stdin.
    """
    mode = validate_mode(mode)
    checked = [validate_task(task, f"tasks[{index}]") for index, task in enumerate(tasks)]
    request_ids = [task["request_id"] for task in checked]
    if len(set(request_ids)) != len(request_ids):
        raise ValueError("every task of a batch needs its own request_id")
    if not checked:
        return PluginRun(mode=mode, results=[], failures={})
    if timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    secrets = _secrets_of(checked)
    _refuse_secrets_outside_stdin(executable, env, secrets)

    label = _label(executable)
    payload = json.dumps({"mode": mode, "tasks": checked}).encode()
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            list(executable),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=_child_environment(env),
            start_new_session=True,  # its own process group, so a timeout kills its children too
            close_fds=True,
        )
    except OSError as error:
        return _failed_run(
            mode,
            request_ids,
            label,
            f"cannot start the plugin: {error.strerror or type(error).__name__}",
            secrets,
            duration=time.monotonic() - started,
        )

    exchange = _exchange(process, payload, timeout, max_output_bytes)
    duration = time.monotonic() - started
    failure = _run_failure(exchange, timeout, max_output_bytes)
    if failure is None:
        try:
            document = _parse(exchange.stdout)
            output = validate_output(document, mode)
        except ContractError as error:
            failure = f"plugin output does not match the contract: {error}"
        except ValueError as error:
            failure = str(error)
    if failure is not None:
        return _failed_run(
            mode,
            request_ids,
            label,
            failure,
            secrets,
            stderr_tail=exchange.stderr_tail,
            exit_code=exchange.exit_code,
            timed_out=exchange.timed_out,
            duration=duration,
        )

    if exchange.stderr_tail:
        logger.debug(
            "plugin %s wrote on stderr: %s", label, _printable(exchange.stderr_tail, secrets)
        )
    return _collect(mode, request_ids, output["results"], label, secrets, exchange, duration)


def _collect(
    mode: Mode,
    request_ids: list[str],
    results: list[Result],
    label: str,
    secrets: set[str],
    exchange: _Exchange,
    duration: float,
) -> PluginRun:
    wanted = set(request_ids)
    answered: dict[str, Result] = {}
    warnings: list[str] = []
    for result in results:
        request_id = result["request_id"]
        if request_id not in wanted:
            warnings.append(f"result for unknown request_id {_printable(request_id, secrets)}")
        elif request_id in answered:
            warnings.append(f"second result for request_id {request_id!r} ignored")
        else:
            answered[request_id] = result
    failures: dict[str, str] = {}
    missing = 0
    for request_id in request_ids:
        answer = answered.get(request_id)
        if answer is None:
            failures[request_id] = "the plugin returned no result for this task"
            missing += 1
        elif not answer["success"]:
            failures[request_id] = answer["error"] or "failed without an error message"
    if missing:
        warnings.append(f"{missing} task(s) got no result")
    for warning in warnings:
        logger.warning("plugin %s (%s): %s; dropped", label, mode, warning)
    ordered = [answered[request_id] for request_id in request_ids if request_id in answered]
    logger.info(
        "plugin %s (%s): %d task(s), %d succeeded, %d failed, in %.2fs",
        label,
        mode,
        len(request_ids),
        len(request_ids) - len(failures),
        len(failures),
        duration,
    )
    return PluginRun(
        mode=mode,
        results=ordered,
        failures=failures,
        exit_code=exchange.exit_code,
        duration=duration,
        warnings=warnings,
    )


def _failed_run(
    mode: Mode,
    request_ids: list[str],
    label: str,
    error: str,
    secrets: set[str],
    *,
    stderr_tail: bytes = b"",
    exit_code: int | None = None,
    timed_out: bool = False,
    duration: float = 0.0,
) -> PluginRun:
    error = redact(error, _secret_forms(secrets))
    detail = f"; stderr: {_printable(stderr_tail, secrets)}" if stderr_tail.strip() else ""
    logger.error(
        "plugin %s (%s) failed on a batch of %d task(s): %s%s",
        label,
        mode,
        len(request_ids),
        error,
        detail,
    )
    reason = f"plugin run failed: {error}"
    return PluginRun(
        mode=mode,
        results=[],
        failures=dict.fromkeys(request_ids, reason),
        error=error,
        exit_code=exit_code,
        timed_out=timed_out,
        duration=duration,
    )


def _run_failure(exchange: _Exchange, timeout: float, max_output_bytes: int) -> str | None:
    if exchange.timed_out:
        return f"plugin timed out after {timeout:g}s and was killed"
    if exchange.overflowed:
        return f"plugin wrote more than {max_output_bytes} bytes on stdout and was killed"
    code = exchange.exit_code
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"plugin was killed by {name}"
    if code != 0:
        return f"plugin exited with code {code}"
    return None


def _parse(stdout: bytes) -> Any:
    text = stdout.decode("utf-8", errors="replace").strip()
    if not text:
        raise ValueError("plugin wrote nothing on stdout")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"plugin output is not valid JSON ({error.msg} at line {error.lineno} "
            f"column {error.colno})"
        ) from None


# --- the process --------------------------------------------------------------------------------


def _exchange(
    process: subprocess.Popen[bytes], payload: bytes, timeout: float, max_output_bytes: int
) -> _Exchange:
    """Write the payload, read stdout and stderr until EOF, and wait for the exit, all within
    `timeout`; past it (or past `max_output_bytes` of stdout) the process group is killed."""
    deadline = time.monotonic() + timeout
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr
    assert stdin is not None and stdout is not None and stderr is not None
    out = bytearray()
    err = bytearray()
    written = 0
    timed_out = overflowed = False
    open_pipes: list[IO[bytes]] = [stdin, stdout, stderr]
    with selectors.DefaultSelector() as selector:
        os.set_blocking(stdin.fileno(), False)
        selector.register(stdin, selectors.EVENT_WRITE)
        selector.register(stdout, selectors.EVENT_READ)
        selector.register(stderr, selectors.EVENT_READ)
        while selector.get_map() and not overflowed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(remaining):
                pipe: IO[bytes] = key.fileobj  # type: ignore[assignment]
                if pipe is stdin:
                    try:
                        written += os.write(stdin.fileno(), payload[written : written + _CHUNK])
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, ConnectionResetError):
                        written = len(payload)  # it stopped reading: its exit code will tell
                    if written >= len(payload):
                        selector.unregister(stdin)
                        _close(stdin, open_pipes)
                    continue
                chunk = os.read(pipe.fileno(), _CHUNK)
                if not chunk:
                    selector.unregister(pipe)
                    _close(pipe, open_pipes)
                elif pipe is stdout:
                    out += chunk
                    overflowed = len(out) > max_output_bytes
                else:
                    err += chunk
                    del err[: max(0, len(err) - STDERR_TAIL_BYTES)]
    exit_code: int | None = None
    if not timed_out and not overflowed:
        try:
            exit_code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True  # it closed its output but went on running
    if timed_out or overflowed:
        exit_code = _kill_group(process)
    for pipe in list(open_pipes):
        _close(pipe, open_pipes)
    return _Exchange(bytes(out), bytes(err), exit_code, timed_out, overflowed)


def _kill_group(process: subprocess.Popen[bytes]) -> int:
    # The leader has not been reaped yet, so its pid (the group id) cannot have been reused.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    return process.wait()


def _close(pipe: IO[bytes], open_pipes: list[IO[bytes]]) -> None:
    if pipe in open_pipes:
        open_pipes.remove(pipe)
        with contextlib.suppress(OSError):
            pipe.close()


def _child_environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    environment = {name: os.environ[name] for name in ENVIRONMENT_ALLOWLIST if name in os.environ}
    environment.update(extra or {})
    return environment


# --- secrets -----------------------------------------------------------------------------------


def _secrets_of(tasks: Iterable[Task]) -> set[str]:
    return {task["credential"]["password"] for task in tasks if task["credential"]["password"]}


def _secret_forms(secrets: Iterable[str]) -> set[str]:
    """Each secret as it is, and as it looks inside a JSON string (a plugin may echo its input)."""
    forms: set[str] = set()
    for secret in secrets:
        forms.add(secret)
        forms.add(json.dumps(secret)[1:-1])
        forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    return forms


def _refuse_secrets_outside_stdin(
    executable: Sequence[str], env: Mapping[str, str] | None, secrets: set[str]
) -> None:
    exposed = [*executable, *(env or {}).values(), *(env or {}).keys()]
    if any(secret in value for secret in secrets for value in exposed):
        raise ValueError("credentials go to a plugin on stdin only, never in argv or environment")


def _printable(data: bytes | str, secrets: Iterable[str], limit: int = 500) -> str:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = redact(text, _secret_forms(secrets))
    text = " ".join(text.split())
    return text if len(text) <= limit else "…" + text[-limit:]


def _label(executable: Sequence[str]) -> str:
    return shlex.join(executable)
