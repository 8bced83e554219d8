"""Record ids handed out in blocks, and CLASSIFICATION tasks that name their files as ranges of
those ids: the range helpers, what a run makes of them, and the migration that brought them."""

import json

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from enumeration.choices import RecordType, SessionStatus, TaskKind
from enumeration.idranges import (
    id_ranges,
    leading_ranges,
    ranges_count,
    ranges_grouped,
    ranges_ids,
)
from enumeration.models import SessionState, Task, TaskOutputRecord
from enumeration.services import engine
from enumeration.services.inprocess import session_drain
from enumeration.services.sessions import enumerate_target


# --- the range helpers -------------------------------------------------------------------------
def test_id_ranges_are_the_runs_of_consecutive_ids():
    assert list(id_ranges([])) == []
    assert list(id_ranges([7])) == [[7, 7]]
    assert list(id_ranges([1, 2, 3, 5, 6, 9])) == [[1, 3], [5, 6], [9, 9]]


def test_leading_ranges_take_the_first_ids_of_the_blocks_and_merge_adjacent_ones():
    # Blocks of 10 starting at 100, 110 (adjacent) and 500
    assert leading_ranges([100, 110, 500], 10, 25) == [[100, 119], [500, 504]]
    assert leading_ranges([100, 110, 500], 10, 3) == [[100, 102]]
    assert leading_ranges([100], 10, 0) == []
    with pytest.raises(ValueError, match="more than the blocks hold"):
        leading_ranges([100], 10, 11)


def test_ranges_grouped_split_a_range_that_does_not_fit():
    groups = list(ranges_grouped([[1, 5], [10, 14], [20, 20]], 4))
    assert groups == [[[1, 4]], [[5, 5], [10, 12]], [[13, 14], [20, 20]]]
    assert [ranges_count(g) for g in groups] == [4, 4, 3]
    assert list(ranges_ids([[1, 3], [7, 8]])) == [1, 2, 3, 7, 8]
    assert list(ranges_grouped([], 4)) == []
    with pytest.raises(ValueError):
        list(ranges_grouped([[1, 2]], 0))


def test_task_units_count_directories_or_ranged_records():
    assert Task(payload={"paths_to_scan": ["a", "b"]}).units == 2
    assert Task(payload={"record_id_ranges": [[1, 10], [20, 20]]}).units == 11
    assert Task(payload={}).units == 0


# --- what a run makes of them ------------------------------------------------------------------
def _drained(root) -> SessionState:
    session = session_drain(session_id=enumerate_target(path=str(root)).pk, idle_sleep=0.05)
    assert session.status == SessionStatus.COMPLETED
    return session


def _classified(session) -> tuple[list[Task], list[int]]:
    tasks = list(Task.objects.filter(session=session, kind=TaskKind.CLASSIFICATION))
    return tasks, [i for t in tasks for i in ranges_ids(t.record_id_ranges)]


def _file_ids(session) -> set[int]:
    return set(
        TaskOutputRecord.objects.filter(session=session, record_type=RecordType.FILE).values_list(
            "pk", flat=True
        )
    )


@pytest.mark.django_db(transaction=True)
def test_the_record_id_sequence_counts_in_blocks():
    engine._record_id_sequence.cache_clear()
    name, increment = engine._record_id_sequence()
    assert name.endswith("task_output_records_id_seq")
    assert increment == 1024
    # Two reservations, as two workers' commits would make them, never share an id
    first, block = engine._record_id_blocks(1500)
    second, _ = engine._record_id_blocks(10)
    assert len(first) == 2 and len(second) == 1
    ids = [i for start in first + second for i in range(start, start + block)]
    assert len(ids) == len(set(ids)) == 3 * 1024


@pytest.mark.django_db(transaction=True)
def test_a_changed_increment_is_read_again_before_ids_are_handed_out():
    # Given a process that read the block size, and then a migration that changed it
    engine._record_id_sequence.cache_clear()
    assert engine._record_id_sequence()[1] == 1024
    _set_increment(1)
    try:
        # When it reserves ids, then it uses the new size, not the one it remembered
        starts, block = engine._record_id_blocks(3)
        assert block == 1 and len(starts) == 3 and len(set(starts)) == 3
        assert engine._record_id_sequence()[1] == 1
    finally:
        _set_increment(1024)
        engine._record_id_sequence.cache_clear()


