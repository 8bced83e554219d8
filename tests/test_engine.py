"""The enumeration engine in this process, on PostgreSQL: the worker loop, resume, lease,
Pipeliner, Reaper and session outcomes. Worker-process behaviour is in test_workers.py."""

import os
import shutil
import time
import tracemalloc
from datetime import timedelta

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from enumeration.choices import BatchStatus, RecordType, SessionStatus, TaskKind, TaskStatus
from enumeration.connectors.compiled import BUILT as compiled_listing_built
from enumeration.connectors.keys import decode_key, encode_key, key_hash
from enumeration.idranges import ranges_ids
from enumeration.models import (
    Batch,
    DomainEvent,
    SessionState,
    StagedOutputRecord,
    Task,
    TaskOutputRecord,
)
from enumeration.services import engine
from enumeration.services.dispatch import RUNNABLE_KINDS, waiting_messages
from enumeration.services.engine import LeaseLost, task_claim, task_run
from enumeration.services.inprocess import session_drain
from enumeration.services.pipeliner import pipeline_advance
from enumeration.services.sessions import (
    SessionConflict,
    TargetInvalid,
    enumerate_target,
    resume_target,
    sessions_detect_stalled,
    task_requeue,
    tasks_reap,
)
from enumeration.tasks import run_enumeration_task
from tests.fixtures.trees import assert_matches_ground_truth

pytestmark = pytest.mark.django_db(transaction=True)


def drain(session) -> SessionState:
    return session_drain(session_id=session.pk, idle_sleep=0.05)


def test_enumeration_matches_ground_truth_with_awkward_names(make_tree):
    # Given a tree with unicode, spaces, a non-UTF-8 name, empty dirs and a symlink loop
    tree = make_tree(directories=120, files=900)
    # When it is enumerated to the end
    session = drain(enumerate_target(path=tree.root))
    # Then the records are exactly what os.walk sees, and the session says so
    assert session.status == SessionStatus.COMPLETED
    assert_matches_ground_truth(session.pk, tree)
    assert session.files_found == tree.files
    assert session.total_batches == tree.directories + 1  # every directory and the root
    assert session.items_processed == session.files_found + session.directories_found


def test_directory_names_with_copy_escapes_are_kept_exactly(tmp_path):
    # Given directories whose names hold what COPY's text format escapes (the Batch rows are
    # written with it), one of them the text format's NULL
    names = ["tab\there", "new\nline", "back\\slash", "cr\rx", "\\N", "ü\\t"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    # When it is enumerated
    session = drain(enumerate_target(path=tmp_path))
    # Then each directory's completion marker names it exactly, and its records are there
    assert session.status == SessionStatus.COMPLETED
    units = {b.unit: b for b in Batch.objects.filter(session=session)}
    assert set(units) == {str(tmp_path), *(str(tmp_path / n) for n in names)}
    for name in names:
        assert units[str(tmp_path / name)].checkpoint == {"unit": str(tmp_path / name)}
        assert units[str(tmp_path / name)].items_processed == 1
    assert TaskOutputRecord.objects.filter(session=session).count() == 2 * len(names)


def test_symlinks_are_recorded_not_followed(make_tree):
    tree = make_tree(directories=20, files=50)
    session = drain(enumerate_target(path=tree.root))
    links = TaskOutputRecord.objects.filter(session=session, record_type=RecordType.SYMLINK)
    assert {r.object_key for r in links} == {encode_key(p) for p in tree.symlinks}
    loop = links.get(object_key=encode_key(tree.symlinks[0]))
    assert loop.metadata["target"] == encode_key(tree.root)


def test_non_utf8_names_are_kept_losslessly(make_tree):
    tree = make_tree(directories=10, files=10)
    session = drain(enumerate_target(path=tree.root))
    record = TaskOutputRecord.objects.get(session=session, object_key__startswith="base64:")
    from enumeration.connectors.keys import decode_key

    assert decode_key(record.object_key).endswith(b"not-utf8-\xff\xfe.bin")
    assert os.path.exists(decode_key(record.object_key))


def test_empty_directory_gets_a_completion_marker(tmp_path):
    (tmp_path / "empty").mkdir()
    session = drain(enumerate_target(path=tmp_path / "empty"))
    assert session.status == SessionStatus.COMPLETED
    batch = Batch.objects.get(session=session)
    assert batch.status == BatchStatus.SUCCEEDED
    assert batch.items_processed == 0


def test_a_modification_time_no_record_can_hold_is_kept_in_metadata_and_loses_nothing(
    tmpfs_path, settings
):
    # Given three sibling directories, each with a file whose time is past the year 9999 or
    # before the year 1; the middle one big enough to be staged batch by batch
    settings.CENSUS = {**settings.CENSUS, "LISTING_BATCH_SIZE": 2}
    far_future, far_past = 253_402_300_810 * 10**9, -70_000_000_000 * 10**9
    for name, count in (("d1", 1), ("d2", 5), ("d3", 1)):
        (tmpfs_path / name).mkdir()
        for i in range(count):
            (tmpfs_path / name / f"ok{i}").write_text("x")
        for label, ns in (("future", far_future), ("past", far_past)):
            (tmpfs_path / name / label).write_text("yy")
            os.utime(tmpfs_path / name / label, ns=(ns, ns))
    # When it is enumerated
    session = drain(enumerate_target(path=tmpfs_path))
    # Then every unit committed and every file is there, the odd ones without a time
    assert session.status == SessionStatus.COMPLETED, session.failure_reason
    assert not Batch.objects.filter(session=session, status=BatchStatus.FAILED).exists()
    files = TaskOutputRecord.objects.filter(session=session, record_type=RecordType.FILE)
    assert files.count() == 7 + 6
    odd = files.filter(name__in=["future", "past"])
    assert odd.count() == 6
    # And each carries the time as the source gave it, said to be out of range
    for record in odd:
        assert record.modified_at is None
        assert record.size == 2
        assert record.metadata == {
            "error": "modification time out of range",
            "mtime_ns": far_future if record.name == "future" else far_past,
        }
    assert all(r.modified_at is not None for r in files.exclude(name__in=["future", "past"]))


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is not a directory"),
        (lambda p: "", "path is required"),
        (lambda p: "/tmp/a\x00b", "NUL"),
    ],
)
def test_bad_paths_are_refused_before_a_session_exists(tmp_path, make_path, message):
    with pytest.raises(TargetInvalid, match=message):
        enumerate_target(path=make_path(tmp_path))
    assert not SessionState.objects.exists()
    assert not Task.objects.exists()


