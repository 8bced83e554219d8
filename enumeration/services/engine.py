"""The worker loop of seed 002: claim a task, list its units one by one, commit each atomically.

1. Claim the task with a lease (a conditional UPDATE: only one worker wins).
2. Skip every unit that already has a completion marker (a Batch) in this session.
3. List the next unit in sorted order. A unit that passes ``UNIT_MEMORY_ENTRIES`` stages each
   streamed batch (lease checked in the same transaction, so a worker that lost its lease stops
   writing); a smaller one stays in memory. A unit interrupted mid-listing keeps what it staged,
   and the connector skips those entries: it asks ``StagedExclusion`` which of each listed batch
   were staged, so that the staged key hashes are never all in memory.
4. Commit the unit: its rows go to ``task_output_records`` (from memory, or moved from
   staging), its Batch is written, the session's counters move, staging for the unit is
   emptied: one transaction. Units share that transaction with the next few (a group commit);
   each is still all or nothing.
   On PostgreSQL, units that fit in memory carry their own next stage into that transaction
   (their subdirectories' and files' tasks, the Batch committed as pipelined): the Pipeliner's
   work without reading the records back.
5. Every unit done: empty the task's staging, mark it COMPLETED, run the Pipeliner (for the
   staged units, and SQLite's).
"""

import functools
import io
import json
import logging
import operator
import os
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain

from django.db import connection, models, transaction
from django.db.models import F, Max, Min, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.logging import log_context
from enumeration.choices import BatchStatus, RecordType, SessionStatus, TaskKind, TaskStatus
from enumeration.conf import EngineSettings, engine_settings
from enumeration.connectors import Entry, UnitUnreadable, UnitVanished, connector_for
from enumeration.connectors.compiled import compiled
from enumeration.connectors.keys import RAW_PREFIX, decode_key, encode_key, key_hash
from enumeration.idranges import IdRange, leading_ranges
from enumeration.models import Batch, SessionState, StagedOutputRecord, Task, TaskOutputRecord
from enumeration.models.fields import uuid7
from enumeration.models.sessions import ACTIVE_SESSION_STATUSES
from enumeration.services.dispatch import tasks_create
from enumeration.services.events import events_deferred
from enumeration.services.owners import owner_identity
from enumeration.services.pipeliner import handed_on, next_stage_tasks, pipeline_advance

logger = logging.getLogger(__name__)


# Shortest time between two Pipeliner runs inside one task (the end of a task always runs it).
PIPELINE_INTERVAL = 0.5
# Longest time listed units wait for the commit they share.
GROUP_COMMIT_SECONDS = 1.0


class LeaseLost(Exception):
    """This worker no longer holds the task: it must stop writing."""


@dataclass
class RunOutcome:
    status: str  # "completed", "skipped", "lease_lost", "failed", "retry"
    units_committed: int = 0
    units_skipped: int = 0


def worker_identity() -> str:
    return owner_identity()


# --- claim and lease ---------------------------------------------------------------------------
_SESSION_NOT_STARTED = (SessionStatus.INITIALIZED, SessionStatus.STALLED)


def task_claim(*, task_id: uuid.UUID | str, worker_id: str) -> Task | None:
    """Claim a PENDING enumeration task for ``worker_id``; None when another worker has it, it is
    done, or it is not one this loop runs."""
    cfg = engine_settings()
    now = timezone.now()
    if not SessionState.objects.filter(
        tasks__pk=task_id, status__in=ACTIVE_SESSION_STATUSES
    ).exists():
        return None
    with transaction.atomic():
        # The claim filters on the task row alone: PostgreSQL re-checks a plain WHERE after
        # waiting for a competing claim's lock, but not a join or subquery, which would let two
        # claims both win.
        won = Task.objects.filter(
            pk=task_id, status=TaskStatus.PENDING, kind=TaskKind.DISCOVERY_ENUMERATE
        ).update(
            status=TaskStatus.RUNNING,
            lease_owner=worker_id,
            lease_expires_at=now + cfg.lease,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            last_commit_attempt=0,  # a new attempt has committed nothing yet
            started_at=Coalesce(F("started_at"), now),
        )
        if not won:
            return None
        task = Task.objects.select_related("session", "session__target").get(pk=task_id)
        # Most claims find the session IN_PROGRESS already: it is locked only to move it there.
        if task.session.status in _SESSION_NOT_STARTED:
            session = SessionState.objects.select_for_update().get(pk=task.session_id)
            if session.status in _SESSION_NOT_STARTED:
                session.mark_in_progress()
                session.save(
                    update_fields=[
                        "status",
                        "failure_reason",
                        "completed_at",
                        "started_at",
                        "last_update",
                    ]
                )
            task.session = session
    return task


def _renewal_interval(cfg: EngineSettings) -> float:
    """Seconds of work after which a lease is renewed even though nothing was written: a third
    of the lease, so that two renewals may be late before the Reaper takes the task back."""
    return cfg.lease.total_seconds() / 3


