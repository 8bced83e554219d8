"""How found objects are stored: digests as uuid on PostgreSQL, exact times and sizes from the
binary COPY, time-ordered batch ids, and the migration that changed the digest columns."""

import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from enumeration.choices import RecordType, SessionStatus
from enumeration.connectors.base import Entry
from enumeration.connectors.keys import decode_key, encode_key, key_digest, key_hash
from enumeration.models import Batch, Task, TaskOutputRecord
from enumeration.models.fields import uuid7
from enumeration.services import engine
from enumeration.services.inprocess import session_drain
from enumeration.services.sessions import enumerate_target

pytestmark = pytest.mark.django_db(transaction=True)

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _column_type(table: str, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = %s AND column_name = %s",
            [table, column],
        )
        return cursor.fetchone()[0]


def _enumerate(root) -> str:
    session = session_drain(session_id=enumerate_target(path=str(root)).pk, idle_sleep=0.05)
    assert session.status == SessionStatus.COMPLETED
    return session.pk


def test_digests_are_uuid_columns_read_and_looked_up_as_hex(tmp_path):
    # Given a committed directory
    (tmp_path / "a.txt").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    session_id = _enumerate(tmp_path)
    # Then every digest column is PostgreSQL's uuid
    assert _column_type("task_output_records", "object_key_hash") == "uuid"
    assert _column_type("staged_output_records", "object_key_hash") == "uuid"
    assert _column_type("staged_output_records", "unit_hash") == "uuid"
    assert _column_type("enumeration_batch", "unit_hash") == "uuid"
    # And each reads back as the key's 32-hex-character hash, and finds its record by it
    records = list(TaskOutputRecord.objects.filter(session_id=session_id))
    assert len(records) == 2
    for record in records:
        assert record.object_key_hash == key_hash(decode_key(record.object_key))
        assert TaskOutputRecord.objects.get(object_key_hash=record.object_key_hash) == record
    hashes = [r.object_key_hash for r in records]
    assert TaskOutputRecord.objects.filter(object_key_hash__in=hashes).count() == 2
    root = Batch.objects.get(session_id=session_id, unit=str(tmp_path))
    assert root.unit_hash == key_hash(os.fsencode(tmp_path))


@pytest.mark.parametrize(
    "mtime_ns",
    [
        1_764_600_000_123_456_789,  # 2025, below a microsecond kept as truncated
        946_684_799_999_999_000,  # a microsecond before PostgreSQL's own epoch (2000-01-01)
        1_000_000_000,  # 1970-01-01T00:00:01
        4_102_444_800_000_000_000,  # 2100-01-01
    ],
)
def test_a_file_keeps_its_size_and_modification_time_to_the_microsecond(tmp_path, mtime_ns):
    # Given a file with a known size and modification time
    path = tmp_path / "f.bin"
    path.write_bytes(b"y" * 12345)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    # When it is enumerated (the binary COPY path on PostgreSQL)
    session_id = _enumerate(tmp_path)
    record = TaskOutputRecord.objects.get(session_id=session_id, record_type=RecordType.FILE)
    # Then the row says what lstat said
    assert record.size == 12345
    assert record.modified_at == UNIX_EPOCH + timedelta(microseconds=mtime_ns // 1000)


def test_entry_derives_its_hex_hash_and_datetime():
    entry = Entry(RecordType.FILE, b"/a", key_digest(b"/a"), b"a", 1, 1_500_000_000_250_000_000)
    assert entry.key_hash == key_hash(b"/a")
    assert entry.modified_at == datetime(2017, 7, 14, 2, 40, 0, 250_000, tzinfo=UTC)
    assert Entry(RecordType.DIRECTORY, b"/d", key_digest(b"/d"), b"d").modified_at is None


def test_batch_ids_are_uuid7_in_the_order_they_were_made():
    ids = []
    for _ in range(5):
        ids.append(uuid7())
        time.sleep(0.002)
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert Batch._meta.pk.default is uuid7


def test_the_digest_migration_converts_existing_rows_both_ways(tmp_path):
    # Given a session committed under the new columns
    (tmp_path / "kept.txt").write_bytes(b"z")
    session_id = _enumerate(tmp_path)
    before = dict(
        TaskOutputRecord.objects.filter(session_id=session_id).values_list(
            "object_key", "object_key_hash"
        )
    )
    executor = MigrationExecutor(connection)
    try:
        # When the migration is reversed, the digests become 32 hex characters again
        executor.migrate([("enumeration", "0007_session_retention")])
        assert _column_type("task_output_records", "object_key_hash") == "character varying"
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT object_key, object_key_hash FROM task_output_records WHERE session_id = %s",
                [session_id],
            )
            assert dict(cursor.fetchall()) == before
    finally:
        # And applied again, they are uuids holding the same values
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes("enumeration"))
    assert _column_type("task_output_records", "object_key_hash") == "uuid"
    after = dict(
        TaskOutputRecord.objects.filter(session_id=session_id).values_list(
            "object_key", "object_key_hash"
        )
    )
    assert after == before


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's catalogue")
def test_no_index_of_the_engine_tables_repeats_the_start_of_another():
    """Each index entry costs every insert: an index whose columns open another (whole-table)
    index answers nothing the other does not. Batch's and Task's own indexes on their session
    were such (migration 0017)."""
    tables = [m._meta.db_table for m in django_apps.get_app_config("enumeration").get_models()]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text, "
            "i.indkey::int2[], i.indisunique, i.indpred IS NOT NULL "
            "FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
            "WHERE t.relname = ANY(%s)",
            [tables],
        )
        indexes = cursor.fetchall()
    # (the output tables are read too: their names do not start with the app's)
    assert {"task_output_records", "enumeration_batch"} <= {i[1] for i in indexes}
    redundant = [
        (name, other)
        for name, table, columns, unique, partial in indexes
        if not unique and not partial
        for other, other_table, other_columns, _, other_partial in indexes
        if other != name
        and other_table == table
        and not other_partial
        and list(other_columns[: len(columns)]) == list(columns)
    ]
    assert redundant == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads PostgreSQL's catalogue")