def test_second_session_for_a_busy_target_is_refused(tmp_path):
    enumerate_target(path=tmp_path)
    with pytest.raises(SessionConflict, match="already enumerating"):
        enumerate_target(path=tmp_path)


def test_task_created_events_are_written_with_the_tasks(make_tree):
    tree = make_tree(directories=30, files=100)
    session = drain(enumerate_target(path=tree.root))
    task_ids = {str(pk) for pk in Task.objects.filter(session=session).values_list("pk", flat=True)}
    events = DomainEvent.objects.filter(event_type="TaskCreated")
    assert {e.aggregate_id for e in events} == task_ids
    assert not events.filter(dispatched_at__isnull=True).exists()
    assert DomainEvent.objects.filter(event_type="SessionFinished").count() == 1


def test_pipeliner_groups_subdirectories_and_files(tmp_path, settings):
    # Given a root with 120 subdirectories and 2,500 files, groups of 50 dirs and 1,000 files
    settings.CENSUS = {**settings.CENSUS, "PIPELINE_GROUP_SIZE": 50}
    for i in range(120):
        (tmp_path / f"sub{i:03d}").mkdir()
    for i in range(2500):
        (tmp_path / f"f{i}").touch()
    session = enumerate_target(path=tmp_path)
    root_task = Task.objects.get(session=session)
    # When the root is listed and committed (the Pipeliner runs right after the commit)
    task_run(task_id=root_task.pk)
    # Then the next stage holds 3 enumeration tasks (50+50+20) and 3 classification tasks
    enum_tasks = Task.objects.filter(session=session, kind=TaskKind.DISCOVERY_ENUMERATE).exclude(
        pk=root_task.pk
    )
    assert sorted(len(t.paths_to_scan) for t in enum_tasks) == [20, 50, 50]
    classify = Task.objects.filter(session=session, kind=TaskKind.CLASSIFICATION)
    assert sorted(t.units for t in classify) == [500, 1000, 1000]
    assert all(t.status == TaskStatus.PENDING for t in classify)
    assert Batch.objects.get(task=root_task).pipelined
    # And running the Pipeliner again makes nothing more
    assert pipeline_advance(session_id=session.pk) == 0


def test_small_directories_carry_their_next_stage_in_their_commit(make_tree, settings):
    # Given a tree of small directories (each fits in one listing batch, so none is staged)
    settings.CENSUS = {**settings.CENSUS, "CLASSIFICATION_GROUP_SIZE": 40}
    tree = make_tree(directories=60, files=600)
    session = enumerate_target(path=tree.root)
    root_task = Task.objects.get(session=session)
    # When the root alone is run, then its commit made the next stage and left the Pipeliner
    # nothing: the Batch is pipelined, and the tasks cover its subdirectories and files
    task_run(task_id=root_task.pk)
    root = Batch.objects.get(task=root_task)
    assert root.pipelined
    assert pipeline_advance(session_id=session.pk) == 0
    # And when the session is drained
    session = drain(session)
    assert session.status == SessionStatus.COMPLETED
    assert_matches_ground_truth(session.pk, tree)
    # Then every FILE record is in exactly one CLASSIFICATION task, by the id it was stored under
    files = set(
        TaskOutputRecord.objects.filter(session=session, record_type=RecordType.FILE).values_list(
            "pk", flat=True
        )
    )
    classified = [
        record_id
        for t in Task.objects.filter(session=session, kind=TaskKind.CLASSIFICATION)
        for record_id in ranges_ids(t.record_id_ranges)
    ]
    assert len(classified) == len(set(classified)) and set(classified) == files
    # And every subdirectory in exactly one enumeration task
    directories = set(
        TaskOutputRecord.objects.filter(
            session=session, record_type=RecordType.DIRECTORY
        ).values_list("object_key", flat=True)
    )
    scanned = [
        path
        for t in Task.objects.filter(session=session, kind=TaskKind.DISCOVERY_ENUMERATE).exclude(
            pk=root_task.pk
        )
        for path in t.paths_to_scan
    ]
    assert len(scanned) == len(set(scanned)) and set(scanned) == directories
    assert not Batch.objects.filter(session=session, pipelined=False).exists()
    assert session.items_processed == session.files_found + session.directories_found


def test_a_failed_commit_leaves_neither_records_nor_next_stage(make_tree, monkeypatch):
    # Given a tree whose root commit fails after the next stage was made in it
    tree = make_tree(directories=10, files=100)
    session = enumerate_target(path=tree.root)
    root_task = Task.objects.get(session=session)

    def refuse(self, **counters):
        raise RuntimeError("database went away")

    monkeypatch.setattr(SessionState, "process_completed_batches", refuse)
    # When the root is run, then nothing of its unit is left: no records, no tasks, no Batch
    task_run(task_id=root_task.pk)
    assert not TaskOutputRecord.objects.filter(session=session).exists()
    assert set(Task.objects.filter(session=session)) == {root_task}
    assert not Batch.objects.filter(session=session).exists()
    # And once the database is back, a retry lists the root again and the session completes
    monkeypatch.undo()
    root_task.refresh_from_db()
    assert root_task.status == TaskStatus.PENDING
    session = drain(session)
    assert session.status == SessionStatus.COMPLETED
    assert_matches_ground_truth(session.pk, tree)