def _heartbeat(
    task_id: uuid.UUID,
    worker_id: str,
    lease: timedelta,
    *,
    committing: bool = False,
    durable: bool = True,
) -> None:
    """Extend the lease; raise LeaseLost when it is not ours any more. Call inside a transaction.
    ``committing``: the transaction commits units, so it records that this attempt progressed.
    ``durable=False`` (PostgreSQL): the transaction's commit does not wait for its WAL to reach
    the disk, for a transaction none of whose writes must outlive a crash of the database."""
    # One statement prepared here rather than by the ORM: it runs in every commit and every
    # staged batch, and compiling it cost more than the database spent on it.
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(
            _heartbeat_sql(committing, durable or connection.vendor != "postgresql"),
            [adapt(now + lease), adapt(now), _db(task_id), TaskStatus.RUNNING, worker_id],
        )
        still_ours = cursor.rowcount  # the UPDATE's: the last statement's
    if not still_ours:
        raise LeaseLost(f"task {task_id} is no longer leased to {worker_id}")


@functools.cache
def _heartbeat_sql(committing: bool, durable: bool) -> str:
    """``_heartbeat``'s UPDATE; a committing one also records that this attempt progressed. Not
    ``durable``: the SET that makes the commit asynchronous goes in the same round trip."""
    column = {f.name: connection.ops.quote_name(f.column) for f in Task._meta.fields}
    progress = f", {column['last_commit_attempt']} = {column['attempts']}" if committing else ""
    return (
        ("" if durable else "SET LOCAL synchronous_commit TO OFF; ")
        + f"UPDATE {Task._meta.db_table} SET {column['lease_expires_at']} = %s, "
        f"{column['heartbeat_at']} = %s{progress} "
        f"WHERE {column['id']} = %s AND {column['status']} = %s AND {column['lease_owner']} = %s"
    )


# --- writing rows ------------------------------------------------------------------------------
_ROW_COLUMNS = (
    "session_id",
    "task_id",
    "container",
    "record_type",
    "object_key",
    "object_key_hash",
    "name",
    "size",
    "modified_at",
    "metadata",
)


@dataclass
class _RowGroup:
    """Entries of one unit, and the value of the table's extra column (unit hash or batch id)."""

    container: str
    extra: str | uuid.UUID
    entries: list[Entry]


# PostgreSQL's binary COPY: a header, then per row a field count and each field as a 4-byte
# length (-1 for NULL) and its bytes; text fields as UTF-8, uuid as 16 bytes, bigint and
# timestamptz (microseconds since 2000-01-01 UTC) as 8 bytes, jsonb as version 1 and the text.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_LEN = struct.Struct(">i").pack
_INT8 = struct.Struct(">iq").pack
_COUNT_AND_ID = struct.Struct(">hiq").pack
_EMPTY_JSONB = _LEN(3) + b"\x01{}"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC, in Unix microseconds
# What psycopg2 hands libpq at a time during a COPY (its default, 8 KiB, is a read and a
# socket write every 8 KiB of a commit's megabytes).
_COPY_CHUNK = 1 << 20
_RAW_PREFIX = RAW_PREFIX.encode()

# One struct per (key length, name length): a file's key, hash, name, size and time fields in
# one pack. Paths of a tree come in a few hundred lengths; the bound only stops a pathological
# tree from growing it for ever.
_FILE_PACKERS: dict[tuple[int, int], Callable[..., bytes]] = {}
_FILE_PACKERS_MAX = 4096


def _file_packer(key_len: int, name_len: int) -> Callable[..., bytes]:
    if len(_FILE_PACKERS) >= _FILE_PACKERS_MAX:
        _FILE_PACKERS.clear()
    pack = _FILE_PACKERS[key_len, name_len] = struct.Struct(
        f">i{key_len}si16si{name_len}siqiq"
    ).pack
    return pack


def _text_field(value: str) -> bytes:
    data = value.encode()
    return _LEN(len(data)) + data