def test_the_tables_written_for_every_directory_carry_only_the_indexes_read_through():
    """A Batch and a record are written for every directory and entry listed, and every index
    is paid for on each write: these are the ones the engine, the API and the admin read
    through. A new one belongs here only with the query that needs it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.relname, array_agg(a.attname ORDER BY k.ord), i.indisunique, "
            "i.indpred IS NOT NULL "
            "FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
            "CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            "WHERE t.relname = ANY(%s) GROUP BY t.relname, i.indexrelid, i.indisunique, i.indpred",
            [[Batch._meta.db_table, TaskOutputRecord._meta.db_table]],
        )
        found = {
            (table, tuple(columns), unique, partial) for table, columns, unique, partial in cursor
        }
    batch, records = Batch._meta.db_table, TaskOutputRecord._meta.db_table
    assert found == {
        (batch, ("id",), True, False),
        (batch, ("session_id", "unit_hash"), True, False),  # one batch per unit
        (batch, ("session_id",), False, True),  # the Pipeliner's cursor
        (batch, ("completed_at", "id"), False, False),  # the API's order
        (batch, ("task_id",), False, False),  # a task's units: its requeue, ?task=, its delete
        (records, ("id",), True, False),  # the API's pages, a batch's id bounds
        (records, ("batch_id", "object_key_hash"), True, False),  # invariant 4
    }


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the Batch COPY is PostgreSQL's")
def test_the_batch_copy_stores_what_the_orm_stores_awkward_values_included(tmp_path):
    """Batches are written by a text-format COPY built by hand (engine._insert_batches): every
    field must come back as ``bulk_create`` writes it, escapes, NULLs and JSON included."""
    session = enumerate_target(path=str(tmp_path))
    task = Task.objects.get(session=session)
    awkward = [
        "/d/tab\there",
        "/d/new\nline",
        "/d/back\\slash\\N",
        "/d/cr\rhere",
        '/d/"quoted"',
        "/d/ünïcödé ∑",
        encode_key(b"/d/not-utf8-\xff\xfe"),
    ]

    def batches(suffix: str) -> list[Batch]:
        made = []
        for n, unit in enumerate(awkward):
            batch = Batch.started(
                session_id=session.pk,
                task_id=task.pk,
                unit=unit,
                unit_hash=key_hash(os.fsencode(unit + suffix)),
                checkpoint={"unit": unit, "cursor": None, "n": [n, 1.5, True]},
            )
            if n % 3 == 0:
                batch.mark_failed(f"unreadable:\t{unit}\nsee \\ here")
            elif n % 3 == 1:
                batch.mark_successful(n + 3)
                batch.hold_record_ids(10 * n, 10 * n + 2)
                batch.pipelined = True
            # else: still in progress, completed_at NULL
            made.append(batch)
        return made

    copied, created = batches("a"), batches("b")
    engine._insert_batches(copied)
    Batch.objects.bulk_create(created)
    assert timezone.is_aware(copied[0].started_at)

    fields = [f.attname for f in Batch._meta.concrete_fields if f.name not in ("id", "unit_hash")]
    stored = {
        b["unit_hash"]: {f: b[f] for f in fields}
        for b in Batch.objects.filter(session=session).values()
    }
    for a, b in zip(copied, created, strict=True):
        by_copy, by_orm = stored[a.unit_hash], stored[b.unit_hash]
        timeline = ("started_at", "completed_at", "last_update")
        assert {f: v for f, v in by_copy.items() if f not in timeline} == {
            f: v for f, v in by_orm.items() if f not in timeline
        }
        assert {f: by_copy[f] for f in timeline} == {f: getattr(a, f) for f in timeline}
        assert by_copy["unit"] == a.unit and by_copy["checkpoint"] == a.checkpoint