def test_deferred_events_go_out_once_when_the_block_ends_and_only_if_committed():
    from enumeration.services.events import events_deferred, events_record

    def event(name: str) -> DomainEvent:
        return DomainEvent(
            event_type="TaskCreated", aggregate_type="task", aggregate_id=name, payload={}
        )

    # Given a block in which one transaction commits an event and another rolls its back
    with events_deferred():
        with transaction.atomic():
            events_record([event("kept")])
        with pytest.raises(RuntimeError), transaction.atomic():
            events_record([event("rolled back")])
            raise RuntimeError
        # Then inside the block the committed event waits
        kept = DomainEvent.objects.get(aggregate_id="kept")
        assert kept.dispatched_at is None
    # And when the block ends it is dispatched, once, and the rolled-back one never existed
    kept.refresh_from_db()
    assert kept.dispatched_at is not None and kept.attempts == 1
    assert not DomainEvent.objects.filter(aggregate_id="rolled back").exists()
    # And outside a block, an event goes out right after its commit
    with transaction.atomic():
        events_record([event("at once")])
    assert DomainEvent.objects.get(aggregate_id="at once").dispatched_at is not None


def test_a_transaction_of_more_events_than_a_dispatch_chunk_has_them_all_dispatched():
    from enumeration.services.events import DISPATCH_CHUNK, events_deferred, events_record

    def events(prefix: str, count: int) -> list[DomainEvent]:
        return [
            DomainEvent(
                event_type="TaskCreated", aggregate_type="task", aggregate_id=f"{prefix}{i}"
            )
            for i in range(count)
        ]

    # Given one transaction that records more events than one dispatch takes, and a deferred
    # block that does the same
    with transaction.atomic():
        events_record(events("at once ", DISPATCH_CHUNK + 100))
    with events_deferred(), transaction.atomic():
        events_record(events("deferred ", DISPATCH_CHUNK + 100))
    # Then every one of them went out after its commit, none left for the sweep
    assert DomainEvent.objects.count() == 2 * (DISPATCH_CHUNK + 100)
    assert not DomainEvent.objects.filter(dispatched_at__isnull=True).exists()