def _entry_fields(e: Entry, key: bytes, name: bytes) -> bytes:
    """An entry's key, hash, name, size and time fields, for any entry (``_binary_rows`` packs
    a file's with ``_file_packer``)."""
    size, mtime_ns = e.size, e.mtime_ns
    return (
        _LEN(len(key))
        + key
        + _LEN(16)
        + e.digest
        + _LEN(len(name))
        + name
        + (_NULL if size is None else _INT8(8, size))
        + (_NULL if mtime_ns is None else _INT8(8, mtime_ns // 1000 - _PG_EPOCH_US))
    )


def _metadata_field(metadata: dict) -> bytes:
    data = json.dumps(metadata).encode()
    return _LEN(len(data) + 1) + b"\x01" + data


def _binary_rows(task: Task, groups: list[_RowGroup], ids: Iterator[int] | None = None) -> bytes:
    """The rows of ``groups`` (with ``_ROW_COLUMNS`` and the extra column) as binary COPY; each
    row led by the next of ``ids`` when given. The loop over a group's entries is compiled
    where the listing is (``_scan.encode_rows``); the loop here is its pure-Python twin."""
    scan = compiled()
    out = bytearray(_COPY_HEADER)
    field_count = len(_ROW_COLUMNS) + 1 + (ids is not None)
    count = b"" if ids is not None else struct.pack(">h", field_count)
    for group in groups:
        prefix = (
            _LEN(16)
            + task.session_id.bytes
            + _LEN(16)
            + task.pk.bytes
            + _text_field(group.container)
        )
        # What comes before an entry's key, by record type, and (without metadata) after its time.
        heads = {t: count + prefix + _text_field(t) for t in RecordType.values}
        # The extra column is a uuid: a batch id, or a unit's digest given as hex.
        extra = group.extra
        suffix = _LEN(16) + (extra.bytes if isinstance(extra, uuid.UUID) else bytes.fromhex(extra))
        empty_tail = _EMPTY_JSONB + suffix
        if scan is not None:
            scan.encode_rows(
                out,
                group.entries,
                heads,
                empty_tail,
                suffix,
                ids,
                field_count,
                encode_key,
                _entry_fields,
                _metadata_field,
            )
            continue
        # This loop runs once per entry: the common case is inlined.
        for e in group.entries:
            # A key is stored as ``encode_key`` makes it; ASCII bytes without the base64 mark
            # (the common case) are already that, without a decode.
            key, name = e.key, e.name
            if not key.isascii() or key.startswith(_RAW_PREFIX):
                key = encode_key(key).encode()
            if not name.isascii() or name.startswith(_RAW_PREFIX):
                name = encode_key(name).encode()
            if ids is not None:
                out += _COUNT_AND_ID(field_count, 8, next(ids))
            out += heads[e.record_type]
            size, mtime_ns = e.size, e.mtime_ns
            if size is not None and mtime_ns is not None:  # a file: one pack
                pack = _FILE_PACKERS.get((len(key), len(name))) or _file_packer(len(key), len(name))
                out += pack(
                    len(key),
                    key,
                    16,
                    e.digest,
                    len(name),
                    name,
                    8,
                    size,
                    8,
                    mtime_ns // 1000 - _PG_EPOCH_US,
                )
            else:
                out += _entry_fields(e, key, name)
            if e.metadata:
                out += _metadata_field(e.metadata)
                out += suffix
            else:
                out += empty_tail
    out += _COPY_TRAILER
    return bytes(out)


def _copy_rows(
    table: str,
    task: Task,
    extra_column: str,
    groups: list[_RowGroup],
    ids: list[int] | None = None,
) -> None:
    """PostgreSQL: COPY entries into ``table`` in the binary format, with their ``ids`` if given
    (in the order of the groups' entries)."""
    columns = ", ".join((*(("id",) if ids is not None else ()), *_ROW_COLUMNS, extra_column))
    rows = _binary_rows(task, groups, None if ids is None else iter(ids))
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(
            f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT binary)",
            io.BytesIO(rows),
            size=_COPY_CHUNK,
        )


@functools.cache
def _record_id_sequence() -> tuple[str, int]:
    """The name of ``task_output_records``'s id sequence and its increment (PostgreSQL): the
    sequence counts in blocks (migration 0009), so one ``nextval`` reserves a block of ids."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.seqrelid::regclass::text, s.seqincrement FROM pg_sequence s "
            "WHERE s.seqrelid = pg_get_serial_sequence(%s, 'id')::regclass",
            [TaskOutputRecord._meta.db_table],
        )
        name, increment = cursor.fetchone()
        return name, increment


def _record_id_blocks(count: int) -> tuple[list[int], int]:
    """PostgreSQL: new ids of ``task_output_records`` for ``count`` records, reserved from its
    own sequence, so that a commit knows its records' ids without reading them back. Returns the
    first id of each block and the block size. (The sequence is named as a constant: looked up
    inside the statement, it was looked up again for every row, 5x slower.)"""
    sequence, block = _record_id_sequence()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(%s::regclass), "
            "(SELECT seqincrement FROM pg_sequence WHERE seqrelid = %s::regclass) "
            "FROM generate_series(1, %s)",
            [sequence, sequence, -(-count // block)],
        )
        rows = cursor.fetchall()
    if rows and rows[0][1] != block:
        # The increment changed since this process read it (a migration ran or was reversed
        # under a running worker): blocks of the old size could overlap another process's.
        # The values just taken are left unused; read the increment again and reserve anew.
        logger.warning("record id blocks: the sequence's increment is now %d", rows[0][1])
        _record_id_sequence.cache_clear()
        return _record_id_blocks(count)
    return [row[0] for row in rows], block


def _ids_files_first(tails: list[list[Entry]], files: list[int]) -> tuple[list[int], list[IdRange]]:
    """PostgreSQL: ids for the entries of ``tails`` (in their order), reserved in blocks, and
    the FILE entries' ids as ranges; ``files`` counts each tail's FILE entries. Files take the
    lowest ids, so that a few ranges name them all. A tail of files only (most directories)
    takes a slice of the pool; only the others are numbered entry by entry."""
    count = sum(map(len, tails))
    if not count:
        return [], []
    starts, block = _record_id_blocks(count)
    pool = list(chain.from_iterable(range(start, start + block) for start in starts))
    file_total = sum(files)
    ids: list[int] = []
    next_file, next_other = 0, file_total
    for tail, file_count in zip(tails, files, strict=True):
        if file_count == len(tail):
            ids += pool[next_file : next_file + file_count]
        else:
            others = len(tail) - file_count
            file_id = iter(pool[next_file : next_file + file_count]).__next__
            other_id = iter(pool[next_other : next_other + others]).__next__
            ids += [file_id() if e[0] == _FILE else other_id() for e in tail]
            next_other += others
        next_file += file_count
    return ids, leading_ranges(starts, block, file_total)


def _write_rows(
    model: type[StagedOutputRecord] | type[TaskOutputRecord],
    task: Task,
    extra_column: str,
    groups: list[_RowGroup],
    ids: list[int] | None = None,
) -> None:
    """Bulk-write found entries into staging or the output table. Inside a transaction. ``ids``
    (PostgreSQL only) are the rows' ids, in the order of the groups' entries."""
    groups = [g for g in groups if g.entries]
    if not groups:
        return
    if connection.vendor == "postgresql":
        _copy_rows(model._meta.db_table, task, extra_column, groups, ids)
        return
    rows = [
        model(
            session_id=task.session_id,
            task_id=task.pk,
            container=g.container,
            record_type=e.record_type,
            object_key=encode_key(e.key),
            object_key_hash=e.key_hash,
            name=encode_key(e.name),
            size=e.size,
            modified_at=e.modified_at,
            metadata=e.metadata or {},
            **{extra_column: g.extra},
        )
        for g in groups
        for e in g.entries
    ]
    # Files first, as on PostgreSQL: the ids the database gives them then run together.
    rows.sort(key=_not_a_file)
    model.objects.bulk_create(rows)


def _not_a_file(row: StagedOutputRecord | TaskOutputRecord) -> bool:
    return row.record_type != RecordType.FILE


def _stage(
    task: Task,
    worker_id: str,
    cfg: EngineSettings,
    unit_key: str,
    unit_hash: str,
    entries: list[Entry],
) -> None:
    """Stage one streamed batch of a unit, in a transaction that proves the lease is ours. Not
    progress that spares an attempt: a directory that keeps growing would give every run
    something new to stage, and a task cut short each time would never end.

    Its commit does not wait for the disk: nothing it writes must outlive a crash of the
    database. The staging table is UNLOGGED (empty after a crash, and the unit is listed
    again), and a heartbeat lost with it only makes the lease look older, which the next
    write's lease check settles as it settles any take-back. The unit's own commit is
    synchronous and flushes all that came before it. (A directory of 200,000 files is 2,000
    staged batches, each spared a flush.)"""
    with transaction.atomic():
        _heartbeat(task.pk, worker_id, cfg.lease, durable=False)
        _write_rows(
            StagedOutputRecord, task, "unit_hash", [_RowGroup(unit_key, unit_hash, entries)]
        )


# --- commit ------------------------------------------------------------------------------------
def _db(value: uuid.UUID) -> object:
    """A UUID as the backend stores it (SQLite keeps 32 hex characters, PostgreSQL a uuid)."""
    return Task._meta.pk.get_db_prep_value(value, connection)


_MOVE_COLUMNS = ", ".join(_ROW_COLUMNS)
# How a staged unit's rows are numbered when they move: files first (the parameter is
# RecordType.FILE), as ``_ids_files_first`` numbers a commit from memory.
_FILES_FIRST = "record_type <> %s, object_key_hash"
_record_type = operator.attrgetter("record_type")
# The record types as plain strings, for the loops over entries (an enum member's look-up
# costs more than the comparison).
_FILE, _DIRECTORY = RecordType.FILE.value, RecordType.DIRECTORY.value


@dataclass
class ListedUnit:
    """A unit listed to its end and not yet committed.

    ``tail`` is what of its listing is still in memory: all of it for a unit that ended within
    ``UNIT_MEMORY_ENTRIES`` (the common case, never staged: its commit writes it straight to the
    output table, the same atomic result without the round trips), the last streamed batch for
    one that passed them; ``staged`` says whether earlier batches went to staging.
    """

    batch: Batch
    tail: list[Entry]
    staged: bool

    @property
    def size(self) -> int:
        return len(self.tail)


def _move_staged(task: Task, unit: ListedUnit) -> Counter[str]:
    """Move a unit's staged rows (and its tail) into the output table; counts by record type.

    A plain INSERT, not ON CONFLICT DO NOTHING: the rows go under the Batch just inserted (new,
    and unique per unit), and staging holds a key once per task, so no row can collide; were
    one to, the commit fails whole rather than dropping it. (Asked to resolve conflicts,
    PostgreSQL checks the unique key before every row and logs each one twice: a third of the
    move's time for 200,000 staged files.)"""
    batch = unit.batch
    _write_rows(
        StagedOutputRecord, task, "unit_hash", [_RowGroup(batch.unit, batch.unit_hash, unit.tail)]
    )
    staged = StagedOutputRecord._meta.db_table
    output = TaskOutputRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT record_type, COUNT(*) FROM {staged} "
            "WHERE task_id = %s AND unit_hash = %s GROUP BY record_type",
            [_db(task.pk), batch.unit_hash],
        )
        by_type = Counter(dict(cursor.fetchall()))
        batch.mark_successful(by_type.total())
        if connection.vendor == "postgresql":
            # Ids from reserved blocks, files first, as a commit from memory gives them: the
            # Pipeliner then names the unit's files in a few ranges.
            starts, block = _record_id_blocks(batch.items_processed)
            if starts:
                used = leading_ranges(starts, block, batch.items_processed)
                batch.hold_record_ids(used[0][0], used[-1][1])
        batch.save(force_insert=True)
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {output} (id, {_MOVE_COLUMNS}, batch_id) "
                f"SELECT (%s::bigint[])[(n / %s + 1)::int] + n %% %s, {_MOVE_COLUMNS}, %s "
                f"FROM (SELECT {_MOVE_COLUMNS}, row_number() OVER "
                f"(ORDER BY {_FILES_FIRST}) - 1 AS n "
                f"FROM {staged} WHERE task_id = %s AND unit_hash = %s) AS numbered",
                [
                    starts,
                    block,
                    block,
                    _db(batch.pk),
                    RecordType.FILE,
                    _db(task.pk),
                    batch.unit_hash,
                ],
            )
        else:
            cursor.execute(
                f"INSERT INTO {output} ({_MOVE_COLUMNS}, batch_id) "
                f"SELECT {_MOVE_COLUMNS}, %s FROM {staged} "
                "WHERE task_id = %s AND unit_hash = %s "
                f"ORDER BY {_FILES_FIRST}",
                [_db(batch.pk), _db(task.pk), batch.unit_hash, RecordType.FILE],
            )
        cursor.execute(
            f"DELETE FROM {staged} WHERE task_id = %s AND unit_hash = %s",
            [_db(task.pk), batch.unit_hash],
        )
    return by_type


