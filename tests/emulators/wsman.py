"""A WS-Management (WinRM) emulator for tests: Windows hosts on loopback addresses.

Each emulated host is one small HTTP server listening on its own address (127.0.0.x) and a shared
port, answering the WinRS shell operations that pywinrm sends to ``/wsman``: Create, Command,
Receive, Signal, Send and Delete. Replies have the shapes a real Windows host sends (the recorded
request/response pairs in the pypsrp project show them): a Create reply carries the ShellId both as
``<w:Selector Name="ShellId">`` in the ``x:ResourceCreated`` reference parameters and as
``rsp:ShellId`` in the ``rsp:Shell`` that follows, and every reply's ``a:RelatesTo`` echoes the
request's ``a:MessageID``. Authentication is HTTP Basic; a wrong user or password gets HTTP 401.

Commands are answered, not run: ``powershell -EncodedCommand <base64 UTF-16LE>`` is decoded, and a
script carrying the marker comment ``census-nms-winrm:discovery`` or ``census-nms-winrm:poll`` (the
Census WinRM plugin's scripts) gets realistic ``ConvertTo-Json -Compress`` output for a Windows host
whose name comes from the listening address (127.0.0.5 is ``WIN-127-0-0-5``). ``hostname``,
``whoami``, ``echo`` and ``Write-Output``/``Write-Error`` work too; anything else fails the way
cmd or PowerShell would.

Usage::

    with WSManEmulator(username="Administrator", password="s3cret") as emulator:
        emulator.start(["127.0.0.1", "127.0.0.2"], port=0)
        emulator.endpoint("127.0.0.2")        # "http://127.0.0.2:<port>/wsman"
        emulator.stop("127.0.0.2")            # that host is now unreachable (connection refused)
        emulator.restart("127.0.0.2")
        emulator.script_counts("127.0.0.1")   # Counter({"poll": 3, "discovery": 1})
        emulator.behaviour("127.0.0.1").output_delay = 5.0   # a slow host

Only loopback addresses are accepted: the emulator refuses to listen anywhere else.

From a shell, to try the monitor without Windows machines (README, "Monitoring Windows machines")::

    python -m tests.emulators.wsman 127.0.0.1-127.0.0.20 --port 5985 --password s3cret
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import json
import random
import re
import shlex
import socket
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}

SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
ACTIONS = {
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create": "Create",
    f"{SHELL}/Command": "Command",
    f"{SHELL}/Receive": "Receive",
    f"{SHELL}/Signal": "Signal",
    f"{SHELL}/Send": "Send",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete": "Delete",
}
RESPONSE_ACTIONS = {
    "Create": "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
    "Command": f"{SHELL}/CommandResponse",
    "Receive": f"{SHELL}/ReceiveResponse",
    "Signal": f"{SHELL}/SignalResponse",
    "Send": f"{SHELL}/SendResponse",
    "Delete": "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse",
}
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
STATE_DONE = f"{SHELL}/CommandState/Done"
STATE_RUNNING = f"{SHELL}/CommandState/Running"

# WSManFault codes a real host uses for these situations.
FAULT_OPERATION_TIMEOUT = 2150858793
FAULT_SHELL_NOT_FOUND = 2150858843
FAULT_ACTION_NOT_SUPPORTED = 2150858771

SCRIPT_MARKER = re.compile(r"census-nms-winrm:(discovery|poll)\b")
DEFAULT_PORT_ATTEMPTS = 20


def hostname_for(address: str) -> str:
    """The Windows computer name of the emulated host at `address`: 127.0.0.5 → WIN-127-0-0-5."""
    return "WIN-" + re.sub(r"[^0-9A-Za-z]+", "-", address).strip("-").upper()


def bindable_loopback_addresses(count: int, port: int = 0) -> list[str]:
    """The first `count` addresses of 127.0.0.1, 127.0.0.2, ... that this machine lets us bind.

    On Linux the whole of 127.0.0.0/8 is routed to lo; elsewhere (macOS) only 127.0.0.1 may be,
    and a test that needs more addresses should skip.
    """
    found: list[str] = []
    for last in range(1, 255):
        if len(found) == count:
            break
        address = f"127.0.0.{last}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
        found.append(address)
    return found


def _require_loopback(address: str) -> None:
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"the WS-Management emulator listens on loopback only, not {address}")


# --- what an emulated host does --------------------------------------------------------------


@dataclass
class HostBehaviour:
    """How one emulated host answers. The defaults are a healthy Windows Server.

    Change the fields at any time; a request reads them when it arrives.
    """

    output_delay: float = 0.0  # seconds a command runs before its output is ready
    stall: float = 0.0  # seconds every HTTP request is held before it is answered at all
    stdout: bytes | None = None  # replaces the stdout of every command (e.g. garbage)
    stderr: bytes | None = None  # replaces the stderr of every command
    exit_code: int | None = None  # replaces the exit code of every command
    stopped_services: tuple[str, ...] | None = None  # automatic services reported not running


@dataclass
class _Command:
    command_id: str
    stdout: bytes
    stderr: bytes
    exit_code: int
    ready_at: float
    stdout_sent: int = 0
    stderr_sent: int = 0


@dataclass
class _Shell:
    shell_id: str
    commands: dict[str, _Command] = field(default_factory=dict)


_OS_PROFILES = (
    ("Microsoft Windows Server 2022 Standard", "10.0.20348", "20348"),
    ("Microsoft Windows Server 2019 Datacenter", "10.0.17763", "17763"),
    ("Microsoft Windows Server 2016 Standard", "10.0.14393", "14393"),
    ("Microsoft Windows 11 Pro", "10.0.22631", "22631"),
)
# fmt: off
_AUTOMATIC_SERVICES = (
    "BFE", "BrokerInfrastructure", "CDPSvc", "CoreMessagingRegistrar", "CryptSvc", "DcomLaunch",
    "Dhcp", "DiagTrack", "DPS", "Dnscache", "EventLog", "EventSystem", "FontCache", "gpsvc",
    "iphlpsvc", "LanmanServer", "LanmanWorkstation", "lmhosts", "LSM", "MapsBroker", "MpsSvc",
    "NlaSvc", "nsi", "Power", "ProfSvc", "RemoteRegistry", "RpcEptMapper", "RpcSs", "SamSs",
    "Schedule", "SENS", "ShellHWDetection", "Spooler", "sppsvc", "SystemEventsBroker", "Themes",
    "TrkWks", "UserManager", "W32Time", "WinDefend", "Winmgmt", "WinRM", "WpnService",
)
# fmt: on
_USUALLY_STOPPED = ("MapsBroker", "RemoteRegistry", "sppsvc", "CDPSvc", "gpsvc")

_CLIXML_PROGRESS = (
    b"#< CLIXML\r\n"
    b'<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    b'<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject'
    b'</T><T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing '
    b"modules for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T>"
    b"<SR>-1</SR><SD> </SD></PR></MS></Obj></Objs>"
)


def _clixml_error(message: str) -> bytes:
    text = escape(message).replace("\r\n", "_x000D__x000A_").replace("\n", "_x000D__x000A_")
    return (
        "#< CLIXML\r\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        f'<S S="Error">{text}_x000D__x000A_</S></Objs>'
    ).encode()


class WindowsHost:
    """One emulated machine: its name, its open shells, its counters and its behaviour."""

    def __init__(self, address: str, username: str) -> None:
        self.address = address
        self.hostname = hostname_for(address)
        self.username = username
        self.behaviour = HostBehaviour()
        self._lock = threading.Lock()
        self._shells: dict[str, _Shell] = {}
        self._requests: Counter[str] = Counter()
        self._scripts: Counter[str] = Counter()
        self._seed = zlib.crc32(address.encode())
        self._booted_at = time.time() - 86_400 * (1 + self._seed % 40) - self._seed % 3600
        self.stopping = threading.Event()

    # counters

    def count_request(self, operation: str) -> None:
        with self._lock:
            self._requests[operation] += 1
            self._requests["total"] += 1

    def request_counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._requests)

    def script_counts(self) -> Counter[str]:
        with self._lock:
            return Counter(self._scripts)

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()
            self._scripts.clear()

    # shells

    def open_shell(self) -> str:
        shell_id = str(uuid.uuid4()).upper()
        with self._lock:
            self._shells[shell_id] = _Shell(shell_id)
        return shell_id

    def shell(self, shell_id: str) -> _Shell | None:
        with self._lock:
            return self._shells.get(shell_id)

    def close_shell(self, shell_id: str) -> bool:
        with self._lock:
            return self._shells.pop(shell_id, None) is not None

    def open_shell_count(self) -> int:
        with self._lock:
            return len(self._shells)

    def forget_shells(self) -> None:
        with self._lock:
            self._shells.clear()

    def start_command(self, shell: _Shell, command_line: str, command_id: str | None) -> _Command:
        stdout, stderr, exit_code = self._execute(command_line)
        behaviour = self.behaviour
        command = _Command(
            command_id=command_id or str(uuid.uuid4()).upper(),
            stdout=behaviour.stdout if behaviour.stdout is not None else stdout,
            stderr=behaviour.stderr if behaviour.stderr is not None else stderr,
            exit_code=behaviour.exit_code if behaviour.exit_code is not None else exit_code,
            ready_at=time.monotonic() + behaviour.output_delay,
        )
        with self._lock:
            shell.commands[command.command_id] = command
        return command

    # what the commands print

    def _execute(self, command_line: str) -> tuple[bytes, bytes, int]:
        try:
            words = shlex.split(command_line, posix=False)
        except ValueError:
            words = command_line.split()
        if not words:
            return b"", b"", 0
        program = words[0].lower().removesuffix(".exe")
        if program in ("powershell", "pwsh"):
            return self._powershell(words[1:])
        if program == "hostname":
            return f"{self.hostname}\r\n".encode(), b"", 0
        if program == "whoami":
            return f"{self.hostname.lower()}\\{self.username.lower()}\r\n".encode(), b"", 0
        if program == "echo":
            return (" ".join(words[1:]) + "\r\n").encode(), b"", 0
        message = (
            f"'{words[0]}' is not recognized as an internal or external command,\r\n"
            "operable program or batch file.\r\n"
        )
        return b"", message.encode(), 1

    def _powershell(self, arguments: list[str]) -> tuple[bytes, bytes, int]:
        encoded: str | None = None
        for index, argument in enumerate(arguments[:-1]):
            # PowerShell accepts any unambiguous prefix: -e, -ec, -enc, -EncodedCommand.
            name = argument.lower()
            if name in ("-e", "-ec") or (
                name.startswith("-en") and "-encodedcommand".startswith(name)
            ):
                encoded = arguments[index + 1]
                break
        if encoded is None:
            return b"", _clixml_error("This emulator only runs -EncodedCommand scripts."), 1
        try:
            script = base64.b64decode(encoded, validate=True).decode("utf-16-le")
        except (binascii.Error, UnicodeDecodeError):
            message = (
                "Cannot process the command because the value specified with -EncodedCommand "
                "is not properly encoded."
            )
            return b"", _clixml_error(message), 1
        return self._run_script(script)

    def _run_script(self, script: str) -> tuple[bytes, bytes, int]:
        marker = SCRIPT_MARKER.search(script)
        with self._lock:
            kind = marker.group(1) if marker else "other"
            self._scripts[kind] += 1
            first_run = sum(self._scripts.values()) == 1
            poll_number = self._scripts["poll"]
        progress = _CLIXML_PROGRESS if first_run else b""
        if marker and marker.group(1) == "discovery":
            return _powershell_json(self.discovery_document()), progress, 0
        if marker and marker.group(1) == "poll":
            return _powershell_json(self.poll_document(poll_number)), progress, 0
        return self._simple_script(script.strip())

    def _simple_script(self, script: str) -> tuple[bytes, bytes, int]:
        match = re.fullmatch(r"(?is)(Write-Output|echo|Write-Host)\s+(['\"]?)(.*?)\2", script)
        if match:
            return f"{match.group(3)}\r\n".encode(), b"", 0
        match = re.fullmatch(r"(?is)Write-Error\s+(['\"]?)(.*?)\1", script)
        if match:
            return b"", _clixml_error(f"{script} : {match.group(2)}"), 1
        if script.lower() in ("hostname", "$env:computername"):
            return f"{self.hostname}\r\n".encode(), b"", 0
        first = script.split()[0] if script.split() else script
        return (
            b"",
            _clixml_error(
                f"The term '{first}' is not recognized as the name of a cmdlet, function, "
                "script file, or operable program."
            ),
            1,
        )

    def discovery_document(self) -> dict[str, Any]:
        caption, version, build = _OS_PROFILES[self._seed % len(_OS_PROFILES)]
        return {
            "hostname": self.hostname,
            "domain": "WORKGROUP",
            "os": {
                "caption": caption,
                "version": version,
                "build_number": build,
                "architecture": "64-bit",
            },
        }

    def poll_document(self, poll_number: int) -> dict[str, Any]:
        """What the plugin's poll script prints on this host, the `poll_number`-th time."""
        rng = random.Random(f"{self.address}/{poll_number}")
        uptime = int(time.time() - self._booted_at)
        total_kb = (8, 16, 32, 64)[self._seed % 4] * 1024 * 1024
        disk_sizes = {"C:": 136_365_211_648, "D:": 536_870_907_904}
        if not self._seed % 2:
            del disk_sizes["D:"]
        disks = [
            {"name": name, "size_bytes": size, "free_bytes": int(size * rng.uniform(0.08, 0.9))}
            for name, size in disk_sizes.items()
        ]
        rate = 2_000 + self._seed % 50_000
        interfaces = [
            {
                "name": "Ethernet0",
                "status": "Up",
                "bytes_sent": uptime * rate + rng.randrange(1_000_000),
                "bytes_received": uptime * rate * 3 + rng.randrange(1_000_000),
            },
            {"name": "Ethernet1", "status": "Disconnected", "bytes_sent": 0, "bytes_received": 0},
        ]
        stopped = self.behaviour.stopped_services
        if stopped is None:
            stopped = _USUALLY_STOPPED[: 1 + self._seed % 3]
        automatic = sorted({*_AUTOMATIC_SERVICES, *stopped}, key=str.lower)
        not_running = [name for name in automatic if name in stopped]
        return {
            "cpu_percent": float(rng.randint(1, 97)),
            "memory": {
                "total_bytes": total_kb * 1024,
                "free_bytes": int(total_kb * rng.uniform(0.1, 0.7)) * 1024,
            },
            "disks": disks,
            "interfaces": interfaces,
            "uptime_seconds": uptime,
            "services": {
                "automatic_total": len(automatic),
                "automatic_running": len(automatic) - len(not_running),
                "automatic_not_running": not_running,
            },
        }