def test_a_second_copy_of_a_committed_record_is_refused_by_constraint(make_tree):
    from django.db import IntegrityError

    # Given a committed session
    tree = make_tree(directories=5, files=20)
    session = drain(enumerate_target(path=tree.root))
    record = TaskOutputRecord.objects.filter(session=session, record_type=RecordType.FILE).first()
    batch = record.batch
    # Then the same object cannot be written again under its unit's Batch
    copy = TaskOutputRecord(
        **{
            f.attname: getattr(record, f.attname)
            for f in TaskOutputRecord._meta.concrete_fields
            if f.attname != "id"
        }
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        copy.save()
    # And its unit cannot get a second Batch in the session to write it under
    second = Batch(
        session_id=session.pk, task_id=batch.task_id, unit=batch.unit, unit_hash=batch.unit_hash
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        second.save()
    assert TaskOutputRecord.objects.filter(object_key_hash=record.object_key_hash).count() == 1


def test_same_task_run_twice_yields_one_result_set(make_tree):
    tree = make_tree(directories=5, files=30)
    session = enumerate_target(path=tree.root)
    task = Task.objects.get(session=session)
    assert task_run(task_id=task.pk).status == "completed"
    assert task_run(task_id=task.pk).status == "skipped"
    assert Batch.objects.filter(session=session).count() == 1


def _interrupted_after_staging(
    directory, *, files: int, batches: int, batch_size: int
) -> tuple[SessionState, Task]:
    """A session of ``directory`` (given ``files`` files) whose one task staged ``batches``
    batches of its listing under worker "first", then lost its lease and was requeued by the
    Reaper."""
    for i in range(files):
        (directory / f"f{i:05d}").touch()
    session = enumerate_target(path=directory)
    task = Task.objects.get(session=session)
    claimed = task_claim(task_id=task.pk, worker_id="first")
    cfg = engine.engine_settings()
    unit = os.fsencode(str(directory))
    listing = engine.connector_for("directory").list_unit(unit, batch_size=batch_size)
    for _ in range(batches):
        engine._stage(claimed, "first", cfg, encode_key(unit), key_hash(unit), next(listing))
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert tasks_reap().requeued == 1
    return session, task


def test_resume_inside_a_directory_skips_what_was_staged(tmp_path, settings):
    # Given a directory of 50 files, listed in batches of 10, interrupted after 2 staged batches
    settings.CENSUS = {**settings.CENSUS, "LISTING_BATCH_SIZE": 10}
    session, task = _interrupted_after_staging(tmp_path, files=50, batches=2, batch_size=10)
    assert StagedOutputRecord.objects.filter(task=task).count() == 20
    # When another worker runs the task (the Reaper requeued it once its lease expired)
    assert task_run(task_id=task.pk, worker_id="second").status == "completed"
    # Then the unit excluded the 20 staged entries and the result is exactly the 50 files
    batch = Batch.objects.get(task=task)
    assert batch.items_resumed == 20
    assert batch.items_processed == 50
    assert TaskOutputRecord.objects.filter(session=session).count() == 50
    assert not StagedOutputRecord.objects.filter(task=task).exists()
    # And the first worker, which lost its lease, cannot write any more: neither a commit's
    # lease check nor a staged batch (whose check shares its round trip with a SET)
    cfg = engine.engine_settings()
    with pytest.raises(LeaseLost), transaction.atomic():
        engine._heartbeat(task.pk, "first", cfg.lease, committing=True)
    unit = os.fsencode(str(tmp_path))
    entries = next(engine.connector_for("directory").list_unit(unit, batch_size=10))
    with pytest.raises(LeaseLost):
        engine._stage(task, "first", cfg, encode_key(unit), key_hash(unit), entries)
    assert not StagedOutputRecord.objects.filter(task=task).exists()


def _stage_calls(monkeypatch) -> list[int]:
    """The size of each batch the engine stages, from now on."""
    staged: list[int] = []
    real_stage = engine._stage

    def stage(task, worker_id, cfg, unit_key, unit_hash, entries):
        staged.append(len(entries))
        return real_stage(task, worker_id, cfg, unit_key, unit_hash, entries)

    monkeypatch.setattr(engine, "_stage", stage)
    return staged


@pytest.mark.parametrize(
    ("files", "staged_batches"),
    [
        (45, []),  # within the bound: its five batches stay in memory, committed from there
        (75, [10] * 7),  # past it at the sixth: the five held staged, then all but the last
    ],
)
def test_a_unit_is_staged_only_past_the_memory_bound(
    tmp_path, settings, monkeypatch, files, staged_batches
):
    # Given a directory listed 10 entries at a time, and units held in memory up to 50
    settings.CENSUS = {**settings.CENSUS, "LISTING_BATCH_SIZE": 10, "UNIT_MEMORY_ENTRIES": 50}
    for i in range(files):
        (tmp_path / f"f{i:02d}").touch()
    staged = _stage_calls(monkeypatch)
    # When it is enumerated
    session = drain(enumerate_target(path=tmp_path))
    # Then it was staged as the bound says, and its records are all there, once
    assert staged == staged_batches
    assert session.status == SessionStatus.COMPLETED
    batch = Batch.objects.get(session=session)
    assert (batch.items_processed, batch.expected_items, batch.items_resumed) == (files, files, 0)
    assert TaskOutputRecord.objects.filter(session=session).count() == files
    assert not StagedOutputRecord.objects.exists()


def test_a_staged_unit_shares_its_groups_commit(tmp_path, settings, monkeypatch):
    # Given a task of three directories, the middle one staged (past a bound of 20 entries)
    settings.CENSUS = {**settings.CENSUS, "LISTING_BATCH_SIZE": 10, "UNIT_MEMORY_ENTRIES": 20}
    for name, files in (("a", 3), ("b", 45), ("c", 4)):
        (tmp_path / name).mkdir()
        for i in range(files):
            (tmp_path / name / f"f{i:02d}").touch()
    session = enumerate_target(path=tmp_path)
    assert task_run(task_id=Task.objects.get(session=session).pk).status == "completed"
    task = Task.objects.get(session=session, status=TaskStatus.PENDING)
    groups: list[list[bool]] = []
    real_commit = engine._commit_units

    def commit(task, worker_id, cfg, units):
        groups.append([u.staged for u in units])
        return real_commit(task, worker_id, cfg, units)

    monkeypatch.setattr(engine, "_commit_units", commit)
    # When the task runs
    assert task_run(task_id=task.pk).status == "completed"
    # Then the three units were committed together, the staged one's rows moved in that commit
    assert groups == [[False, True, False]]
    assert drain(session).status == SessionStatus.COMPLETED
    assert TaskOutputRecord.objects.filter(session=session).count() == 3 + 3 + 45 + 4
    assert not StagedOutputRecord.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's commit setting")
def test_staged_batches_commit_without_waiting_for_the_disk_and_their_unit_waits(
    tmp_path, settings, monkeypatch
):
    # Given a directory of 25 files listed 10 at a time, every batch past the first staged: two
    # batches staged, the last five written in the unit's commit
    settings.CENSUS = {**settings.CENSUS, "LISTING_BATCH_SIZE": 10, "UNIT_MEMORY_ENTRIES": 0}
    for i in range(25):
        (tmp_path / f"f{i:02d}").touch()
    writes = []
    real_copy_rows = engine._copy_rows

    def copy_rows(table, *args, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            writes.append((table, cursor.fetchone()[0], connection.in_atomic_block))
        return real_copy_rows(table, *args, **kwargs)

    monkeypatch.setattr(engine, "_copy_rows", copy_rows)
    # When it is enumerated
    session = drain(enumerate_target(path=tmp_path))
    # Then each staged batch's transaction did not wait for its WAL (staging is UNLOGGED and a
    # lost heartbeat only ages the lease), while the commit that moved the unit into the output
    # table did, and the setting ended with each staging transaction
    staged = StagedOutputRecord._meta.db_table
    assert writes == [(staged, "off", True), (staged, "off", True), (staged, "on", True)]
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    assert session.status == SessionStatus.COMPLETED
    assert TaskOutputRecord.objects.filter(session=session).count() == 25


@pytest.mark.parametrize("compiled_listing", [True, False], ids=["compiled", "python"])
def test_a_resumed_listing_keeps_its_lease_while_a_long_run_of_staged_entries_goes_by(
    tmp_path, settings, monkeypatch, compiled_listing
):
    # Given a directory of 3,000 files, 2,500 of them staged by an attempt that died
    settings.CENSUS = {
        **settings.CENSUS,
        "LISTING_BATCH_SIZE": 100,
        "LEASE_SECONDS": 2,
        "COMPILED_LISTING": compiled_listing,
    }
    if compiled_listing and not compiled_listing_built:
        pytest.skip("the compiled listing is not built")
    session, task = _interrupted_after_staging(tmp_path, files=3000, batches=25, batch_size=100)
    # And going past an entry takes a millisecond (a slow share), while beat's Reaper runs
    # alongside: skipping the staged entries takes longer than the lease
    real_among, taken_back = engine.StagedExclusion.among, []

    def slow_among(self, digests):
        time.sleep(0.001 * len(digests))
        taken_back.append(tasks_reap().requeued)
        return real_among(self, digests)

    monkeypatch.setattr(engine.StagedExclusion, "among", slow_among)
    # When another worker resumes the task
    outcome = task_run(task_id=task.pk, worker_id="second")
    # Then it renewed its lease while it skipped, and completed with exactly the 3,000 files
    assert outcome.status == "completed"
    assert Batch.objects.get(task=task).items_resumed == 2500
    assert TaskOutputRecord.objects.filter(session=session).count() == 3000
    assert len(taken_back) >= 25 and not any(taken_back)
    assert Task.objects.get(pk=task.pk).attempts == 2


def test_a_resumed_listing_does_not_hold_what_was_staged_in_memory(tmp_path, settings):
    # Given a directory of 20,100 files, 20,000 of them staged by an attempt that died
    settings.CENSUS = {**settings.CENSUS, "LISTING_BATCH_SIZE": 100}
    session, task = _interrupted_after_staging(tmp_path, files=20100, batches=200, batch_size=100)
    claimed = task_claim(task_id=task.pk, worker_id="second")
    cfg, unit = engine.engine_settings(), os.fsencode(str(tmp_path))
    # When another worker lists the directory again, its allocations traced
    tracemalloc.start()
    try:
        listed = engine._list_unit(claimed, "second", cfg, unit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then at its peak it held far less than the 20,000 staged digests (as a set, about 3 MB):
    # what a listing holds is bounded by its batch, not by what was staged (invariant 6)
    assert peak < 500_000, f"peak {peak:,} B"
    # And it excluded exactly what was staged: its commit gives the 20,100 files
    assert listed.batch.items_resumed == 20000 and len(listed.tail) == 100
    engine._commit_units(claimed, "second", cfg, [listed])
    assert TaskOutputRecord.objects.filter(session=session).count() == 20100
    assert sorted(
        decode_key(k) for k in TaskOutputRecord.objects.values_list("object_key", flat=True)
    ) == sorted(os.path.join(unit, os.fsencode(n)) for n in os.listdir(tmp_path))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="reads the table's physical order")
def test_a_commit_writes_its_records_in_the_order_of_their_unique_key(tmp_path):
    # Given four directories of 50 files, listed one after the other for one commit
    for d in range(4):
        (tmp_path / f"d{d}").mkdir()
        for f in range(50):
            (tmp_path / f"d{d}" / f"f{f:02d}").touch()
    session = enumerate_target(path=tmp_path)
    assert task_run(task_id=Task.objects.get(session=session).pk).status == "completed"
    task = Task.objects.get(
        session=session, status=TaskStatus.PENDING, kind=TaskKind.DISCOVERY_ENUMERATE
    )
    claimed = task_claim(task_id=task.pk, worker_id="w")
    cfg = engine.engine_settings()
    units = [
        engine._list_unit(claimed, "w", cfg, decode_key(path), maybe_staged=False)
        for path in task.paths_to_scan
    ]
    as_listed = [list(u.tail) for u in units]
    ids_at_listing = {u.batch.pk for u in units}
    # When they are committed together
    engine._commit_units(claimed, "w", cfg, units)
    # Then their Batches have new ids, ascending in the units' order
    batch_ids = [u.batch.pk for u in units]
    assert batch_ids == sorted(batch_ids) and not ids_at_listing & set(batch_ids)
    assert Batch.objects.filter(pk__in=batch_ids).count() == 4
    # And the records went into the table in the order of its key (batch, digest): a commit
    # adds to the key's right edge instead of splitting its pages between older keys
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT batch_id, object_key_hash FROM task_output_records "
            "WHERE batch_id = ANY(%s) ORDER BY ctid",
            [batch_ids],
        )
        written = cursor.fetchall()
    assert len(written) == 200 and written == sorted(written)
    # And only what was written was sorted: each unit keeps its entries in the order listed,
    # so that they are freed in the order they were made
    assert [u.tail for u in units] == as_listed


def test_a_long_commit_renews_the_lease_from_its_end(tmp_path, settings, monkeypatch):
    # Given a claimed task whose unit's commit takes most of a 2-second lease
    settings.CENSUS = {**settings.CENSUS, "LEASE_SECONDS": 2}
    (tmp_path / "f").touch()
    task = Task.objects.get(session=enumerate_target(path=tmp_path))
    claimed = task_claim(task_id=task.pk, worker_id="w")
    real_insert = engine._insert_batches
    monkeypatch.setattr(engine, "_insert_batches", lambda b: (time.sleep(1.5), real_insert(b)))
    # When the unit is committed
    engine._process_unit(claimed, "w", engine.engine_settings(), os.fsencode(str(tmp_path)))
    committed_at = timezone.now()
    # Then the lease runs a whole lease from the commit's end, not from its start
    lease_left = Task.objects.get(pk=task.pk).lease_expires_at - committed_at
    assert lease_left > timedelta(seconds=1.8)


def test_a_directory_removed_after_its_parent_was_listed_is_committed_empty_not_failed(
    tmp_path,
):
    # Given a tree whose root has been listed and committed: its subdirectory is a task now
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "f").touch()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "g").touch()
    session = enumerate_target(path=tmp_path)
    assert task_run(task_id=Task.objects.get(session=session).pk).status == "completed"
    # When one subdirectory is removed before its turn, and the session runs on
    shutil.rmtree(tmp_path / "gone")
    session = drain(session)
    # Then the session completes: the gone directory's unit is committed empty, saying why
    # (the target itself gone is a failure: test_api's resume of a FAILED session)
    assert session.status == SessionStatus.COMPLETED, session.failure_reason
    gone = Batch.objects.get(session=session, unit=str(tmp_path / "gone"))
    assert gone.status == BatchStatus.SUCCEEDED
    assert gone.items_processed == 0
    assert "gone before it was listed" in gone.error_details
    names = set(TaskOutputRecord.objects.filter(session=session).values_list("name", flat=True))
    assert names == {"gone", "kept", "g"}


