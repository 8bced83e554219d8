from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol


class UnitUnreadable(Exception):
    """The unit cannot be listed at all (permission denied, an I/O error)."""


class UnitVanished(UnitUnreadable):
    """The unit is not there any more (removed, or replaced by a file, after its parent was
    listed): nothing is lost by not listing it, so it is committed empty, not failed."""


_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ns_since_epoch(moment: datetime) -> int:
    return (moment - _UNIX_EPOCH) // timedelta(microseconds=1) * 1000


# The modification times a record can hold: Python's datetime range (years 1 to 9999), inside
# PostgreSQL's. tmpfs, btrfs, ZFS and NTFS accept times beyond it; such a time is kept in the
# record's metadata, as the source gave it, instead of failing the unit's commit.
MTIME_MIN_NS = _ns_since_epoch(datetime.min.replace(tzinfo=UTC))
MTIME_MAX_NS = _ns_since_epoch(datetime.max.replace(tzinfo=UTC))


def mtime_out_of_range(mtime_ns: int) -> dict:
    """The metadata of an entry whose modification time no record can hold."""
    return {"error": "modification time out of range", "mtime_ns": mtime_ns}


class Entry(NamedTuple):
    """One listed object. A tuple: the compiled listing (``_scan.c``) makes one per object listed
    without a Python call, and ``engine._binary_rows`` reads its fields by position.

    ``digest`` is the key's 128-bit hash as bytes and ``mtime_ns`` the modification time as the
    source gives it: the output table's binary COPY takes both as they are, and the hex and
    datetime forms are made only where something asks for them.
    """

    record_type: str
    key: bytes
    digest: bytes
    name: bytes
    size: int | None = None
    mtime_ns: int | None = None
    metadata: dict | None = None  # None rather than a new {} for every entry without any

    @property
    def key_hash(self) -> str:
        """The ``object_key_hash`` (``keys.key_hash``)."""
        return self.digest.hex()

    @property
    def modified_at(self) -> datetime | None:
        if self.mtime_ns is None:
            return None
        return _UNIX_EPOCH + timedelta(microseconds=self.mtime_ns // 1000)


class Exclusion(Protocol):
    """The entries of a unit an interrupted attempt already staged: a resumed unstructured
    listing skips them. Asked a batch at a time, so that it need not hold them all (a resumed
    directory of ten million entries would otherwise hold ten million digests)."""

    def among(self, digests: Sequence[bytes]) -> set[bytes]:
        """Which of ``digests`` (``Entry.digest``) to skip."""
        ...


class Connector(Protocol):
    def list_unit(
        self, unit: bytes, *, exclude: Exclusion | None = None, batch_size: int
    ) -> Iterator[list[Entry]]:
        """Stream one level of ``unit`` in batches of at most ``batch_size`` entries.

        Entries that ``exclude`` names are skipped. A resumed listing yields a batch for every
        ``batch_size`` entries listed, even an empty one, so that the caller can renew its lease
        while a long run of excluded entries goes by. Raises ``UnitVanished`` when the unit is
        gone, ``UnitUnreadable`` when it cannot be opened otherwise.
        """
        ...
