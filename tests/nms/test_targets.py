"""Discovery targets: CIDR, ranges and lists, IPv4 and IPv6, counted before they are expanded."""

import time
import types

import pytest

from nms.targets import TargetError, expand_targets, parse_ip_address, parse_targets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.7", ["10.0.0.7"]),
        ("10.0.0.0/30", ["10.0.0.1", "10.0.0.2"]),  # network and broadcast left out
        ("10.0.0.0/31", ["10.0.0.0", "10.0.0.1"]),  # RFC 3021: both are hosts
        ("10.0.0.5/32", ["10.0.0.5"]),
        ("10.0.0.1-10.0.0.3", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        ("10.0.0.1 - 10.0.0.2", ["10.0.0.1", "10.0.0.2"]),
        ("10.0.0.4-10.0.0.4", ["10.0.0.4"]),
        ("10.0.0.9, 10.0.0.1;10.0.0.5\n10.0.0.3", ["10.0.0.1", "10.0.0.3", "10.0.0.5", "10.0.0.9"]),
        ("10.0.0.255-10.0.1.1", ["10.0.0.255", "10.0.1.0", "10.0.1.1"]),
        ("2001:db8::/126", ["2001:db8::", "2001:db8::1", "2001:db8::2", "2001:db8::3"]),
        ("2001:db8::1-2001:db8::2", ["2001:db8::1", "2001:db8::2"]),
        ("2001:DB8:0:0::5", ["2001:db8::5"]),
        ("10.0.0.1, 2001:db8::1", ["10.0.0.1", "2001:db8::1"]),
        ("127.0.0.1-127.0.0.3", ["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
    ],
)
def test_good_targets_expand_to_their_addresses(text: str, expected: list[str]) -> None:
    # Given a target spec, when it is parsed and expanded, then these are its addresses, in order
    spec = parse_targets(text)
    assert list(spec.addresses()) == expected
    assert spec.count == len(expected)


def test_overlapping_items_are_merged_so_no_address_comes_twice() -> None:
    spec = parse_targets("10.0.0.0/29, 10.0.0.3-10.0.0.10, 10.0.0.4, 10.0.0.4")

    addresses = list(spec.addresses())

    assert addresses == [f"10.0.0.{i}" for i in range(1, 11)]
    assert spec.count == 10


def test_a_24_skips_network_and_broadcast() -> None:
    addresses = list(expand_targets("192.168.1.0/24"))

    assert len(addresses) == 254
    assert addresses[0] == "192.168.1.1" and addresses[-1] == "192.168.1.254"


def test_expansion_is_a_generator_and_counting_never_expands() -> None:
    # Given a /8 under a limit that allows it
    started = time.monotonic()
    spec = parse_targets("10.0.0.0/8", max_hosts=2**32)

    # Then it is counted at once, from the network's size
    assert spec.count == 2**24 - 2
    # And expanded lazily: the first addresses come without building the other sixteen million
    addresses = spec.addresses()
    assert isinstance(addresses, types.GeneratorType)
    assert [next(addresses) for _ in range(3)] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.0.0.0/0", "a /0 is the whole address space"),
        ("10.1.2.3/0", "a /0 is the whole address space"),
        ("::/0", "a /0 is the whole address space"),
        ("10.0.0.9-10.0.0.1", "is reversed: 10.0.0.9 comes after 10.0.0.1"),
        ("server.example.com", "looks like a host name; discovery needs IP addresses"),
        ("web-01", "looks like a host name"),
        ("10.0.0.1-gateway", "looks like a host name"),
        ("server.example.com/24", "looks like a host name"),
        ("10.0.0.1-2001:db8::1", "mixes IPv4 and IPv6"),
        ("", "No targets given"),
        ("   ", "No targets given"),
        (" , ;", "No targets given"),
        ("10.0.0.300", "is not an IP address"),
        ("10.0.0.1-10.0.0.2-10.0.0.3", "is not a range"),
        ("10.0.0.1-", "is not a range"),
        ("10.0.0.5/24", "has host bits set: the network is 10.0.0.0/24"),
        ("10.0.0.0/33", "prefix length is at most 32"),
        ("2001:db8::/129", "prefix length is at most 128"),
        ("10.0.0.0/abc", "prefix length after / must be a number"),
        ("0.0.0.0", "unspecified address"),  # noqa: S104 - refused, never bound
        ("224.0.0.1", "multicast"),
        ("224.0.0.0/24", "multicast"),
        ("fe80::1%eth0", "zone ids"),
        ("10.0.0.0/8", "covers 16,777,214 addresses; at most 65,536"),
        ("2001:db8::/64", "covers 18,446,744,073,709,551,616 addresses"),
    ],
)
def test_nonsense_is_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(TargetError) as refused:
        parse_targets(text)

    assert message in str(refused.value)


def test_the_limit_comes_from_settings_and_counts_the_whole_list(settings) -> None:
    # Given a limit of 300 addresses
    settings.CENSUS_NMS = {**settings.CENSUS_NMS, "MAX_HOSTS": 300}

    # Then one /24 fits, two do not, and a /16 is refused before anything is built
    assert parse_targets("10.0.0.0/24").count == 254
    with pytest.raises(TargetError, match="covers 508 addresses; at most 300"):
        parse_targets("10.0.0.0/24, 10.0.1.0/24")
    with pytest.raises(TargetError, match="at most 300"):
        parse_targets("10.0.0.0/16")


def test_default_limit_is_65536_addresses() -> None:
    assert parse_targets("10.0.0.0/16").count == 65_534
    assert parse_targets("10.0.0.0-10.0.255.255").count == 65_536
    with pytest.raises(TargetError, match="65,537 addresses"):
        parse_targets("10.0.0.0-10.1.0.0")


def test_a_single_address_is_canonical_and_a_host_name_is_refused() -> None:
    assert parse_ip_address(" 2001:DB8::0:1 ") == "2001:db8::1"
    assert parse_ip_address("10.0.0.1") == "10.0.0.1"
    with pytest.raises(TargetError, match="host name"):
        parse_ip_address("db01.corp.example")