def _six_units_each_run_ended_after_one(
    tmp_path, settings, monkeypatch, ending: type[BaseException]
) -> tuple[SessionState, Task, list[int]]:
    """A pending task of six directories, each committed on its own (more than the attempt
    limit), every run of which ``ending`` stops once it has committed one of them. Clear the
    returned list before each run."""
    settings.CENSUS = {**settings.CENSUS, "GROUP_COMMIT_ENTRIES": 1}
    for i in range(6):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "f").touch()
    session = enumerate_target(path=tmp_path)
    assert task_run(task_id=Task.objects.get(session=session).pk).status == "completed"
    task = Task.objects.get(session=session, kind=TaskKind.DISCOVERY_ENUMERATE, status="PENDING")
    assert len(task.paths_to_scan) == 6 > task.max_attempts
    real_list_unit, listed = engine._list_unit, []

    def ended_after_one(*args, **kwargs):
        listed.append(1)
        if len(listed) > 1:
            raise ending()
        return real_list_unit(*args, **kwargs)

    monkeypatch.setattr(engine, "_list_unit", ended_after_one)
    return session, task, listed


class _WorkerKilled(BaseException):
    """Ends a run the way SIGKILL does for the engine: nothing catches it, the lease stays."""


def test_runs_cut_short_after_committing_a_unit_do_not_use_up_the_attempts(
    tmp_path, settings, monkeypatch
):
    # Given a task of six directories, each committed on its own, whose every run is cut short
    # by its time limit once it has committed one of them (more runs than the attempt limit)
    session, task, listed = _six_units_each_run_ended_after_one(
        tmp_path, settings, monkeypatch, SoftTimeLimitExceeded
    )
    # When it is run again each time it is cut short
    outcomes = []
    for _ in range(10):
        listed.clear()
        outcomes.append(task_run(task_id=task.pk).status)
        if outcomes[-1] != "retry":
            break
    # Then it completes: every run committed a unit, so none counted against the limit, and
    # the reason each time says so
    assert outcomes == ["retry"] * 5 + ["completed"]
    assert Task.objects.get(pk=task.pk).last_error.endswith("(it had committed units: not counted)")
    assert Batch.objects.filter(task=task, status=BatchStatus.SUCCEEDED).count() == 6
    assert drain(session).status == SessionStatus.COMPLETED