# COPY's text format: a field's backslash, tab, newline and carriage return escaped.
_COPY_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text_converter(model_field: models.Field) -> Callable[[object], str]:
    """How a model field's (non-NULL) value is written in a text-format COPY row."""
    if isinstance(model_field, models.JSONField):
        return lambda value: json.dumps(value).translate(_COPY_TEXT_ESCAPES)
    kind = model_field.get_internal_type()
    if kind == "BooleanField":
        return {True: "t", False: "f"}.__getitem__
    if kind == "DateTimeField":
        return datetime.isoformat
    if kind in ("CharField", "TextField"):
        # str(): a TextChoices member gives its value.
        return lambda value: str(value).translate(_COPY_TEXT_ESCAPES)
    return str  # integers and uuids: nothing to escape


@functools.cache
def _batch_copy() -> tuple[str, Callable[[Batch], tuple], list[Callable[[object], str]]]:
    """The Batch COPY's statement, a getter of a Batch's values and their converters."""
    fields = Batch._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    return (
        f"COPY {Batch._meta.db_table} ({columns}) FROM STDIN",
        operator.attrgetter(*(f.attname for f in fields)),
        [_copy_text_converter(f) for f in fields],
    )


def _insert_batches(batches: list[Batch]) -> None:
    """Insert new Batch rows. On PostgreSQL one text-format COPY built here: ``bulk_create``,
    and psycopg2's adaptation of each value for an INSERT, cost 70-80 µs a row, more than the
    database spends on it; the COPY line, each field converted as its type needs, costs a
    fraction of that."""
    if not batches:
        return
    if connection.vendor != "postgresql":
        Batch.objects.bulk_create(batches)
        return
    statement, values, converters = _batch_copy()
    rows = "".join(
        "\t".join(
            [
                "\\N" if value is None else convert(value)
                for convert, value in zip(converters, values(b), strict=True)
            ]
        )
        + "\n"
        for b in batches
    )
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(statement, io.StringIO(rows), size=_COPY_CHUNK)


