from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class UnitUnreadable(Exception):
    """The unit cannot be listed at all (permission denied, vanished, not a container)."""


@dataclass(slots=True)
class Entry:
    """One listed object. Not frozen: a frozen dataclass's __init__ costs a call per field, and
    one Entry is made per object listed; nothing mutates or hashes them."""

    record_type: str
    key: bytes
    key_hash: str
    name: bytes
    size: int | None = None
    modified_at: datetime | None = None
    metadata: dict = field(default_factory=dict)


class Connector(Protocol):
    def list_unit(
        self, unit: bytes, *, exclude: Collection[str], batch_size: int
    ) -> Iterator[list[Entry]]:
        """Stream one level of ``unit`` in batches of at most ``batch_size`` entries.

        Entries whose key hash is in ``exclude`` (already staged by an interrupted attempt) are
        skipped. Raises ``UnitUnreadable`` when the unit cannot be opened at all.
        """
        ...
