"""The JSON contract between Census and a monitoring plugin, as typed shapes and validators.

A plugin is an executable that reads one `PluginInput` document on stdin and writes one
`PluginOutput` document on stdout (docs/plugins.md is the reference for plugin authors). The plugin
pool validates what it sends and what it gets back with the functions below, and the plugins
written in Python use them to read their input, so both sides agree on one definition.

Validation errors name the offending field by its path (``tasks[2].port``) and never quote the
value of a credential field, so that a `ContractError` can be logged as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NotRequired, TypedDict, cast

Mode = Literal["discovery", "poll"]
MODES: tuple[Mode, ...] = ("discovery", "poll")

Scheme = Literal["http", "https"]
SCHEMES: tuple[Scheme, ...] = ("http", "https")

REDACTED = "********"


class ContractError(ValueError):
    """A document does not have the shape the plugin contract requires."""


# --- what Census sends on stdin ---------------------------------------------------------------


class Credential(TypedDict):
    username: str
    password: str
    transport: NotRequired[str]  # "ntlm" (default), "basic", "kerberos", "credssp", "ssl"
    scheme: NotRequired[Scheme]  # "http" (default) or "https"
    server_cert_validation: NotRequired[Literal["validate", "ignore"]]  # https only


class Task(TypedDict):
    request_id: str
    device_id: int | None
    ip: str
    port: int
    protocol: str
    credential: Credential
    timeout: float  # seconds this one device may take, from connect to the last answer


class PluginInput(TypedDict):
    mode: Mode
    tasks: list[Task]


# --- what a plugin writes on stdout -----------------------------------------------------------


class Result(TypedDict):
    request_id: str
    success: bool
    error: str | None
    data: dict[str, Any]


class PluginOutput(TypedDict):
    results: list[Result]


# --- the data of a successful result, per mode --------------------------------------------------


class OperatingSystem(TypedDict):
    caption: str  # "Microsoft Windows Server 2022 Standard"
    version: str  # "10.0.20348"
    build_number: str | None
    architecture: str | None  # "64-bit"


class DiscoveryData(TypedDict):
    hostname: str
    domain: str | None
    os: OperatingSystem


class Memory(TypedDict):
    total_bytes: int
    free_bytes: int
    used_percent: float


class LogicalDisk(TypedDict):
    name: str  # "C:"
    size_bytes: int
    free_bytes: int


class NetworkInterface(TypedDict):
    name: str
    status: str  # "Up", "Disconnected", "Disabled", ...
    bytes_sent: int
    bytes_received: int


class Services(TypedDict):
    automatic_total: int
    automatic_running: int
    automatic_not_running: list[str]  # service names (not display names)


class PollData(TypedDict):
    cpu_percent: float
    memory: Memory
    disks: list[LogicalDisk]
    interfaces: list[NetworkInterface]
    uptime_seconds: int
    services: Services


# --- constructors -----------------------------------------------------------------------------


def success_result(request_id: str, data: Mapping[str, Any]) -> Result:
    return {"request_id": request_id, "success": True, "error": None, "data": dict(data)}


def failure_result(request_id: str, error: str) -> Result:
    return {"request_id": request_id, "success": False, "error": error, "data": {}}


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in `text`, for text that leaves the process."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


# --- validators -------------------------------------------------------------------------------


def _require_mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ContractError(f"{path} must be a JSON object")
    return cast(Mapping[str, Any], value)


def _require_str(obj: Mapping[str, Any], key: str, path: str, *, empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (not empty and not value):
        raise ContractError(f"{path}.{key} must be a non-empty string")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(cast(float, value))


def validate_mode(value: object) -> Mode:
    if value not in MODES:
        raise ContractError(f"mode must be one of {', '.join(MODES)}")
    return value  # narrowed to Mode by the membership test


def validate_credential(value: object, path: str) -> Credential:
    obj = _require_mapping(value, path)
    credential: Credential = {
        "username": _require_str(obj, "username", path),
        # An empty password is a legitimate (if unwise) credential.
        "password": _require_str(obj, "password", path, empty=True),
    }
    if "transport" in obj:
        credential["transport"] = _require_str(obj, "transport", path)
    if "scheme" in obj:
        if obj["scheme"] not in SCHEMES:
            raise ContractError(f"{path}.scheme must be one of {', '.join(SCHEMES)}")
        credential["scheme"] = obj["scheme"]
    if "server_cert_validation" in obj:
        if obj["server_cert_validation"] not in ("validate", "ignore"):
            raise ContractError(f"{path}.server_cert_validation must be validate or ignore")
        credential["server_cert_validation"] = obj["server_cert_validation"]
    return credential


def validate_task(value: object, path: str = "task") -> Task:
    obj = _require_mapping(value, path)
    request_id = _require_str(obj, "request_id", path)
    device_id = obj.get("device_id")
    if device_id is not None and not _is_int(device_id):
        raise ContractError(f"{path}.device_id must be an integer or null")
    port = obj.get("port")
    if not _is_int(port) or not 0 < cast(int, port) < 65536:
        raise ContractError(f"{path}.port must be an integer from 1 to 65535")
    timeout = obj.get("timeout")
    if not _is_number(timeout) or cast(float, timeout) <= 0:
        raise ContractError(f"{path}.timeout must be a positive number of seconds")
    return {
        "request_id": request_id,
        "device_id": cast(int | None, device_id),
        "ip": _require_str(obj, "ip", path),
        "port": cast(int, port),
        "protocol": _require_str(obj, "protocol", path),
        "credential": validate_credential(obj.get("credential"), f"{path}.credential"),
        "timeout": cast(float, timeout),
    }


def request_id_of(value: object) -> str | None:
    """The request_id of a task that may be malformed, if it has a usable one."""
    if isinstance(value, Mapping):
        request_id = value.get("request_id")
        if isinstance(request_id, str) and request_id:
            return request_id
    return None


def validate_input(document: object) -> PluginInput:
    """The whole stdin document, every task included; raises on the first problem."""
    obj = _require_mapping(document, "input")
    tasks = obj.get("tasks")
    if not isinstance(tasks, list):
        raise ContractError("tasks must be a JSON array")
    validated = [validate_task(task, f"tasks[{index}]") for index, task in enumerate(tasks)]
    seen: set[str] = set()
    for task in validated:
        if task["request_id"] in seen:
            raise ContractError(f"request_id {task['request_id']!r} appears more than once")
        seen.add(task["request_id"])
    return {"mode": validate_mode(obj.get("mode")), "tasks": validated}


def validate_result(value: object, mode: Mode, path: str = "result") -> Result:
    obj = _require_mapping(value, path)
    request_id = _require_str(obj, "request_id", path)
    success = obj.get("success")
    if not isinstance(success, bool):
        raise ContractError(f"{path}.success must be true or false")
    error = obj.get("error")
    if error is not None and not isinstance(error, str):
        raise ContractError(f"{path}.error must be a string or null")
    data = obj.get("data")
    if success:
        data = _require_mapping(data, f"{path}.data")
        if mode == "discovery":
            _require_str(data, "hostname", f"{path}.data")
    else:
        # A failure may carry partial data, or none at all.
        data = _require_mapping(data, f"{path}.data") if data is not None else {}
        if not error:
            error = "the plugin reported a failure without an error message"
    return {"request_id": request_id, "success": success, "error": error, "data": dict(data)}


def validate_output(document: object, mode: Mode) -> PluginOutput:
    obj = _require_mapping(document, "output")
    results = obj.get("results")
    if not isinstance(results, list):
        raise ContractError("output.results must be a JSON array")
    return {
        "results": [
            validate_result(result, mode, f"results[{index}]")
            for index, result in enumerate(results)
        ]
    }
