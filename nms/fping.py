"""Availability check for a batch of addresses with ONE ``fping`` run (seed 003 §2, §6 step 7).

``fping -A -t TIMEOUT -r RETRIES -i INTERVAL -f -`` reads the targets on stdin (so a batch of
10,000 addresses does not meet the argv limit) and prints one line per target on stdout,
``ADDR is alive`` or ``ADDR is unreachable``; it exits 0 when all are alive, 1 when some are not.
Anything else is a failed run and raises `FpingError`: a missing binary, exit code 2 (a target
fping could not resolve), 3 (bad options), 4 (a system call failed, e.g. no raw socket), or an
output that does not account for every target. A failed run is never read as "everything is
unreachable": the caller decides what to do without an availability check.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

logger = logging.getLogger(__name__)


class FpingError(Exception):
    """fping could not tell which addresses answer."""


@dataclass(frozen=True)
class FpingOptions:
    executable: str = "fping"
    timeout_ms: int = 500  # initial per-target timeout (-t)
    retries: int = 1  # extra attempts per target (-r)
    interval_ms: float = 1.0  # gap between two packets of the run (-i)
    backoff: float = 1.5  # timeout factor for each retry (-B)

    @classmethod
    def from_settings(cls) -> FpingOptions:
        nms = settings.CENSUS_NMS
        return cls(
            executable=nms["FPING_PATH"],
            timeout_ms=nms["FPING_TIMEOUT_MS"],
            retries=nms["FPING_RETRIES"],
            interval_ms=nms["FPING_INTERVAL_MS"],
            backoff=nms["FPING_BACKOFF"],
        )

    def worst_case_seconds(self, targets: int) -> float:
        """How long a run may take: sending, plus every retry's growing timeout."""
        waits = sum(self.timeout_ms * self.backoff**attempt for attempt in range(self.retries + 1))
        sending = targets * self.interval_ms * (self.retries + 1)
        return (waits + sending) / 1000


@dataclass(frozen=True)
class FpingResult:
    reachable: frozenset[str]
    unreachable: frozenset[str]
    duration: float = 0.0


def _canonical(address: str) -> str:
    return str(ipaddress.ip_address(address.strip()))


def fping(addresses: Iterable[str], options: FpingOptions | None = None) -> FpingResult:
    """Ping every address once (plus retries) in one fping run; return who answered.

    Addresses come back in the form they were given. Raises ValueError for something that is
    not an IP address (fping would try to resolve it), FpingError when the run fails.
    """
    options = options or FpingOptions.from_settings()
    given: dict[str, list[str]] = {}
    for address in addresses:
        try:
            canonical = _canonical(address)
        except ValueError:
            raise ValueError(f"not an IP address: {address!r}") from None
        given.setdefault(canonical, []).append(address)
    if not given:
        return FpingResult(frozenset(), frozenset())

    executable = shutil.which(options.executable)
    if executable is None:
        raise FpingError(
            f"fping not found ({options.executable!r} is not on PATH): install it "
            "(Debian: apt-get install fping) or set CENSUS_NMS_FPING_PATH"
        )
    command = [
        executable,
        "-A",  # print addresses, never names
        "-t",
        str(options.timeout_ms),
        "-r",
        str(options.retries),
        "-i",
        f"{options.interval_ms:g}",
        "-B",
        f"{options.backoff:g}",
        "-f",
        "-",
    ]
    # fping bounds itself; this is the guard against a wedged process, with room to spare.
    deadline = options.worst_case_seconds(len(given)) * 2 + 10
    started = time.monotonic()
    try:
        completed = subprocess.run(
            command,
            input="\n".join(given) + "\n",
            capture_output=True,
            text=True,
            timeout=deadline,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise FpingError(f"fping did not finish within {deadline:.0f}s") from None
    except OSError as error:
        raise FpingError(f"cannot run fping: {error.strerror or error}") from None

    stderr = " ".join(completed.stderr.split())[-500:]
    if completed.returncode not in (0, 1):
        meaning = {
            2: "a target could not be resolved",
            3: "invalid arguments",
            4: "a system call failed (raw socket not permitted?)",
        }.get(completed.returncode, "unexpected exit code")
        raise FpingError(
            f"fping failed with exit code {completed.returncode} ({meaning}): {stderr or '-'}"
        )

    alive: set[str] = set()
    dead: set[str] = set()
    for line in completed.stdout.splitlines():
        address, _, verdict = line.strip().partition(" is ")
        if not verdict:
            continue
        try:
            canonical = _canonical(address)
        except ValueError:
            continue
        if canonical not in given:
            continue
        if verdict.startswith("alive"):
            alive.add(canonical)
        elif verdict.startswith("unreachable"):
            dead.add(canonical)
    dead -= alive  # a late reply after a retry still counts as alive
    unaccounted = set(given) - alive - dead
    if unaccounted:
        example = sorted(unaccounted)[0]
        raise FpingError(
            f"fping said nothing about {len(unaccounted)} of {len(given)} target(s) "
            f"(e.g. {example}): {stderr or 'no error message'}"
        )
    if stderr:
        logger.debug("fping stderr: %s", stderr)
    return FpingResult(
        reachable=frozenset(original for canonical in alive for original in given[canonical]),
        unreachable=frozenset(original for canonical in dead for original in given[canonical]),
        duration=time.monotonic() - started,
    )
