"""One fping run for a batch of addresses: who answers, who does not, and a failed run is an
error, never "everything unreachable". Loopback only; the silent address is made silent by an
nftables rule of the test's own (see fixtures_monitoring.unreachable_address)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nms.fping import FpingError, FpingOptions, fping

pytest_plugins = ["tests.nms.fixtures_monitoring"]

FAST = FpingOptions(timeout_ms=200, retries=0, interval_ms=0.5)


def fake_fping(tmp_path: Path, script: str) -> FpingOptions:
    path = tmp_path / "fping"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return FpingOptions(executable=str(path), timeout_ms=200, retries=0)


def test_loopback_answers_and_the_silenced_address_does_not(unreachable_address):
    # Given 127.0.0.1 and an address whose echo requests are dropped
    # When one fping run checks both
    result = fping(["127.0.0.1", unreachable_address], FAST)
    # Then each lands in its set
    assert result.reachable == {"127.0.0.1"}
    assert result.unreachable == {unreachable_address}


def test_a_thousand_addresses_take_one_run():
    addresses = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(1000)]
    # A retry and a second: a loaded machine may answer one of a thousand after 200 ms
    result = fping(addresses, FpingOptions(timeout_ms=1000, retries=1, interval_ms=0.5))
    assert result.reachable == set(addresses)
    assert not result.unreachable


def test_addresses_come_back_as_they_were_given():
    result = fping(["127.000.0.1".replace("000", "0"), "::1", "0:0:0:0:0:0:0:1"], FAST)
    assert result.reachable == {"127.0.0.1", "::1", "0:0:0:0:0:0:0:1"}


def test_empty_batch_runs_nothing():
    assert fping([], FpingOptions(executable="/nonexistent/fping")).reachable == frozenset()


def test_missing_binary_is_a_clear_error():
    with pytest.raises(FpingError, match="fping not found"):
        fping(["127.0.0.1"], FpingOptions(executable="/nonexistent/fping"))


@pytest.mark.parametrize(
    ("code", "meaning"),
    [(3, "invalid arguments"), (4, "system call failed"), (2, "could not be resolved")],
)
def test_failed_run_is_an_error_not_everything_unreachable(tmp_path, code, meaning):
    options = fake_fping(tmp_path, f"cat >/dev/null\necho 'fping: oops' >&2\nexit {code}\n")
    with pytest.raises(FpingError, match=meaning):
        fping(["127.0.0.1", "127.0.0.2"], options)


def test_output_that_forgets_a_target_is_an_error(tmp_path):
    options = fake_fping(tmp_path, "cat >/dev/null\necho '127.0.0.1 is alive'\nexit 1\n")
    with pytest.raises(FpingError, match="said nothing about 1 of 2"):
        fping(["127.0.0.1", "127.0.0.2"], options)


def test_something_that_is_not_an_address_is_refused_before_running():
    with pytest.raises(ValueError, match="not an IP address"):
        fping(["127.0.0.1", "example.com"], FAST)