def test_workers_that_die_after_committing_a_unit_do_not_use_up_the_attempts(
    tmp_path, settings, monkeypatch
):
    # Given a task of six directories, each committed on its own, whose worker dies in every
    # run once it has committed one of them (more deaths than the attempt limit)
    session, task, listed = _six_units_each_run_ended_after_one(
        tmp_path, settings, monkeypatch, _WorkerKilled
    )
    # When the Reaper takes it back after each death, and it runs again
    reasons = []
    for _ in range(10):
        listed.clear()
        try:
            outcome = task_run(task_id=task.pk, worker_id="doomed").status
        except _WorkerKilled:
            Task.objects.filter(pk=task.pk).update(
                lease_expires_at=timezone.now() - timedelta(seconds=1)
            )
            assert tasks_reap().requeued == 1
            reasons.append(Task.objects.get(pk=task.pk).last_error)
            continue
        break
    # Then it completes: every dead run had committed a unit, so none counted, and the reason
    # given says so
    assert outcome == "completed"
    assert len(reasons) == 5
    assert all(r.endswith("(it had committed units: not counted)") for r in reasons), reasons
    assert Task.objects.get(pk=task.pk).attempts == 1
    assert Batch.objects.filter(task=task, status=BatchStatus.SUCCEEDED).count() == 6
    assert drain(session).status == SessionStatus.COMPLETED


def test_runs_that_only_stage_part_of_a_growing_directory_still_use_up_the_attempts(
    tmp_path, settings, monkeypatch
):
    # Given one big directory, listed 10 entries at a time and staged past its first batch, that
    # gains 30 files between runs, and every run cut short after staging 2 batches of it
    # (something new to stage each time)
    settings.CENSUS = {**settings.CENSUS, "LISTING_BATCH_SIZE": 10, "UNIT_MEMORY_ENTRIES": 0}
    for i in range(100):
        (tmp_path / f"f{i:04d}").touch()
    task = Task.objects.get(session=enumerate_target(path=tmp_path))
    real_stage, staged = engine._stage, []

    def cut_short(*args, **kwargs):
        real_stage(*args, **kwargs)
        staged.append(1)
        if len(staged) == 2:
            raise SoftTimeLimitExceeded()

    monkeypatch.setattr(engine, "_stage", cut_short)
    outcomes = []
    for run in range(10):
        staged.clear()
        outcomes.append(task_run(task_id=task.pk).status)
        if outcomes[-1] != "retry":
            break
        for i in range(30):
            (tmp_path / f"g{run:02d}{i:02d}").touch()
    # Then staging is not progress that spares an attempt: the task fails at its limit
    assert outcomes == ["retry"] * (task.max_attempts - 1) + ["failed"]


def test_a_death_after_committing_does_not_excuse_the_next_attempt(tmp_path, settings):
    # Given a task whose first run committed a unit and died, taken back by the Reaper
    settings.CENSUS = {**settings.CENSUS, "GROUP_COMMIT_ENTRIES": 1}
    (tmp_path / "a").mkdir()
    session = enumerate_target(path=tmp_path)
    task = Task.objects.get(session=session)
    claimed = task_claim(task_id=task.pk, worker_id="w1")
    engine._commit_units(
        claimed,
        "w1",
        engine.engine_settings(),
        [
            engine._list_unit(
                claimed, "w1", engine.engine_settings(), decode_key(task.paths_to_scan[0])
            )
        ],
    )
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    tasks_reap()
    assert Task.objects.get(pk=task.pk).attempts == 0
    # When every later attempt dies before committing anything
    for attempt in range(1, task.max_attempts + 1):
        assert task_claim(task_id=task.pk, worker_id=f"w{attempt + 1}") is not None
        Task.objects.filter(pk=task.pk).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        tasks_reap()
    # Then those count: the task fails at its limit
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert f"on attempt {task.max_attempts} of {task.max_attempts}" in task.last_error


def test_runs_that_commit_nothing_still_fail_the_task_at_its_attempt_limit(tmp_path, monkeypatch):
    # Given a task whose every run fails before it commits anything
    (tmp_path / "f").touch()
    task = Task.objects.get(session=enumerate_target(path=tmp_path))

    def broken(*args, **kwargs):
        raise RuntimeError("broken")

    monkeypatch.setattr(engine, "_list_unit", broken)
    # When it is run until it stops coming back
    outcomes = [task_run(task_id=task.pk).status for _ in range(task.max_attempts)]
    # Then the attempt limit fails it
    assert outcomes == ["retry"] * (task.max_attempts - 1) + ["failed"]


def test_reaper_fails_a_task_past_its_attempt_limit(tmp_path):
    # Given a task whose worker died on each of its attempts
    (tmp_path / "a").mkdir()
    session = enumerate_target(path=tmp_path)
    task = Task.objects.get(session=session)
    for attempt in range(1, task.max_attempts + 1):
        assert task_claim(task_id=task.pk, worker_id=f"w{attempt}") is not None
        Task.objects.filter(pk=task.pk).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        tasks_reap()
    # Then it failed with the reason, its unit is a failed batch, and the session ended FAILED
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert f"attempt {task.max_attempts} of {task.max_attempts}" in task.last_error
    batch = Batch.objects.get(session=session)
    assert batch.status == BatchStatus.FAILED
    session.refresh_from_db()
    assert session.status == SessionStatus.FAILED
    assert "every unit failed" in session.failure_reason
    # When an operator requeues it, it runs to completion
    task_requeue(task_id=task.pk)
    session = drain(session)
    assert session.status == SessionStatus.COMPLETED
    assert TaskOutputRecord.objects.filter(session=session).count() == 1


