"""Column types of the enumeration tables."""

import os
import time
import uuid

from django.db import models


class DigestField(models.CharField):
    """A 128-bit digest (``keys.key_hash``): 32 lowercase hex characters in Python, everywhere.

    PostgreSQL stores it in its 16-byte ``uuid`` type, compared byte by byte, where
    ``varchar(32)`` compared through the collation: with time-ordered batch ids, a COPY into the
    output table, keyed by (batch, digest), takes about a quarter less (docs/benchmarks.md).
    Other databases keep the 32 characters. Lookups take the hex form; PostgreSQL reads it as a
    uuid.
    """

    description = "128-bit digest"

    def __init__(self, *args, **kwargs) -> None:
        kwargs["max_length"] = 32
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        del kwargs["max_length"]
        return name, path, args, kwargs

    def db_type(self, connection) -> str:
        if connection.vendor == "postgresql":
            return "uuid"
        return super().db_type(connection)

    def from_db_value(self, value, expression, connection) -> str | None:
        if isinstance(value, uuid.UUID):  # psycopg2 returns uuid columns as UUID objects
            return value.hex
        return value


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48 bits of Unix milliseconds, then random.

    Batch ids are these, given at commit (``engine._new_batch_ids``), so the output table's
    (batch, digest) key grows at its right edge instead of touching a random page of the index
    for every committed directory. (Python 3.14's ``uuid.uuid7`` makes the same; the machines
    run 3.11.)
    """
    milliseconds = time.time_ns() // 1_000_000
    value = (milliseconds & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10))
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC 9562 variant
    return uuid.UUID(int=value)
