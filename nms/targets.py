"""Discovery targets: what an operator types, checked and counted before anything is expanded.

A target spec is one item or a list of items separated by commas, semicolons or whitespace; each
item is an IPv4 or IPv6 address (``10.0.0.7``), a network in CIDR notation (``10.0.0.0/24``) or an
inclusive range of addresses of one family (``10.0.0.1-10.0.0.50``, spaces around the dash
allowed). Items that overlap are merged, so an address is never listed twice.

Every item becomes an interval of integers; the number of addresses is counted from the intervals
(a /8 is never built as a list) and refused past ``max_hosts`` before anything is expanded. The
expansion itself is a generator, in address order.

For an IPv4 network shorter than /31 the network and broadcast addresses are left out (a /31 or
/32 has neither, RFC 3021); an IPv6 network is taken whole.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings

DEFAULT_MAX_HOSTS = 65_536

_SEPARATORS = re.compile(r"[\s,;]+")
_DASH = re.compile(r"\s*-\s*")
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_-]+)*\.?")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetError(ValueError):
    """A target spec Census refuses, with a message for the person who typed it."""


@dataclass(frozen=True, order=True)
class _Span:
    """An inclusive interval of addresses of one IP version, as integers."""

    version: int
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class TargetSpec:
    """A checked target spec: its addresses counted, not yet expanded."""

    text: str
    spans: tuple[_Span, ...]

    @property
    def count(self) -> int:
        return sum(span.size for span in self.spans)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[str]:
        return self.addresses()

    def addresses(self) -> Iterator[str]:
        """Every address, in order, one at a time."""
        for span in self.spans:
            make = ipaddress.IPv4Address if span.version == 4 else ipaddress.IPv6Address
            for value in range(span.first, span.last + 1):
                yield str(make(value))


def max_hosts_setting() -> int:
    return int(settings.CENSUS_NMS.get("MAX_HOSTS", DEFAULT_MAX_HOSTS))


def parse_targets(text: str, *, max_hosts: int | None = None) -> TargetSpec:
    """Check and count a target spec; raises TargetError saying what is wrong with it."""
    limit = max_hosts_setting() if max_hosts is None else max_hosts
    items = _items(text or "")
    if not items:
        raise TargetError(
            "No targets given: enter an IP address, a network such as 10.0.0.0/24, "
            "or a range such as 10.0.0.1-10.0.0.50."
        )
    spans = _merge([_span_of(item) for item in items])
    spec = TargetSpec(text=text, spans=tuple(spans))
    total = spec.count
    if total > limit:
        raise TargetError(
            f"{text.strip()!r} covers {total:,} addresses; at most {limit:,} are allowed in one "
            "discovery profile. Split it into smaller networks."
        )
    return spec


def expand_targets(text: str, *, max_hosts: int | None = None) -> Iterator[str]:
    """The addresses of a target spec, one at a time (checked first, as parse_targets does)."""
    return parse_targets(text, max_hosts=max_hosts).addresses()


def parse_ip_address(text: str) -> str:
    """One IP address in its canonical form, or TargetError: a host name is not an address."""
    return str(_address(text.strip(), text.strip()))


# --- items ---------------------------------------------------------------------------------------


def _items(text: str) -> list[str]:
    return [item for item in _SEPARATORS.split(_DASH.sub("-", text.strip())) if item]


def _span_of(item: str) -> _Span:
    if ":" not in item and _looks_like_host_name(item.split("/")[0]):
        raise TargetError(_host_name_message(item, item.split("/")[0]))
    if "/" in item:
        return _network_span(item)
    if "-" in item:
        return _range_span(item)
    address = _address(item, item)
    return _Span(address.version, int(address), int(address))


def _address(text: str, item: str, *, host: bool = True) -> IPAddress:
    if "%" in text:
        raise TargetError(f"{item!r}: IPv6 zone ids (the part after %) are not supported.")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise TargetError(_not_an_address(text, item)) from None
    if not host:
        return address
    if address.is_unspecified:
        raise TargetError(f"{item!r}: {text} is the unspecified address, not a host.")
    if address.is_multicast:
        raise TargetError(f"{item!r}: {text} is a multicast address, not a host.")
    return address


def _looks_like_host_name(text: str) -> bool:
    return bool(_HOST_NAME.fullmatch(text) and re.search(r"[A-Za-z]", text))


def _host_name_message(item: str, text: str) -> str:
    shown = repr(text) if text == item else f"{item!r}: {text!r}"
    return (
        f"{shown} looks like a host name; discovery needs IP addresses "
        "(resolve the name and enter its address)."
    )


def _not_an_address(text: str, item: str) -> str:
    if _looks_like_host_name(text):
        return _host_name_message(item, text)
    if item == text:
        return f"{text!r} is not an IP address, a network (10.0.0.0/24) or a range."
    return f"{item!r}: {text!r} is not an IP address."


def _network_span(item: str) -> _Span:
    address_text, _, prefix_text = item.partition("/")
    if not prefix_text.isdigit():
        raise TargetError(f"{item!r}: the prefix length after / must be a number.")
    prefix = int(prefix_text)
    if prefix == 0:
        raise TargetError(f"{item!r}: a /0 is the whole address space, not a network to scan.")
    address = _address(address_text, item, host=False)
    if prefix > address.max_prefixlen:
        raise TargetError(
            f"{item!r}: an IPv{address.version} prefix length is at most {address.max_prefixlen}."
        )
    try:
        network = ipaddress.ip_network(f"{address}/{prefix}")
    except ValueError:
        base = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        raise TargetError(
            f"{item!r} has host bits set: the network is {base} (or give the single address "
            f"{address})."
        ) from None
    if network.is_multicast:
        raise TargetError(f"{item!r} is a multicast network, not hosts.")
    first, last = int(network.network_address), int(network.broadcast_address)
    if network.version == 4 and prefix < 31:
        first, last = first + 1, last - 1
    return _Span(network.version, first, last)


def _range_span(item: str) -> _Span:
    parts = item.split("-")
    if len(parts) != 2 or not all(parts):
        raise TargetError(
            f"{item!r} is not a range: write it as first-last, e.g. 10.0.0.1-10.0.0.50."
        )
    start, end = (_address(part, item) for part in parts)
    if start.version != end.version:
        raise TargetError(
            f"{item!r} mixes IPv{start.version} and IPv{end.version}: both ends of a range must "
            "be of the same family."
        )
    if int(start) > int(end):
        raise TargetError(
            f"{item!r} is reversed: {start} comes after {end}. Write it as {end}-{start}."
        )
    return _Span(start.version, int(start), int(end))


def _merge(spans: list[_Span]) -> list[_Span]:
    merged: list[_Span] = []
    for span in sorted(spans):
        previous = merged[-1] if merged else None
        if previous and previous.version == span.version and span.first <= previous.last + 1:
            merged[-1] = _Span(span.version, previous.first, max(previous.last, span.last))
        else:
            merged.append(span)
    return merged