def test_the_reapers_index_holds_the_pending_tasks_of_the_runnable_kinds_only(tmp_path):
    # Given a pending task of every kind
    session = enumerate_target(path=tmp_path)
    for kind in TaskKind.values:
        Task.objects.create(session=session, kind=kind)
    # And tasks of the runnable kinds that are not pending
    for status in (TaskStatus.RUNNING, TaskStatus.COMPLETED):
        Task.objects.create(session=session, kind=RUNNABLE_KINDS[0], status=status)
    index = next(i for i in Task._meta.indexes if i.name == "task_runnable_pending")
    # Then the Reaper's partial index (the pending tasks it may re-send) holds exactly the kinds
    # a worker runs: a kind made runnable without it would be read from the table at every pass
    held = set(Task.objects.filter(index.condition).values_list("kind", "status"))
    assert held == {(kind, TaskStatus.PENDING) for kind in RUNNABLE_KINDS}


def test_reaper_resends_tasks_left_unclaimed_in_a_session_that_is_not_moving(tmp_path):
    # Given a task unclaimed for an hour
    session = enumerate_target(path=tmp_path)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Task.objects.filter(session=session).update(enqueued_at=an_hour_ago)
    # When its session is still moving, its message is trusted to be queued behind others
    assert tasks_reap().resent == 0
    # When its session has not moved for as long, it is sent again, once
    SessionState.objects.filter(pk=session.pk).update(last_update=an_hour_ago)
    assert tasks_reap().resent == 1
    assert Task.objects.get(session=session).enqueued_at > timezone.now() - timedelta(minutes=1)
    assert tasks_reap().resent == 0


def test_worker_start_up_resends_only_what_waited_too_long(tmp_path):
    from enumeration.services.sessions import sessions_resume_active

    session = enumerate_target(path=tmp_path)
    assert sessions_resume_active() == 1
    assert Task.objects.get(session=session).enqueued_at > timezone.now() - timedelta(minutes=1)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Task.objects.filter(session=session).update(enqueued_at=an_hour_ago)
    SessionState.objects.filter(pk=session.pk).update(last_update=an_hour_ago)
    sessions_resume_active()
    assert Task.objects.get(session=session).enqueued_at > timezone.now() - timedelta(minutes=1)