def _powershell_json(document: dict[str, Any]) -> bytes:
    """As `ConvertTo-Json -Compress` prints it on a Windows console."""
    return (json.dumps(document, separators=(",", ":")) + "\r\n").encode()


# --- the SOAP side -----------------------------------------------------------------------------


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    return (
        '<s:Envelope xml:lang="en-US"'
        + "".join(f' xmlns:{prefix}="{uri}"' for prefix, uri in NS.items() if prefix != "f")
        + f"><s:Header><a:Action>{action}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To><a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def _fault(
    relates_to: str, machine: str, code: str, subcode: str, reason: str, wsman: int
) -> bytes:
    body = (
        f"<s:Fault><s:Code><s:Value>{code}</s:Value><s:Subcode><s:Value>{subcode}</s:Value>"
        f'</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{escape(reason)}</s:Text>'
        f'</s:Reason><s:Detail><f:WSManFault xmlns:f="{NS["f"]}" Code="{wsman}" '
        f'Machine="{escape(machine)}"><f:Message>{escape(reason)}</f:Message></f:WSManFault>'
        "</s:Detail></s:Fault>"
    )
    return _envelope(FAULT_ACTION, relates_to, body)


def _seconds(duration: str | None, default: float) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", (duration or "").strip())
    if not match or not any(match.groups()):
        return default
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class _SoapFault(Exception):
    def __init__(self, subcode: str, reason: str, wsman: int, code: str = "s:Sender") -> None:
        super().__init__(reason)
        self.code, self.subcode, self.reason, self.wsman = code, subcode, reason, wsman


