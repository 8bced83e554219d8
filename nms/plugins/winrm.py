"""Census' WinRM monitoring plugin: discovery and polling of Windows hosts over WS-Management.

Run it as ``python -m nms.plugins.winrm [--workers N]`` (not as a file path: this module shares
its name with pywinrm's package). It reads one JSON document on stdin and writes one on stdout, as
docs/plugins.md describes. For each task it opens one WinRS shell on
``http(s)://ip:port/wsman`` and runs ONE PowerShell script for the mode (discovery or poll) that
prints everything as JSON, so that a device costs four HTTP round trips: Create, Command, Receive
(repeated only while a slow script runs) and Delete.

The tasks of a batch run concurrently on a small thread pool. Each has its own deadline, its
``timeout``: every HTTP request is sent with the time that is left as its connect/read timeout,
and the WS-Management OperationTimeout is kept below it. A device that fails (credentials
rejected, connection refused, timeout, a script error, output that is not what the script should
print) becomes a result with ``success: false`` and an error an operator can act on; it never
stops the batch. The password is never written anywhere: error texts are redacted before they
leave, and nothing logs a credential.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, NamedTuple, cast
from xml.etree.ElementTree import ParseError

import requests
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from nms.plugins.contract import (
    ContractError,
    DiscoveryData,
    LogicalDisk,
    Mode,
    NetworkInterface,
    PollData,
    Result,
    Task,
    failure_result,
    redact,
    request_id_of,
    success_result,
    validate_mode,
    validate_task,
)

logger = logging.getLogger("nms.plugins.winrm")

DEFAULT_WORKERS = 16
# WS-Management OperationTimeout cap: a Receive is held at most this long by the host.
MAX_OPERATION_TIMEOUT = 20
# How long the plugin waits for a worker after every task's own deadline passed.
STRAGGLER_GRACE = 5.0
# A script that prints more than this is not one of ours.
MAX_SCRIPT_OUTPUT = 8 * 1024 * 1024
# Shell cleanup after a failure gets at most this long, so a dead host costs little more.
CLEANUP_TIMEOUT = 2.0
UTF8_CODEPAGE = 65001

TRANSPORTS = {
    "ntlm": "ntlm",
    "basic": "basic",
    "plaintext": "basic",
    "kerberos": "kerberos",
    "credssp": "credssp",
    "ssl": "ssl",
}

# Each script starts with a marker comment that names it (the test emulator recognises it), keeps
# to PowerShell 3.0 (Windows Server 2012 and later) and prints one compressed JSON document whose
# keys already are the contract's. Errors go to stderr with exit code 1.
_PREAMBLE = (
    "$ErrorActionPreference='Stop';$ProgressPreference='SilentlyContinue'\n"
    "try{[Console]::OutputEncoding=New-Object Text.UTF8Encoding $false}catch{}\n"
)
_EPILOGUE = "}catch{[Console]::Error.WriteLine($_.Exception.Message);exit 1}\n"

DISCOVERY_SCRIPT = (
    "# census-nms-winrm:discovery v1\n" + _PREAMBLE + "try{\n"
    "$o=Get-CimInstance Win32_OperatingSystem\n"
    "$c=Get-CimInstance Win32_ComputerSystem\n"
    "[ordered]@{hostname=$env:COMPUTERNAME;domain=$c.Domain;os=[ordered]@{caption=$o.Caption;"
    "version=$o.Version;build_number=$o.BuildNumber;architecture=$o.OSArchitecture}}"
    "|ConvertTo-Json -Compress -Depth 4\n" + _EPILOGUE
)

POLL_SCRIPT = (
    "# census-nms-winrm:poll v1\n" + _PREAMBLE + "try{\n"
    "$o=Get-CimInstance Win32_OperatingSystem\n"
    "$cpu=(Get-CimInstance Win32_Processor|Measure-Object LoadPercentage -Average).Average\n"
    "$d=@(Get-CimInstance Win32_LogicalDisk -Filter 'DriveType=3'|%{[ordered]@{name=$_.DeviceID;"
    "size_bytes=[int64]$_.Size;free_bytes=[int64]$_.FreeSpace}})\n"
    "$n=@();try{$st=@{};Get-NetAdapterStatistics|%{$st[$_.Name]=$_}\n"
    "$n=@(Get-NetAdapter|%{$s=$st[$_.Name];[ordered]@{name=$_.Name;status=[string]$_.Status;"
    "bytes_sent=[int64]$s.SentBytes;bytes_received=[int64]$s.ReceivedBytes}})}catch{}\n"
    "$a=@(Get-CimInstance Win32_Service -Filter \"StartMode='Auto'\")\n"
    "$x=@($a|?{$_.State -ne 'Running'}|%{$_.Name})\n"
    "[ordered]@{cpu_percent=[double]$cpu;memory=[ordered]@{"
    "total_bytes=[int64]$o.TotalVisibleMemorySize*1024;"
    "free_bytes=[int64]$o.FreePhysicalMemory*1024};disks=$d;interfaces=$n;"
    "uptime_seconds=[int64]((Get-Date)-$o.LastBootUpTime).TotalSeconds;"
    "services=[ordered]@{automatic_total=$a.Count;automatic_running=$a.Count-$x.Count;"
    "automatic_not_running=$x}}|ConvertTo-Json -Compress -Depth 4\n" + _EPILOGUE
)

SCRIPTS: dict[Mode, str] = {"discovery": DISCOVERY_SCRIPT, "poll": POLL_SCRIPT}


def encoded_command(script: str) -> str:
    """The command line that runs `script`: cmd.exe limits it to 8191 characters."""
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return f"powershell -NoProfile -NonInteractive -EncodedCommand {encoded}"


class DeviceError(Exception):
    """Why one device gave no data, in words for the operator who reads the failure event."""


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def expired_error(self, address: str) -> DeviceError:
        return DeviceError(f"timed out after {self.seconds:g}s talking to {address}")


# --- one device --------------------------------------------------------------------------------


class WinRMDevice:
    """One WinRS shell on one host, every request bounded by the task's deadline."""

    def __init__(self, task: Task) -> None:
        credential = task["credential"]
        scheme = credential.get("scheme", "http")
        transport_name = credential.get("transport", "ntlm").lower()
        if transport_name not in TRANSPORTS:
            raise DeviceError(
                f"unsupported WinRM transport {transport_name!r}; use one of "
                f"{', '.join(sorted(TRANSPORTS))}"
            )
        self.address = f"{task['ip']}:{task['port']}"
        self.deadline = _Deadline(task["timeout"])
        read_timeout = max(2, math.ceil(task["timeout"]))
        self.protocol = Protocol(
            f"{scheme}://{_url_host(task['ip'])}:{task['port']}/wsman",
            transport=TRANSPORTS[transport_name],  # type: ignore[arg-type]
            username=credential["username"],
            password=credential["password"],
            server_cert_validation=credential.get("server_cert_validation", "validate"),
            # The CA bundle requests would use, named explicitly (None: certifi's).
            ca_trust_path=os.environ.get("REQUESTS_CA_BUNDLE") or None,  # type: ignore[arg-type]
            read_timeout_sec=read_timeout,
            operation_timeout_sec=min(MAX_OPERATION_TIMEOUT, read_timeout - 1),
            # Never route a device through a proxy taken from the environment.
            proxy=None,
        )

    def _arm(self) -> None:
        """Give the next HTTP request what is left of the deadline, and no more."""
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise self.deadline.expired_error(self.address)
        self.protocol.transport.read_timeout_sec = remaining  # type: ignore[assignment]
        self.protocol.operation_timeout_sec = max(
            1, min(MAX_OPERATION_TIMEOUT, math.floor(remaining - 0.5))
        )

    def run_powershell(self, script: str) -> tuple[bytes, bytes, int]:
        self._arm()
        shell_id = self.protocol.open_shell(codepage=UTF8_CODEPAGE, noprofile=True)
        finished = False
        try:
            self._arm()
            command_id = self.protocol.run_command(shell_id, encoded_command(script))
            output = self._receive(shell_id, command_id)
            finished = True
        finally:
            self._close(shell_id, after_failure=not finished)
        return output

    def _receive(self, shell_id: str, command_id: str) -> tuple[bytes, bytes, int]:
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        size = 0
        while True:
            self._arm()
            try:
                out, err, exit_code, done = self.protocol.get_command_output_raw(
                    shell_id, command_id
                )
            except WinRMOperationTimeoutError:
                continue  # the script is still running; the deadline decides how long we wait
            stdout.append(out)
            stderr.append(err)
            size += len(out) + len(err)
            if size > MAX_SCRIPT_OUTPUT:
                raise DeviceError(f"the script printed more than {MAX_SCRIPT_OUTPUT} bytes")
            if done:
                return b"".join(stdout), b"".join(stderr), exit_code

    def _close(self, shell_id: str, *, after_failure: bool) -> None:
        """Delete the shell (which ends its command) so that shells do not pile up on the host."""
        timeout = self.deadline.remaining()
        if after_failure:
            timeout = min(max(timeout, 0.5), CLEANUP_TIMEOUT)
        elif timeout <= 0:
            timeout = 0.5
        self.protocol.transport.read_timeout_sec = timeout  # type: ignore[assignment]
        self.protocol.operation_timeout_sec = max(1, min(MAX_OPERATION_TIMEOUT, int(timeout)))
        try:
            self.protocol.close_shell(shell_id)
        except Exception as error:
            # The data (or the first error) is what matters; a shell left behind times out on
            # the host by itself (its IdleTimeOut).
            logger.info("could not delete shell on %s: %s", self.address, type(error).__name__)