def _unclaimed_for(session: SessionState, seconds: float) -> None:
    Task.objects.filter(session=session).update(
        enqueued_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_reaper_resends_after_a_lease_a_task_whose_message_no_queue_holds(tmp_path, broker_url):
    # Given a task unclaimed for longer than a lease, not yet RESEND_AFTER, its message queued
    session = enumerate_target(path=tmp_path)
    cfg = engine.engine_settings()
    assert cfg.lease < cfg.resend_after
    assert waiting_messages() == 1
    _unclaimed_for(session, cfg.lease.total_seconds() + 5)
    # While its message waits in the queue, it is trusted to be delivered
    assert tasks_reap().resent == 0
    # When the queue has lost it (as to a worker killed between receiving and claiming)
    redis.Redis.from_url(broker_url).flushdb()
    assert waiting_messages() == 0
    # Then the Reaper sends it again at once, and once
    assert tasks_reap().resent == 1
    assert waiting_messages() == 1
    assert tasks_reap().resent == 0
    # And a task unclaimed for less than a lease is left alone even with nothing queued
    redis.Redis.from_url(broker_url).flushdb()
    _unclaimed_for(session, cfg.lease.total_seconds() - 5)
    assert tasks_reap().resent == 0


def test_reaper_with_the_broker_down_keeps_to_resend_after_and_still_requeues(tmp_path):
    # Given a task unclaimed for longer than a lease, and another whose lease expired
    (tmp_path / "a").mkdir()
    waiting = enumerate_target(path=tmp_path)
    cfg = engine.engine_settings()
    _unclaimed_for(waiting, cfg.lease.total_seconds() + 5)
    running = enumerate_target(path=tmp_path / "a")
    running_task = Task.objects.get(session=running)
    assert task_claim(task_id=running_task.pk, worker_id="gone") is not None
    Task.objects.filter(pk=running_task.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    # When the broker cannot be reached (nothing listens on port 1 of loopback)
    app = run_enumeration_task.app
    urls = app.conf.broker_read_url, app.conf.broker_write_url
    app.conf.broker_read_url = app.conf.broker_write_url = "redis://127.0.0.1:1/0"
    app._after_fork()
    try:
        assert waiting_messages() is None
        result = tasks_reap()
    finally:
        app.conf.broker_read_url, app.conf.broker_write_url = urls
        app._after_fork()
    # Then nothing is re-sent on a guess, and the expired lease is still returned to the queue
    assert result.resent == 0
    assert result.requeued == 1
    assert Task.objects.get(pk=running_task.pk).status == TaskStatus.PENDING


def test_a_failed_unit_makes_the_session_partially_completed_and_resume_retries_it(tmp_path):
    # Given a tree whose one directory cannot be listed when its turn comes: found as a
    # directory, then replaced by a symlink to itself (the test runs as root, who may read any
    # directory; a loop fails for everyone)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "x").touch()
    (tmp_path / "bad").mkdir()
    session = enumerate_target(path=tmp_path)
    task_run(task_id=Task.objects.get(session=session).pk)
    (tmp_path / "bad").rmdir()
    (tmp_path / "bad").symlink_to("bad")
    session = drain(session)
    # Then the session is PARTIALLY_COMPLETED with the failed unit recorded against it
    assert session.status == SessionStatus.PARTIALLY_COMPLETED
    failed = Batch.objects.get(session=session, status=BatchStatus.FAILED)
    assert "Too many levels of symbolic links" in failed.error_details
    assert failed.unit == str(tmp_path / "bad")
    _the_failed_unit_took_5_seconds(failed)
    # When the directory is back and the session is resumed, the failed unit is retried
    (tmp_path / "bad").unlink()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "y").touch()
    resume_target(session_id=session.pk)
    session = drain(session)
    assert session.status == SessionStatus.COMPLETED
    assert session.failed_batches == 0
    assert TaskOutputRecord.objects.filter(session=session, name="y").exists()
    # And the processing time is its batches' again: the failed attempt's time went with it
    assert session.processing_seconds == pytest.approx(_batches_seconds(session), abs=1e-3)


def _the_failed_unit_took_5_seconds(failed: Batch) -> None:
    """As if listing the failed unit had taken 5 s before it failed (it fails at once here)."""
    Batch.objects.filter(pk=failed.pk).update(started_at=failed.completed_at - timedelta(seconds=5))
    SessionState.objects.filter(pk=failed.session_id).update(
        processing_seconds=F("processing_seconds") + 5
    )


def _batches_seconds(session: SessionState) -> float:
    return sum(b.elapsed_seconds for b in Batch.objects.filter(session=session))


def test_requeuing_the_failed_task_of_a_finished_session_keeps_its_counters_exact(tmp_path):
    # Given a PARTIALLY_COMPLETED session: of its three units one failed, its task FAILED
    (tmp_path / "keep").mkdir()
    (tmp_path / "bad").mkdir()
    session = enumerate_target(path=tmp_path)
    task_run(task_id=Task.objects.get(session=session).pk)
    (tmp_path / "bad").rmdir()
    (tmp_path / "bad").symlink_to("bad")
    session = drain(session)
    assert session.status == SessionStatus.PARTIALLY_COMPLETED
    assert (session.total_batches, session.failed_batches) == (3, 1)
    failed_batch = Batch.objects.get(session=session, status=BatchStatus.FAILED)
    _the_failed_unit_took_5_seconds(failed_batch)
    failed_task = failed_batch.task
    Task.objects.filter(pk=failed_task.pk).update(status=TaskStatus.FAILED)
    # When the directory is back and the operator requeues that task
    (tmp_path / "bad").unlink()
    (tmp_path / "bad").mkdir()
    task_requeue(task_id=failed_task.pk)
    # Then the failed unit is forgotten in the counters as well as in the batches
    session.refresh_from_db()
    assert session.status == SessionStatus.IN_PROGRESS
    assert (session.total_batches, session.failed_batches) == (2, 0)
    assert session.processing_seconds == pytest.approx(_batches_seconds(session), abs=1e-3)
    # And once it has run again, every unit is counted once
    session = drain(session)
    assert session.status == SessionStatus.COMPLETED
    assert (session.total_batches, session.failed_batches) == (3, 0)
    assert session.processing_seconds == pytest.approx(_batches_seconds(session), abs=1e-3)


def test_resume_of_a_completed_session_is_refused(tmp_path):
    session = drain(enumerate_target(path=tmp_path))
    with pytest.raises(SessionConflict, match="already COMPLETED"):
        resume_target(session_id=session.pk)


def test_quiet_session_is_marked_stalled_and_progress_revives_it(tmp_path, caplog):
    session = enumerate_target(path=tmp_path)
    SessionState.objects.filter(pk=session.pk).update(
        status=SessionStatus.IN_PROGRESS, last_update=timezone.now() - timedelta(hours=2)
    )
    stalled = sessions_detect_stalled()
    assert [s.pk for s in stalled] == [session.pk]
    assert "enumeration stalled" in caplog.text
    session = drain(session)
    assert session.status == SessionStatus.COMPLETED


def test_concurrent_claims_of_one_task_have_one_winner(tmp_path):
    # Given 30 pending tasks, and for each two claimants released at the same instant
    import threading

    from django.db import connection as main_connection

    session = enumerate_target(path=tmp_path)
    tasks = [
        Task(session=session, kind=TaskKind.DISCOVERY_ENUMERATE, payload={"paths_to_scan": []})
        for _ in range(30)
    ]
    Task.objects.bulk_create(tasks)
    main_connection.close()
    for task in tasks:
        barrier = threading.Barrier(2)
        winners: list[str] = []

        def claim(name: str, task_id=task.pk, barrier=barrier, winners=winners) -> None:
            from django.db import connection

            try:
                barrier.wait()
                if task_claim(task_id=task_id, worker_id=name) is not None:
                    winners.append(name)
            finally:
                connection.close()

        threads = [threading.Thread(target=claim, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Then exactly one of them holds it
        assert len(winners) == 1, winners
        assert Task.objects.get(pk=task.pk).lease_owner == winners[0]
        assert Task.objects.get(pk=task.pk).attempts == 1


def test_sweep_closes_a_session_whose_last_worker_died_before_closing_it(tmp_path):
    # Given a session whose only task finished, but whose worker died before closing the session
    from enumeration.services.pipeliner import pipeline_sweep

    session = enumerate_target(path=tmp_path)
    task = Task.objects.get(session=session)
    claimed = task_claim(task_id=task.pk, worker_id="w")
    engine._process_unit(claimed, "w", engine.engine_settings(), os.fsencode(str(tmp_path)))
    engine._finish_task(claimed, "w")
    assert SessionState.objects.get(pk=session.pk).status == SessionStatus.IN_PROGRESS
    # When beat's sweep runs
    pipeline_sweep()
    # Then the session is closed
    assert SessionState.objects.get(pk=session.pk).status == SessionStatus.COMPLETED


def test_classification_tasks_are_not_run_by_the_enumeration_loop(tmp_path):
    session = enumerate_target(path=tmp_path)
    task = Task.objects.create(
        session=session, kind=TaskKind.CLASSIFICATION, payload={"record_id_ranges": [[1, 1]]}
    )
    assert task_run(task_id=task.pk).status == "skipped"
    assert Task.objects.get(pk=task.pk).status == TaskStatus.PENDING