@pytest.mark.django_db(transaction=True)
def test_small_directories_name_their_files_in_a_few_ranges(tmp_path, settings):
    # Given 40 small directories of 5 files, 2 subdirectories and a symlink each (each fits in
    # one listing batch: committed from memory, with its next stage in the commit)
    settings.CENSUS = {**settings.CENSUS, "CLASSIFICATION_GROUP_SIZE": 50}
    for d in range(40):
        for s in range(2):
            (tmp_path / f"d{d:02d}" / f"s{s}").mkdir(parents=True)
        for f in range(5):
            (tmp_path / f"d{d:02d}" / f"f{f}").write_bytes(b"x")
        (tmp_path / f"d{d:02d}" / "link").symlink_to("f0")
    # When it is enumerated
    session = _drained(tmp_path)
    # Then every file is in exactly one CLASSIFICATION task, by the id it was stored under
    tasks, classified = _classified(session)
    files = _file_ids(session)
    assert len(files) == 200
    assert len(classified) == len(set(classified)) and set(classified) == files
    assert sorted(t.units for t in tasks) == [50, 50, 50, 50]
    # And the files of a commit took its lowest ids, so the directories between them do not
    # break the ranges: far fewer ranges than files (one file in three is between directories)
    assert sum(len(t.record_id_ranges) for t in tasks) <= 8


@pytest.mark.django_db(transaction=True)
def test_a_staged_directory_names_its_files_in_one_range(tmp_path, settings):
    # Given one directory larger than a listing batch (staged, then moved at its commit), its
    # files and subdirectories mixed in the listing's order
    settings.CENSUS = {
        **settings.CENSUS,
        "LISTING_BATCH_SIZE": 50,
        "CLASSIFICATION_GROUP_SIZE": 400,
    }
    for i in range(300):
        (tmp_path / f"n{i:03d}").write_bytes(b"x")
        if i % 10 == 0:
            (tmp_path / f"n{i:03d}-dir").mkdir()
    # When it is enumerated
    session = _drained(tmp_path)
    # Then its 300 files are one task naming one range, exactly the FILE records' ids
    tasks, classified = _classified(session)
    assert [t.record_id_ranges for t in tasks] == [[[min(classified), max(classified)]]]
    assert set(classified) == _file_ids(session) and len(classified) == 300


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_record_id_lists_into_ranges_and_back(tmp_path):
    # Given a CLASSIFICATION task as this version makes it
    session = _drained(tmp_path)
    task = Task.objects.create(
        session=session,
        kind=TaskKind.CLASSIFICATION,
        payload={"record_id_ranges": [[3, 5], [9, 9]]},
    )
    executor = MigrationExecutor(connection)
    try:
        # When the migration is reversed: the ids are listed, and the sequence counts by one
        executor.migrate([("enumeration", "0008_digests_as_uuid_batch_ids_time_ordered")])
        with connection.cursor() as cursor:
            cursor.execute("SELECT payload::text FROM enumeration_task WHERE id = %s", [task.pk])
            assert json.loads(cursor.fetchone()[0]) == {"record_ids": [3, 4, 5, 9]}
        assert _increment() == 1
    finally:
        # And applied again, they are ranges, and the sequence counts in blocks
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes("enumeration"))
        engine._record_id_sequence.cache_clear()
    assert Task.objects.get(pk=task.pk).payload == {"record_id_ranges": [[3, 5], [9, 9]]}
    assert _increment() == 1024


def _increment() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seqincrement FROM pg_sequence "
            "WHERE seqrelid = pg_get_serial_sequence('task_output_records', 'id')::regclass"
        )
        return cursor.fetchone()[0]


def _set_increment(increment: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE task_output_records ALTER COLUMN id SET INCREMENT BY {int(increment)}"
        )