@dataclass
class _InCommitStage:
    ids: list[int] | None = None  # the records' ids, reserved
    tasks: list[Task] = field(default_factory=list)  # unsaved next-stage tasks


@dataclass
class _Written:
    """A unit committed from memory: its entries in the order the commit writes them
    (``_in_digest_order``) and how many are FILE entries."""

    unit: ListedUnit
    rows: list[Entry]
    files: int


def _next_stage_in_commit(task: Task, written: list[_Written]) -> _InCommitStage:
    """The Pipeliner's work for units committed straight from memory, done in their commit
    (PostgreSQL): their records' ids are reserved first, so the CLASSIFICATION tasks are made
    from what is in hand instead of reading the records back, and the batches are committed
    already pipelined. Elsewhere (SQLite) the Pipeliner does it after the commit."""
    if connection.vendor != "postgresql" or not written:
        return _InCommitStage()
    ids, file_id_ranges = _ids_files_first([w.rows for w in written], [w.files for w in written])
    directory_keys = sorted(
        e.key
        for w in written
        if w.unit.batch.found_subdirectories
        for e in w.rows
        if e[0] == _DIRECTORY
    )
    for w in written:
        w.unit.batch.pipelined = True
    return _InCommitStage(
        ids,
        list(
            next_stage_tasks(
                task.session_id,
                directory_keys=map(encode_key, directory_keys),
                file_id_ranges=file_id_ranges,
            )
        ),
    )


