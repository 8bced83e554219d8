"""The WS-Management emulator answers pywinrm as a Windows host would, on loopback only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from xml.etree import ElementTree

import pytest
import requests
import winrm
import xmltodict
from winrm.exceptions import InvalidCredentialsError, WinRMOperationTimeoutError, WSManFaultError
from winrm.protocol import Protocol

from tests.emulators.wsman import (
    FAULT_SHELL_NOT_FOUND,
    NS,
    WSManEmulator,
    bindable_loopback_addresses,
    running_emulator,
)

USER = "Administrator"
PASSWORD = "Corr3ct-Horse!"
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
SHELL_NS = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"


@pytest.fixture
def emulator() -> Iterator[WSManEmulator]:
    with running_emulator(["127.0.0.1"], username=USER, password=PASSWORD) as started:
        yield started


def protocol_for(
    emulator: WSManEmulator, address: str = "127.0.0.1", **options: object
) -> Protocol:
    settings: dict[str, object] = {"read_timeout_sec": 10, "operation_timeout_sec": 5}
    settings.update(options)
    return Protocol(
        emulator.endpoint(address),
        transport="basic",
        username=USER,
        password=PASSWORD,
        proxy=None,
        ca_trust_path=None,  # type: ignore[arg-type]  # None: no extra CA bundle
        **settings,  # type: ignore[arg-type]
    )


def send(
    protocol: Protocol, action: str, shell_id: str | None = None, body: dict | None = None
) -> tuple[str, ElementTree.Element]:
    """Send one WS-Management message with a known MessageID; return it and the parsed reply."""
    message_id = uuid.uuid4()
    envelope = protocol.build_wsman_header(
        action=action, resource_uri=SHELL_URI, shell_id=shell_id, message_id=message_id
    )
    envelope["env:Body"] = body or {}
    reply = protocol.send_message(xmltodict.unparse({"env:Envelope": envelope}))
    return f"uuid:{message_id}", ElementTree.fromstring(reply)  # noqa: S314 - our own emulator


def test_pywinrm_round_trip_runs_a_command_and_leaves_no_shell(emulator: WSManEmulator) -> None:
    # Given a pywinrm client with the right credentials
    protocol = protocol_for(emulator)

    # When it creates a shell, runs a command, receives its output, signals it and deletes the shell
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(shell_id, "hostname")
    stdout, stderr, exit_code = protocol.get_command_output(shell_id, command_id)
    protocol.cleanup_command(shell_id, command_id)
    protocol.close_shell(shell_id)

    # Then the host answered with its name, and each operation reached it once
    assert (stdout, stderr, exit_code) == (b"WIN-127-0-0-1\r\n", b"", 0)
    counts = emulator.request_counts("127.0.0.1")
    assert {op: counts[op] for op in ("Create", "Command", "Receive", "Signal", "Delete")} == {
        "Create": 1,
        "Command": 1,
        "Receive": 1,
        "Signal": 1,
        "Delete": 1,
    }
    assert emulator.host("127.0.0.1").open_shell_count() == 0


def test_every_reply_relates_to_the_request_message_id(emulator: WSManEmulator) -> None:
    # Given a client that sends each operation with a MessageID of its own
    protocol = protocol_for(emulator)
    shell = f"{SHELL_NS}/"

    # When it creates a shell
    streams = {"rsp:InputStreams": "stdin", "rsp:OutputStreams": "stdout stderr"}
    message_id, reply = send(protocol, f"{TRANSFER}/Create", body={"rsp:Shell": streams})

    # Then the reply relates to it and names the shell as real WinRM does: a ShellId selector in
    # the created resource's reference parameters, and an rsp:Shell with the same ShellId
    assert reply.findtext("s:Header/a:RelatesTo", namespaces=NS) == message_id
    selector = reply.find(
        "s:Body/x:ResourceCreated/a:ReferenceParameters/w:SelectorSet/w:Selector[@Name='ShellId']",
        NS,
    )
    assert selector is not None and selector.text
    shell_id = selector.text
    assert reply.findtext("s:Body/rsp:Shell/rsp:ShellId", namespaces=NS) == shell_id

    # And so does every later operation on that shell
    command_line = {"rsp:CommandLine": {"rsp:Command": "echo hi"}}
    message_id, reply = send(protocol, f"{shell}Command", shell_id, command_line)
    assert reply.findtext("s:Header/a:RelatesTo", namespaces=NS) == message_id
    command_id = reply.findtext("s:Body/rsp:CommandResponse/rsp:CommandId", namespaces=NS)
    assert command_id

    desired = {"rsp:DesiredStream": {"@CommandId": command_id, "#text": "stdout stderr"}}
    message_id, reply = send(protocol, f"{shell}Receive", shell_id, {"rsp:Receive": desired})
    assert reply.findtext("s:Header/a:RelatesTo", namespaces=NS) == message_id
    state = reply.find("s:Body/rsp:ReceiveResponse/rsp:CommandState", NS)
    assert state is not None and state.get("State", "").endswith("CommandState/Done")
    assert state.findtext("rsp:ExitCode", namespaces=NS) == "0"

    signal = {"@CommandId": command_id, "rsp:Code": f"{shell}signal/terminate"}
    message_id, reply = send(protocol, f"{shell}Signal", shell_id, {"rsp:Signal": signal})
    assert reply.findtext("s:Header/a:RelatesTo", namespaces=NS) == message_id

    message_id, reply = send(protocol, f"{TRANSFER}/Delete", shell_id)
    assert reply.findtext("s:Header/a:RelatesTo", namespaces=NS) == message_id


def test_wrong_password_gets_http_401(emulator: WSManEmulator) -> None:
    # Given a client with the wrong password
    session = winrm.Session(
        emulator.endpoint("127.0.0.1"),
        auth=(USER, "wrong"),
        transport="basic",
        proxy=None,
        ca_trust_path=None,
    )

    # When it tries to open a shell, then the host rejects it with HTTP 401, as pywinrm expects
    with pytest.raises(InvalidCredentialsError):
        session.run_cmd("hostname")
    raw = requests.post(
        emulator.endpoint("127.0.0.1"), data=b"<x/>", auth=(USER, "wrong"), timeout=10
    )
    assert raw.status_code == 401
    assert 'Basic realm="WSMAN"' in raw.headers["WWW-Authenticate"]
    assert emulator.request_counts("127.0.0.1")["unauthorized"] == 2
    assert emulator.request_counts("127.0.0.1")["Create"] == 0


def test_encoded_powershell_scripts_are_decoded_and_answered(emulator: WSManEmulator) -> None:
    # Given a pywinrm session
    session = winrm.Session(
        emulator.endpoint("127.0.0.1"),
        auth=(USER, PASSWORD),
        transport="basic",
        proxy=None,
        ca_trust_path=None,
    )

    # When it runs PowerShell scripts (powershell -encodedcommand <base64 UTF-16LE>)
    plain = session.run_ps("Write-Output 'hello'")
    failing = session.run_ps('Write-Error "disk on fire"')
    discovery = session.run_ps("# census-nms-winrm:discovery v1\nGet-CimInstance ...")
    poll = session.run_ps("# census-nms-winrm:poll v1\nGet-CimInstance ...")

    # Then each gets what PowerShell on a Windows host would print
    assert (plain.status_code, plain.std_out) == (0, b"hello\r\n")
    assert failing.status_code == 1 and b"disk on fire" in failing.std_err
    assert json.loads(discovery.std_out)["hostname"] == "WIN-127-0-0-1"
    assert json.loads(discovery.std_out)["os"]["caption"].startswith("Microsoft Windows")
    metrics = json.loads(poll.std_out)
    assert 0 <= metrics["cpu_percent"] <= 100
    assert metrics["memory"]["total_bytes"] > metrics["memory"]["free_bytes"] > 0
    assert metrics["disks"][0]["name"] == "C:"
    assert metrics["uptime_seconds"] > 86_400
    assert emulator.script_counts("127.0.0.1") == {"other": 2, "discovery": 1, "poll": 1}


def test_each_address_is_a_host_that_can_be_stopped_and_restarted() -> None:
    # Given three emulated hosts on one port
    addresses = bindable_loopback_addresses(3)
    if len(addresses) < 3:
        pytest.skip("this machine does not route 127.0.0.2-3 to loopback")
    with running_emulator(addresses, username=USER, password=PASSWORD) as emulator:
        clients = {
            address: winrm.Session(
                emulator.endpoint(address),
                auth=(USER, PASSWORD),
                transport="basic",
                proxy=None,
                ca_trust_path=None,
            )
            for address in addresses
        }

        # When the second one is stopped
        emulator.stop(addresses[1])

        # Then it refuses connections while the others answer with their own names
        with pytest.raises(requests.exceptions.ConnectionError):
            clients[addresses[1]].run_cmd("hostname")
        assert clients[addresses[0]].run_cmd("hostname").std_out == b"WIN-127-0-0-1\r\n"
        assert clients[addresses[2]].run_cmd("hostname").std_out == b"WIN-127-0-0-3\r\n"

        # And once restarted it answers again, on the same port, its counters kept
        emulator.restart(addresses[1])
        assert clients[addresses[1]].run_cmd("hostname").std_out == b"WIN-127-0-0-2\r\n"
        assert emulator.request_counts(addresses[1])["Create"] == 1
        assert emulator.endpoint(addresses[1]).endswith(f":{emulator.port}/wsman")


def test_slow_command_makes_receive_time_out_with_the_wsman_fault(
    emulator: WSManEmulator,
) -> None:
    # Given a host whose commands take 4 seconds, and a client with a 1-second OperationTimeout
    # (the delay runs from the command's start: it must outlast a slow machine's next request)
    emulator.behaviour("127.0.0.1").output_delay = 4.0
    protocol = protocol_for(emulator, read_timeout_sec=5, operation_timeout_sec=1)
    shell_id = protocol.open_shell()
    command_id = protocol.run_command(shell_id, "hostname")

    # When it receives before the output is ready, then it gets the operation-timeout fault
    with pytest.raises(WinRMOperationTimeoutError):
        protocol.get_command_output_raw(shell_id, command_id)

    # And a later Receive gets the output
    assert protocol.get_command_output(shell_id, command_id)[0] == b"WIN-127-0-0-1\r\n"
    protocol.close_shell(shell_id)


def test_large_output_needs_several_receives() -> None:
    # Given a host that returns at most 100 bytes of a stream per Receive
    with running_emulator(
        ["127.0.0.1"], username=USER, password=PASSWORD, receive_chunk_bytes=100
    ) as emulator:
        session = winrm.Session(
            emulator.endpoint("127.0.0.1"),
            auth=(USER, PASSWORD),
            transport="basic",
            proxy=None,
            ca_trust_path=None,
        )

        # When a script prints much more than that
        result = session.run_ps("# census-nms-winrm:poll v1")

        # Then pywinrm reassembles the whole output from several Receives
        assert json.loads(result.std_out)["disks"]
        assert emulator.request_counts("127.0.0.1")["Receive"] >= len(result.std_out) // 100


def test_operation_on_an_unknown_shell_gets_a_wsman_fault(emulator: WSManEmulator) -> None:
    # Given a client that names a shell the host never created
    protocol = protocol_for(emulator)

    # When it runs a command there, then the host answers with the shell-not-found fault
    with pytest.raises(WSManFaultError) as raised:
        protocol.run_command("00000000-0000-0000-0000-000000000000", "hostname")
    assert raised.value.wsman_fault_code == FAULT_SHELL_NOT_FOUND
    assert "shell was not found" in raised.value.reason


def test_emulator_refuses_to_listen_beyond_loopback() -> None:
    # Given an emulator, when asked to listen on a routable address, then it refuses
    with pytest.raises(ValueError, match="loopback only"):
        WSManEmulator().start(["192.0.2.10"])