class _HostServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, port: int, emulator: WSManEmulator, host: WindowsHost) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.emulator = emulator
        self.host = host
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((address, port), _WSManHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (its own timeout ran out) is normal here; anything else is not."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Cut the kept-alive connections too, as a host that went down does."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _WSManHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = 30  # an idle kept-alive connection is closed after this
    # Headers and body go out in two writes; without TCP_NODELAY the second waits for the
    # client's delayed ACK (40 ms on Linux), which HTTP.sys on a real host does not make anyone do.
    disable_nagle_algorithm = True
    server: _HostServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read the counters, not an access log."""

    def do_GET(self) -> None:
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED, b"")

    def do_POST(self) -> None:
        host = self.server.host
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else b""
        if host.behaviour.stall and host.stopping.wait(host.behaviour.stall):
            self.close_connection = True
            return
        if self.path.split("?", 1)[0].rstrip("/").lower() != "/wsman":
            host.count_request("not_found")
            self._reply(HTTPStatus.NOT_FOUND, b"")
            return
        if not self.server.emulator.authorised(self.headers.get("Authorization")):
            host.count_request("unauthorized")
            self._reply(
                HTTPStatus.UNAUTHORIZED,
                b"",
                [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", 'Basic realm="WSMAN"')],
            )
            return
        try:
            # Only our own tests' clients reach a loopback emulator.
            envelope = ElementTree.fromstring(payload)  # noqa: S314
        except ElementTree.ParseError:
            host.count_request("malformed")
            self._reply(HTTPStatus.BAD_REQUEST, b"")
            return
        header = envelope.find("s:Header", NS)
        message_id = (header.findtext("a:MessageID", "", NS) if header is not None else "").strip()
        action = (header.findtext("a:Action", "", NS) if header is not None else "").strip()
        operation = ACTIONS.get(action, "unsupported")
        host.count_request(operation)
        try:
            status, body = self._dispatch(operation, envelope, header)
        except _SoapFault as fault:
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            reply = _fault(
                message_id, host.hostname, fault.code, fault.subcode, fault.reason, fault.wsman
            )
        else:
            reply = _envelope(RESPONSE_ACTIONS[operation], message_id, body)
        self._reply(status, reply, [("Content-Type", "application/soap+xml;charset=UTF-8")])

    def _reply(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(
        self, operation: str, envelope: ElementTree.Element, header: ElementTree.Element | None
    ) -> tuple[int, str]:
        host = self.server.host
        body = envelope.find("s:Body", NS)
        if operation == "unsupported" or header is None or body is None:
            raise _SoapFault(
                "w:ActionNotSupported",
                "The action is not supported by the service.",
                FAULT_ACTION_NOT_SUPPORTED,
            )
        if operation == "Create":
            shell_id = host.open_shell()
            resource_uri = header.findtext("w:ResourceURI", f"{SHELL}/cmd", NS).strip()
            return HTTPStatus.OK, self._create_body(shell_id, resource_uri)

        shell_id = header.findtext("w:SelectorSet/w:Selector[@Name='ShellId']", "", NS).strip()
        shell = host.shell(shell_id)
        if shell is None:
            raise _SoapFault(
                "w:InvalidSelectors",
                f"The request for the Windows Remote Shell with ShellId {shell_id} failed because "
                "the shell was not found on the server. Possible causes are: the specified ShellId "
                "is incorrect or the shell no longer exists on the server. Provide the correct "
                "ShellId or create a new shell and retry the operation.",
                FAULT_SHELL_NOT_FOUND,
            )
        if operation == "Delete":
            host.close_shell(shell_id)
            return HTTPStatus.OK, ""
        if operation == "Command":
            line = body.find("rsp:CommandLine", NS)
            if line is None:
                raise _SoapFault("w:SchemaValidationError", "CommandLine is missing.", 2150858817)
            words = [line.findtext("rsp:Command", "", NS).strip()]
            words += [(node.text or "") for node in line.findall("rsp:Arguments", NS)]
            command_line = " ".join(word for word in words if word)
            command = host.start_command(shell, command_line, line.get("CommandId"))
            return HTTPStatus.OK, (
                f"<rsp:CommandResponse><rsp:CommandId>{command.command_id}</rsp:CommandId>"
                "</rsp:CommandResponse>"
            )
        if operation == "Receive":
            stream = body.find("rsp:Receive/rsp:DesiredStream", NS)
            command_id = stream.get("CommandId", "") if stream is not None else ""
            timeout = _seconds(header.findtext("w:OperationTimeout", None, NS), 60.0)
            return HTTPStatus.OK, self._receive(shell, command_id, timeout)
        if operation == "Signal":
            signal = body.find("rsp:Signal", NS)
            command_id = signal.get("CommandId", "") if signal is not None else ""
            shell.commands.pop(command_id, None)
            return HTTPStatus.OK, "<rsp:SignalResponse/>"
        # Send: stdin is accepted and ignored; no emulated command reads it.
        return HTTPStatus.OK, "<rsp:SendResponse/>"

    def _create_body(self, shell_id: str, resource_uri: str) -> str:
        server = self.server
        address = f"http://{server.host.address}:{server.server_address[1]}/wsman"
        return (
            f"<x:ResourceCreated><a:Address>{address}</a:Address><a:ReferenceParameters>"
            f"<w:ResourceURI>{escape(resource_uri)}</w:ResourceURI><w:SelectorSet>"
            f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters></x:ResourceCreated>"
            f'<rsp:Shell xmlns:rsp="{SHELL}"><rsp:ShellId>{shell_id}</rsp:ShellId>'
            f"<rsp:ResourceUri>{escape(resource_uri)}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(server.host.username)}</rsp:Owner>"
            f"<rsp:ClientIP>{escape(self.client_address[0])}</rsp:ClientIP>"
            "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut><rsp:InputStreams>stdin"
            "</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
            "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
            "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>"
        )

    def _receive(self, shell: _Shell, command_id: str, operation_timeout: float) -> str:
        host = self.server.host
        command = shell.commands.get(command_id)
        if command is None:
            raise _SoapFault(
                "w:InvalidParameter", f"The command {command_id} was not found.", 2150858880
            )
        wait = command.ready_at - time.monotonic()
        if wait > 0:
            # A real host holds the Receive until there is output or OperationTimeout passes.
            host.stopping.wait(min(wait, operation_timeout))
            if time.monotonic() < command.ready_at:
                raise _SoapFault(
                    "w:TimedOut",
                    "The WS-Management service cannot complete the operation within the time "
                    "specified in OperationTimeout.",
                    FAULT_OPERATION_TIMEOUT,
                    code="s:Receiver",
                )
        chunk = self.server.emulator.receive_chunk_bytes or max(
            len(command.stdout), len(command.stderr), 1
        )
        parts: list[str] = []
        for name, data, sent_attr in (
            ("stdout", command.stdout, "stdout_sent"),
            ("stderr", command.stderr, "stderr_sent"),
        ):
            sent = getattr(command, sent_attr)
            piece = data[sent : sent + chunk]
            setattr(command, sent_attr, sent + len(piece))
            if piece:
                parts.append(
                    f"<rsp:Stream Name={quoteattr(name)} CommandId={quoteattr(command_id)}>"
                    f"{base64.b64encode(piece).decode()}</rsp:Stream>"
                )
        done = command.stdout_sent >= len(command.stdout) and command.stderr_sent >= len(
            command.stderr
        )
        if done:
            parts += [
                f'<rsp:Stream Name="{name}" CommandId="{command_id}" End="true"></rsp:Stream>'
                for name in ("stdout", "stderr")
            ]
            parts.append(
                f'<rsp:CommandState CommandId="{command_id}" State="{STATE_DONE}">'
                f"<rsp:ExitCode>{command.exit_code}</rsp:ExitCode></rsp:CommandState>"
            )
        else:
            parts.append(f'<rsp:CommandState CommandId="{command_id}" State="{STATE_RUNNING}"/>')
        return "<rsp:ReceiveResponse>" + "".join(parts) + "</rsp:ReceiveResponse>"


# --- the emulator ------------------------------------------------------------------------------


class WSManEmulator:
    """Emulated Windows hosts, one HTTP server per loopback address, all on one port."""

    def __init__(
        self,
        username: str = "Administrator",
        password: str = "Emul4ted-Passw0rd",  # noqa: S107 - a test host's password
        *,
        receive_chunk_bytes: int | None = None,
    ) -> None:
        self.username = username
        self.password = password
        # When set, a Receive returns at most this many bytes of each stream, as a real host does
        # with large output: the client has to Receive again until the command is Done.
        self.receive_chunk_bytes = receive_chunk_bytes
        self._port = 0
        self._hosts: dict[str, WindowsHost] = {}
        self._servers: dict[str, tuple[_HostServer, threading.Thread]] = {}
        self._lock = threading.Lock()

    # lifecycle

    def start(self, addresses: Iterable[str], port: int = 0) -> WSManEmulator:
        """Listen on every address, on `port` (0: one free port, the same for all addresses)."""
        wanted = list(dict.fromkeys(addresses))
        for address in wanted:
            _require_loopback(address)
        if not wanted:
            raise ValueError("start() needs at least one address")
        if self._port:
            port = self._port
        attempts = DEFAULT_PORT_ATTEMPTS if port == 0 else 1
        for attempt in range(attempts):
            started: list[str] = []
            try:
                for address in wanted:
                    if address not in self._servers:
                        self._listen(address, port or self._port)
                        started.append(address)
                return self
            except OSError:
                for address in started:
                    self.stop(address)
                if not self._servers:
                    self._port = 0
                if attempt == attempts - 1:
                    raise
        return self

    def _listen(self, address: str, port: int) -> None:
        with self._lock:
            host = self._hosts.setdefault(address, WindowsHost(address, self.username))
        host.stopping.clear()
        server = _HostServer(address, port, self, host)
        if not self._port:
            self._port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"wsman-emulator-{address}",
            daemon=True,
        )
        thread.start()
        with self._lock:
            self._servers[address] = (server, thread)

    def stop(self, address: str | None = None) -> None:
        """Stop one host (its address then refuses connections), or every host."""
        with self._lock:
            addresses = [address] if address is not None else list(self._servers)
        for each in addresses:
            with self._lock:
                entry = self._servers.pop(each, None)
            if entry is None:
                continue
            server, thread = entry
            server.host.stopping.set()
            server.shutdown()
            server.drop_connections()
            server.server_close()
            thread.join(timeout=5)
            server.host.forget_shells()

    def restart(self, address: str) -> None:
        """Bring a stopped host back on the same port, with its counters kept."""
        if address not in self._hosts:
            raise KeyError(f"{address} was never started")
        if not self.is_running(address):
            self._listen(address, self._port)

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> WSManEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # what tests look at

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def addresses(self) -> list[str]:
        return list(self._hosts)

    def is_running(self, address: str) -> bool:
        with self._lock:
            return address in self._servers

    def endpoint(self, address: str) -> str:
        return f"http://{address}:{self.port}/wsman"

    def host(self, address: str) -> WindowsHost:
        return self._hosts[address]

    def behaviour(self, address: str) -> HostBehaviour:
        return self._hosts[address].behaviour

    def request_counts(self, address: str) -> Counter[str]:
        """HTTP requests that reached `address`, by WinRS operation, plus "total"."""
        return self._hosts[address].request_counts()

    def script_counts(self, address: str) -> Counter[str]:
        """Scripts run on `address`: "discovery", "poll" (the plugin's), "other"."""
        return self._hosts[address].script_counts()

    def reset_counts(self) -> None:
        for host in self._hosts.values():
            host.reset_counts()

    def authorised(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            username, _, password = base64.b64decode(token).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Windows user names are case-insensitive; passwords are not.
        return username.lower() == self.username.lower() and password == self.password


@contextlib.contextmanager
def running_emulator(
    addresses: Iterable[str], port: int = 0, **options: Any
) -> Iterator[WSManEmulator]:
    """A started emulator for a `with` block or a pytest fixture."""
    emulator = WSManEmulator(**options)
    try:
        yield emulator.start(addresses, port)
    finally:
        emulator.close()


def main(argv: list[str] | None = None) -> int:
    """Serve emulated hosts until interrupted."""
    import argparse
    import signal

    from nms.targets import TargetError, expand_targets

    parser = argparse.ArgumentParser(
        prog="python -m tests.emulators.wsman",
        description="Emulated Windows hosts (WS-Management over HTTP) on loopback addresses.",
    )
    parser.add_argument("targets", help="loopback addresses: 127.0.0.1-127.0.0.20, a /28, a list")
    parser.add_argument("--port", type=int, default=5985)
    parser.add_argument("--username", default="Administrator")
    parser.add_argument("--password", required=True)
    args = parser.parse_args(argv)
    try:
        addresses = list(expand_targets(args.targets, max_hosts=1024))
    except TargetError as error:
        parser.error(str(error))
    emulator = WSManEmulator(args.username, args.password)
    try:
        emulator.start(addresses, args.port)
    except (OSError, ValueError) as error:
        emulator.close()
        parser.error(str(error))
    print(
        f"{len(addresses)} emulated Windows host(s) on port {emulator.port}, "
        f"{addresses[0]} to {addresses[-1]}, user {args.username!r}; Ctrl-C stops them",
        flush=True,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