def _hold_record_ids(written: list[_Written], ids: list[int]) -> None:
    """Give each unit's Batch the bounds of its records' ids: ``ids`` are the units' rows', in
    order (PostgreSQL, reserved before the commit writes them)."""
    at = 0
    for w in written:
        if w.rows:
            own = ids[at : at + len(w.rows)]
            w.unit.batch.hold_record_ids(min(own), max(own))
            at += len(w.rows)


def _bound_record_ids(batch_ids: list[uuid.UUID]) -> None:
    """SQLite, where the database numbers the records as it writes them: read their bounds back
    into their Batches, in the commit."""
    if not batch_ids:
        return
    records = TaskOutputRecord.objects.filter(batch_id=OuterRef("pk")).values("batch_id")
    Batch.objects.filter(pk__in=batch_ids).update(
        first_record_id=Subquery(records.annotate(first=Min("id")).values("first")),
        last_record_id=Subquery(records.annotate(last=Max("id")).values("last")),
    )


_digest = operator.itemgetter(2)  # Entry.digest


def _new_batch_ids(units: list[ListedUnit]) -> None:
    """Give the units' Batches new ids, ascending in the units' order: with each unit's rows in
    digest order (``_in_digest_order``), the commit writes the output table's unique key,
    (batch, digest), in the key's own order and above every key written before it.

    Ids made when each listing began (as they were until this) interleave with those of the units
    another worker listed meanwhile and commits at another moment, and a listing's order is the
    directory's: written so, each commit's rows fell between keys already there, and every index
    page they filled split in half. After a million-file run with two workers the key was 55 %
    full; in its own order 72-86 %, with a tenth less of the database's CPU
    (docs/benchmarks.md)."""
    for unit, batch_id in zip(units, sorted(uuid7() for _ in units), strict=True):
        unit.batch.pk = batch_id


def _in_digest_order(entries: list[Entry]) -> list[Entry]:
    """``entries`` sorted by digest, in a new list. Not in place: the listed list, dropped after
    the commit, then gives its entries back in the order they were made; given back in digest
    order, they scattered the allocator's free lists and slowed the next listings by 1-5 %."""
    rows = list(entries)
    scan = compiled()
    if scan is not None:
        scan.sort_by_digest(rows)  # no Python comparison per pair
    else:
        rows.sort(key=_digest)
    return rows


def _commit_units(task: Task, worker_id: str, cfg: EngineSettings, units: list[ListedUnit]) -> None:
    """One transaction for a group of listed units: each unit's records into
    ``task_output_records``, each unit's Batch marker, and the session's counters.

    Each unit is still all or nothing; grouping small units only shares the transaction (one
    lease check, one COPY, one counter update) between them.
    """
    if not units:
        return
    with transaction.atomic():
        # The lease is proved, and the task's row locked against the Reaper, before any write.
        _heartbeat(task.pk, worker_id, cfg.lease, committing=True)
        started = time.monotonic()
        _new_batch_ids(units)
        totals: Counter[str] = Counter()
        written: list[_Written] = []  # the units committed from memory (and the failed)
        failed = 0
        for unit in units:
            batch = unit.batch
            if batch.status == BatchStatus.FAILED:
                if unit.staged:
                    StagedOutputRecord.objects.filter(task=task, unit_hash=batch.unit_hash).delete()
                failed += 1
                written.append(_Written(unit, [], 0))
            elif unit.staged:
                by_type = _move_staged(task, unit)
                batch.found_subdirectories = by_type[RecordType.DIRECTORY]
                totals.update(by_type)
            else:
                by_type = Counter(map(_record_type, unit.tail))
                batch.mark_successful(len(unit.tail))
                batch.found_subdirectories = by_type[RecordType.DIRECTORY]
                totals.update(by_type)
                written.append(
                    _Written(unit, _in_digest_order(unit.tail), by_type[RecordType.FILE])
                )
        next_stage = _next_stage_in_commit(task, written)
        if next_stage.ids is not None:
            _hold_record_ids(written, next_stage.ids)
        _insert_batches([w.unit.batch for w in written])
        _write_rows(
            TaskOutputRecord,
            task,
            "batch_id",
            [_RowGroup(w.unit.batch.unit, w.unit.batch.pk, w.rows) for w in written],
            next_stage.ids,
        )
        if connection.vendor != "postgresql":
            _bound_record_ids([u.batch.pk for u in units if u.batch.status != BatchStatus.FAILED])
        tasks_create(next_stage.tasks)
        task.session.process_completed_batches(
            batches=len(units),
            failed=failed,
            files=totals[RecordType.FILE],
            directories=totals[RecordType.DIRECTORY],
            items=totals.total(),
            processed=handed_on(next_stage.tasks),
            seconds=sum(u.batch.elapsed_seconds for u in units),
        )
        if time.monotonic() - started >= _renewal_interval(cfg):
            # A long commit (a big staged unit's move) renews the lease from its end: the lease
            # taken at its start may have run out while the Reaper waited on the row's lock.
            _heartbeat(task.pk, worker_id, cfg.lease)