def _url_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is anywhere in the chain requests and urllib3 wrap around a socket error."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
        pending += [a for a in current.args if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
    return False


def _explain(error: Exception, address: str, deadline: _Deadline) -> str:
    """An operator's reading of what went wrong talking to one device."""
    if isinstance(error, DeviceError):
        return str(error)
    if isinstance(error, InvalidCredentialsError):
        return f"authentication failed on {address}: the credentials were rejected (HTTP 401)"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return f"timed out after {deadline.seconds:g}s connecting to {address}"
    if isinstance(error, requests.exceptions.ReadTimeout):
        return f"timed out after {deadline.seconds:g}s waiting for {address} to answer"
    if isinstance(error, requests.exceptions.SSLError):
        return f"TLS handshake with {address} failed"
    if isinstance(error, requests.exceptions.ConnectionError):
        if _caused_by(error, ConnectionRefusedError):
            return f"connection refused by {address}: is WinRM listening on that port?"
        if _caused_by(error, ConnectionResetError):
            return f"connection reset by {address}"
        if _caused_by(error, TimeoutError):
            return f"timed out after {deadline.seconds:g}s connecting to {address}"
        return f"cannot connect to {address}: host unreachable or connection dropped"
    if isinstance(error, WSManFaultError):
        code = f" (WSManFault {error.wsman_fault_code})" if error.wsman_fault_code else ""
        return f"WS-Management fault from {address}{code}: {error.reason}"
    if isinstance(error, WinRMTransportError):
        return f"unexpected HTTP {error.code} from {address}"
    if isinstance(error, WinRMError):
        return f"WinRM error with {address}: {error}"
    if isinstance(error, ParseError | StopIteration | AssertionError | KeyError):
        return f"malformed WS-Management reply from {address}"
    if isinstance(error, requests.exceptions.RequestException):
        return f"HTTP error with {address}: {type(error).__name__}"
    return f"unexpected error with {address}: {type(error).__name__}: {error}"


def _clean_stderr(stderr: bytes) -> str:
    """PowerShell's stderr, with its CLIXML envelope taken off, on one short line."""
    text = stderr.decode("utf-8", errors="replace")
    if text.startswith("#< CLIXML"):
        parts: list[str] = []
        for piece in text.split('<S S="Error">')[1:]:
            parts.append(piece.split("</S>", 1)[0])
        text = "".join(parts).replace("_x000D__x000A_", " ")
        for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&amp;", "&")):
            text = text.replace(entity, char)
    text = " ".join(text.split())
    return text[:300] or "(no error output)"


def _parse_script_output(stdout: bytes, mode: Mode) -> object:
    text = stdout.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    if not text:
        raise DeviceError(f"the {mode} script printed nothing")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        snippet = " ".join(text[:80].split())
        raise DeviceError(f"the {mode} script's output is not JSON: {snippet!r}") from None


# --- from what the script printed to the contract's shape --------------------------------------


def _field(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj or obj[key] is None:
        raise DeviceError(f"the script's output has no {path}{key}")
    return obj[key]


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DeviceError(f"the script's output has no object {what}")
    return value


def _integer(obj: Mapping[str, Any], key: str, path: str = "") -> int:
    value = _field(obj, key, path)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DeviceError(f"the script's output has a non-numeric {path}{key}")
    return max(0, int(value))


def _text(obj: Mapping[str, Any], key: str, path: str = "") -> str:
    value = _field(obj, key, path)
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise DeviceError(f"the script's output has a non-text {path}{key}")
    return str(value)


def _optional_text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return None if value is None or isinstance(value, bool) else str(value)


def _items(value: object) -> Iterator[Any]:
    """PowerShell prints a one-element array as the element, and an empty one as null."""
    if value is None:
        return iter(())
    if isinstance(value, list):
        return iter(value)
    return iter((value,))


def discovery_data(document: object) -> DiscoveryData:
    obj = _mapping(document, "at the top")
    os_info = _mapping(obj.get("os"), "os")
    hostname = _text(obj, "hostname").strip()
    if not hostname:
        raise DeviceError("the script's output has an empty hostname")
    return {
        "hostname": hostname,
        "domain": _optional_text(obj, "domain"),
        "os": {
            "caption": _text(os_info, "caption", "os.").strip(),
            "version": _text(os_info, "version", "os."),
            "build_number": _optional_text(os_info, "build_number"),
            "architecture": _optional_text(os_info, "architecture"),
        },
    }


def poll_data(document: object) -> PollData:
    obj = _mapping(document, "at the top")
    memory = _mapping(obj.get("memory"), "memory")
    total = _integer(memory, "total_bytes", "memory.")
    free = min(_integer(memory, "free_bytes", "memory."), total)
    cpu = _field(obj, "cpu_percent", "")
    if isinstance(cpu, bool) or not isinstance(cpu, int | float) or not math.isfinite(cpu):
        raise DeviceError("the script's output has a non-numeric cpu_percent")
    disks: list[LogicalDisk] = []
    for disk in _items(obj.get("disks")):
        disk = _mapping(disk, "in disks")
        disks.append(
            {
                "name": _text(disk, "name", "disks[]."),
                "size_bytes": _integer(disk, "size_bytes", "disks[]."),
                "free_bytes": _integer(disk, "free_bytes", "disks[]."),
            }
        )
    interfaces: list[NetworkInterface] = []
    for interface in _items(obj.get("interfaces")):
        interface = _mapping(interface, "in interfaces")
        interfaces.append(
            {
                "name": _text(interface, "name", "interfaces[]."),
                "status": _text(interface, "status", "interfaces[]."),
                "bytes_sent": _integer(interface, "bytes_sent", "interfaces[]."),
                "bytes_received": _integer(interface, "bytes_received", "interfaces[]."),
            }
        )
    services = _mapping(obj.get("services"), "services")
    return {
        "cpu_percent": round(min(max(float(cpu), 0.0), 100.0), 1),
        "memory": {
            "total_bytes": total,
            "free_bytes": free,
            "used_percent": round((total - free) * 100 / total, 1) if total else 0.0,
        },
        "disks": disks,
        "interfaces": interfaces,
        "uptime_seconds": _integer(obj, "uptime_seconds"),
        "services": {
            "automatic_total": _integer(services, "automatic_total", "services."),
            "automatic_running": _integer(services, "automatic_running", "services."),
            "automatic_not_running": [
                str(name) for name in _items(services.get("automatic_not_running"))
            ],
        },
    }


_DATA: dict[Mode, Callable[[object], Mapping[str, Any]]] = {
    "discovery": discovery_data,
    "poll": poll_data,
}


def run_task(task: Task, mode: Mode) -> Result:
    """Discover or poll one device; every failure becomes a result, never an exception."""
    address = f"{task['ip']}:{task['port']}"
    secrets = [task["credential"]["password"]]
    deadline = _Deadline(task["timeout"])
    try:
        if task["protocol"].lower() != "winrm":
            raise DeviceError(f"protocol {task['protocol']!r} is not WinRM")
        device = WinRMDevice(task)
        deadline = device.deadline
        stdout, stderr, exit_code = device.run_powershell(SCRIPTS[mode])
        if exit_code != 0:
            raise DeviceError(
                f"the {mode} script failed on {address} with exit code {exit_code}: "
                f"{_clean_stderr(stderr)}"
            )
        data = _DATA[mode](_parse_script_output(stdout, mode))
    except Exception as error:
        message = redact(_explain(error, address, deadline), secrets)
        logger.info("%s %s failed: %s", mode, address, message)
        return failure_result(task["request_id"], message)
    return success_result(task["request_id"], data)


# --- the batch ---------------------------------------------------------------------------------


class BatchOutcome(NamedTuple):
    results: list[Result]
    # Workers still busy after every deadline and the grace: the process must not wait for them.
    abandoned: int


def run_batch(mode: Mode, tasks: Sequence[object], workers: int = DEFAULT_WORKERS) -> BatchOutcome:
    """One result per task that has a request_id, in the order of the tasks."""
    # Each slot is either a result already known (a malformed task) or a task to run.
    slots: list[Result | Task] = []
    runnable: list[Task] = []
    for index, raw in enumerate(tasks):
        try:
            task = validate_task(raw, f"tasks[{index}]")
        except ContractError as error:
            request_id = request_id_of(raw)
            if request_id is None:
                logger.warning("skipped tasks[%d]: it has no request_id", index)
            else:
                slots.append(failure_result(request_id, f"invalid task: {error}"))
            continue
        slots.append(task)
        runnable.append(task)
    if not runnable:
        return BatchOutcome(results=cast(list[Result], slots), abandoned=0)

    workers = max(1, min(workers, len(runnable)))
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="winrm")
    futures = {id(task): executor.submit(run_task, task, mode) for task in runnable}
    # A task's deadline starts when a worker picks it up; the last wave starts this late.
    waves = math.ceil(len(runnable) / workers)
    patience = max(task["timeout"] for task in runnable) * waves + STRAGGLER_GRACE
    _, stragglers = wait(futures.values(), timeout=patience)
    executor.shutdown(wait=not stragglers, cancel_futures=True)

    results: list[Result] = []
    for slot in slots:
        future = futures.get(id(slot))
        if future is None:
            results.append(cast(Result, slot))
        elif future.done() and not future.cancelled():
            results.append(future.result())
        else:
            task = cast(Task, slot)
            message = f"timed out after {task['timeout']:g}s"
            results.append(failure_result(task["request_id"], message))
    return BatchOutcome(results=results, abandoned=len(stragglers))


def _write_output(results: list[Result]) -> None:
    sys.stdout.write(json.dumps({"results": results}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _fail(message: str, exit_code: int = 2) -> int:
    """Exit code 2: the input is unusable; 1: the plugin itself broke."""
    print(f"nms.plugins.winrm: {message}", file=sys.stderr)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nms.plugins.winrm",
        description="Census WinRM plugin: a JSON task list on stdin, JSON results on stdout.",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"devices handled at once (default {DEFAULT_WORKERS})",
    )
    parser.add_argument("--log-level", default="WARNING", help="log level on stderr")
    options = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=options.log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        document = json.loads(sys.stdin.buffer.read())
    except (ValueError, UnicodeDecodeError) as error:
        return _fail(f"stdin is not a JSON document ({type(error).__name__})")
    if not isinstance(document, dict) or not isinstance(document.get("tasks"), list):
        return _fail("stdin must be an object with a tasks array")
    try:
        mode = validate_mode(document.get("mode"))
    except ContractError as error:
        return _fail(str(error))
    secrets = _passwords_in(document["tasks"])
    try:
        outcome = run_batch(mode, document["tasks"], max(1, options.workers))
    except Exception as error:
        # A bug of ours: say what it was, but not with a traceback that could quote a credential.
        return _fail(redact(f"internal error: {type(error).__name__}: {error}", secrets), 1)
    _write_output(outcome.results)
    if outcome.abandoned:
        # A worker stuck past every deadline must not hold the process: the answer is out.
        sys.stderr.flush()
        os._exit(0)
    return 0


def _passwords_in(tasks: list[Any]) -> list[str]:
    passwords: list[str] = []
    for task in tasks:
        credential = task.get("credential") if isinstance(task, dict) else None
        if isinstance(credential, dict) and isinstance(credential.get("password"), str):
            passwords.append(credential["password"])
    return passwords


if __name__ == "__main__":
    sys.exit(main())