# --- the loop ----------------------------------------------------------------------------------
def _pause_for_tests(cfg: EngineSettings, unit: bytes, batches_staged: int) -> None:
    """Test hook: pause one listing once, so that a test can kill the worker in the middle of it.

    ``CENSUS_TEST_PAUSE_LISTING=<dir name>:<batches>:<seconds>:<marker file>``.
    """
    if not cfg.test_pause_listing:
        return
    name, batches, seconds, marker = cfg.test_pause_listing.split(":", 3)
    if os.path.basename(unit) != os.fsencode(name) or batches_staged != int(batches):
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # paused once already: the resumed listing runs through
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    logger.warning("test hook: pausing the listing of %s for %ss", encode_key(unit), seconds)
    time.sleep(float(seconds))


class StagedExclusion:
    """What earlier attempts of a task staged, looked up a listed batch at a time: one query per
    batch on the staging table's unique (task, digest) instead of every staged digest of the
    unit held in memory for the whole listing (invariant 6). An entry's digest is of its whole
    key, so the task's other units cannot match, and rows this attempt stages as it goes are
    found too, which is harmless: a listing names an entry once."""

    def __init__(self, task: Task) -> None:
        self._staged = StagedOutputRecord.objects.filter(task=task)

    def among(self, digests: Sequence[bytes]) -> set[bytes]:
        found = self._staged.filter(object_key_hash__in=[d.hex() for d in digests])
        return {bytes.fromhex(h) for h in found.values_list("object_key_hash", flat=True)}


def _list_unit(
    task: Task, worker_id: str, cfg: EngineSettings, unit: bytes, *, maybe_staged: bool = True
) -> ListedUnit:
    """List one unit to its end. A unit whose listing ends within ``UNIT_MEMORY_ENTRIES``
    entries is held in memory and committed from there; past that, every streamed batch but the
    last goes to staging as it comes, and the unit can be resumed from what was staged.

    ``maybe_staged=False`` says an earlier attempt staged nothing of it, which saves the look-up
    of what to exclude.
    """
    unit_key = encode_key(unit)
    unit_hash = key_hash(unit)
    already_staged = (
        StagedOutputRecord.objects.filter(task=task, unit_hash=unit_hash).count()
        if maybe_staged
        else 0
    )
    batch = Batch.started(
        id=None,  # given at its commit, in the commit's order (_new_batch_ids)
        session_id=task.session_id,
        task_id=task.pk,
        unit=unit_key,
        unit_hash=unit_hash,
        items_resumed=already_staged,
        expected_items=already_staged,
        checkpoint={"unit": unit_key},
    )
    if already_staged:
        logger.info("resuming %s: %d entries already staged are excluded", unit_key, already_staged)
    connector = connector_for(task.session.source_type)
    staged_batches = 0
    held: list[list[Entry]] = []  # listed batches not staged
    held_entries = 0
    renewed = time.monotonic()
    try:
        for entries in connector.list_unit(
            unit,
            exclude=StagedExclusion(task) if already_staged else None,
            batch_size=cfg.listing_batch_size,
        ):
            if not entries:
                # Excluded entries going by, nothing to stage: renew the lease when it is due.
                if time.monotonic() - renewed >= _renewal_interval(cfg):
                    with transaction.atomic():
                        _heartbeat(task.pk, worker_id, cfg.lease)
                    renewed = time.monotonic()
                continue
            held.append(entries)
            held_entries += len(entries)
            batch.expected_items += len(entries)
            # Once a unit stages (this listing or an earlier attempt's), every batch but the last.
            staging = already_staged or staged_batches or held_entries > cfg.unit_memory_entries
            if len(held) > 1 and staging:
                for earlier in held[:-1]:
                    _stage(task, worker_id, cfg, unit_key, unit_hash, earlier)
                    staged_batches += 1
                    _pause_for_tests(cfg, unit, staged_batches)
                renewed = time.monotonic()
                held, held_entries = [entries], len(entries)
    except UnitVanished as exc:
        if unit_key == task.session.target.location:
            # The target itself is gone: that is the run's failure, not an empty result.
            logger.warning("the target %s is gone: %s", unit_key, exc)
            batch.mark_failed(exc)
        else:
            # Removed since its parent was listed: nothing of it is left to find. It is
            # committed empty (with what an earlier attempt staged of it, if any), saying so.
            logger.info("unit %s is gone: %s", unit_key, exc)
            batch.error_details = f"gone before it was listed ({exc})"
        held = []
    except UnitUnreadable as exc:
        # The unit is an error on its own record; nothing partial of it is kept.
        logger.warning("unit %s could not be listed: %s", unit_key, exc)
        batch.mark_failed(exc)
        held = []
    tail = held[0] if len(held) == 1 else list(chain.from_iterable(held))
    return ListedUnit(batch, tail, staged=bool(staged_batches or already_staged))


def _process_unit(
    task: Task, worker_id: str, cfg: EngineSettings, unit: bytes, *, maybe_staged: bool = True
) -> Batch:
    """List one unit and commit it alone."""
    listed = _list_unit(task, worker_id, cfg, unit, maybe_staged=maybe_staged)
    _commit_units(task, worker_id, cfg, [listed])
    return listed.batch


def _finish_task(task: Task, worker_id: str) -> None:
    with transaction.atomic():
        done = Task.objects.filter(
            pk=task.pk, status=TaskStatus.RUNNING, lease_owner=worker_id
        ).update(
            status=TaskStatus.COMPLETED,
            completed_at=timezone.now(),
            lease_owner="",
            lease_expires_at=None,
        )
        if not done:
            raise LeaseLost(f"task {task.pk} is no longer leased to {worker_id}")
        StagedOutputRecord.objects.filter(task=task).delete()


def task_run(*, task_id: uuid.UUID | str, worker_id: str | None = None) -> RunOutcome:
    """Run one DISCOVERY_ENUMERATE task to completion. Safe to call for any message, any time."""
    from enumeration.services.sessions import (
        session_refresh_status,
        task_release_after_error,
        tasks_take_back_orphaned,
    )

    worker_id = worker_id or worker_identity()
    task = task_claim(task_id=task_id, worker_id=worker_id)
    if task is None and tasks_take_back_orphaned(task_ids=[task_id]).requeued:
        # The message came back because its worker died (task_reject_on_worker_lost: a pool
        # child killed, say by the OOM killer) and the task is still leased to that process:
        # taken back, it is claimed now rather than when the lease expires. (The message the
        # take-back sends finds it claimed, and is skipped.)
        task = task_claim(task_id=task_id, worker_id=worker_id)
    if task is None:
        return RunOutcome("skipped")
    cfg = engine_settings()
    outcome = RunOutcome("completed")
    # The task's commits make events (TaskCreated, at most SessionFinished): dispatched together
    # when it ends rather than one round trip after each commit.
    with log_context(session_id=task.session_id, task_id=task.pk), events_deferred():
        units = sorted(decode_key(path) for path in task.paths_to_scan)
        done = set(
            Batch.objects.filter(
                session_id=task.session_id, unit_hash__in=[key_hash(u) for u in units]
            ).values_list("unit_hash", flat=True)
        )
        # Units an earlier attempt of this task left half-staged (at most one, in practice).
        # Asked whatever ``attempts`` says: an attempt that committed units (and was given back)
        # may have staged part of the next.
        interrupted = set(
            StagedOutputRecord.objects.filter(task=task)
            .values_list("unit_hash", flat=True)
            .distinct()
        )
        last_pipelined = time.monotonic()
        group: list[ListedUnit] = []
        group_started = 0.0
        group_entries = 0
        # Whether a committed unit waits for the Pipeliner (units committed straight from memory
        # on PostgreSQL were pipelined in their commit; staged ones and SQLite's were not).
        left_for_pipeliner = False

        def flush() -> None:
            nonlocal last_pipelined, left_for_pipeliner, group_entries
            _commit_units(task, worker_id, cfg, group)
            outcome.units_committed += len(group)
            left_for_pipeliner = left_for_pipeliner or any(not u.batch.pipelined for u in group)
            left_subdirectories = any(
                u.batch.found_subdirectories and not u.batch.pipelined for u in group
            )
            group.clear()
            group_entries = 0
            # Subdirectories are work for other workers: hand them on right after the commit,
            # at most every PIPELINE_INTERVAL, so idle workers are not kept waiting for the end
            # of this task. Everything else goes at the end of the task.
            if left_subdirectories and time.monotonic() - last_pipelined >= PIPELINE_INTERVAL:
                pipeline_advance(session_id=task.session_id)
                last_pipelined = time.monotonic()

        try:
            for unit in units:
                if key_hash(unit) in done:
                    outcome.units_skipped += 1
                    continue
                if not group:
                    group_started = time.monotonic()
                listed = _list_unit(
                    task, worker_id, cfg, unit, maybe_staged=key_hash(unit) in interrupted
                )
                group.append(listed)
                group_entries += listed.batch.expected_items if listed.staged else listed.size
                # Units share a commit until the group holds GROUP_COMMIT_ENTRIES entries (a
                # staged unit's counted whole: its commit moves them all) or
                # GROUP_COMMIT_SECONDS have passed.
                if (
                    group_entries >= cfg.group_commit_entries
                    or time.monotonic() - group_started >= GROUP_COMMIT_SECONDS
                ):
                    flush()
            flush()
            _finish_task(task, worker_id)
        except LeaseLost as exc:
            logger.warning("stopping: %s", exc)
            return RunOutcome("lease_lost", outcome.units_committed, outcome.units_skipped)
        except Exception as exc:
            logger.exception("task failed")
            outcome.status = task_release_after_error(
                task_id=task.pk, worker_id=worker_id, error=exc
            )
            return outcome
        logger.info(
            "task completed: %d units committed, %d already done",
            outcome.units_committed,
            outcome.units_skipped,
        )
        if left_for_pipeliner:
            pipeline_advance(session_id=task.session_id)
        session_refresh_status(session_id=task.session_id)
    return outcome
