"""Finding a session's records at scale: id bounds on each Batch, and keyset pages of records
(and of batches and tasks, which grow with the history too).

The output table is indexed on its id and (batch, key hash) only, so the API finds a session's or
a task's records along the id between the bounds its batches hold, and pages them by position
rather than by offset. These tests run on PostgreSQL, where the engine reserves the ids; the
SQLite path is checked by ``test_embedded_default``.
"""

import base64
import importlib
import json
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.db.models import Max, Min
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from config.pagination import KeysetPagination
from enumeration.choices import SessionStatus
from enumeration.models import Batch, SessionState, Task, TaskOutputRecord
from enumeration.services.engine import task_run, worker_identity
from enumeration.services.inprocess import session_drain
from enumeration.services.sessions import enumerate_target

pytestmark = pytest.mark.django_db

RECORDS = "/api/output-records/"


@pytest.fixture
def api(django_user_model) -> APIClient:
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user(username="reader"))
    return client


def _tree(root: Path, directories: int, files: int) -> Path:
    for d in range(directories):
        (root / f"d{d:02}").mkdir(parents=True)
        for f in range(files):
            # Sizes repeat (ties for ?ordering=size) and directories have none (nulls)
            (root / f"d{d:02}" / f"f{f:02}").write_bytes(b"x" * (f % 3))
    return root


def _finished(path: Path) -> SessionState:
    session = session_drain(session_id=enumerate_target(path=str(path)).pk, idle_sleep=0)
    assert session.status == SessionStatus.COMPLETED
    return session


def _every_page(api: APIClient, params: dict, url: str = RECORDS) -> list[dict]:
    """Every row of a listing, following ``next`` from the first page."""
    rows: list[dict] = []
    response = api.get(url, params)
    for _ in range(TaskOutputRecord.objects.count() + 1):  # a cursor that stands still fails
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"next", "results"}  # no count: nothing counts a million rows
        rows += body["results"]
        if body["next"] is None:
            return rows
        response = api.get(body["next"])
    raise AssertionError(f"more pages than records: {params}")


def _two_sessions_committed_in_turn(tmp_path: Path) -> tuple[SessionState, SessionState]:
    """Two sessions whose record ids interleave: each one's first directory is committed before
    the other's subdirectories, as two sessions running at once commit."""
    first = enumerate_target(path=str(_tree(tmp_path / "a", 4, 5)))
    second = enumerate_target(path=str(_tree(tmp_path / "b", 3, 4)))
    worker = worker_identity()
    for session in (first, second):
        root_task = Task.objects.get(session=session)
        task_run(task_id=root_task.pk, worker_id=worker)
    finished = [session_drain(session_id=s.pk, idle_sleep=0) for s in (first, second)]
    assert [s.status for s in finished] == [SessionStatus.COMPLETED] * 2
    return finished[0], finished[1]


# --- the bounds ---------------------------------------------------------------------------------
def test_every_record_lies_within_its_batch_bounds_whether_committed_from_memory_or_staging(
    tmp_path: Path, settings
) -> None:
    # Given listings of two entries per batch: the directories of five files are staged, the
    # empty one and the root (one entry each way) are committed from memory
    settings.CENSUS = {**settings.CENSUS, "LISTING_BATCH_SIZE": 2}
    root = _tree(tmp_path / "t", 3, 5)
    (root / "empty").mkdir()

    # When it is enumerated
    session = _finished(root)

    # Then every record's id is within its batch's bounds, and a batch without records has none
    batches = {b.pk: b for b in Batch.objects.filter(session=session)}
    assert len(batches) == 5
    for record in TaskOutputRecord.objects.filter(session=session):
        batch = batches[record.batch_id]
        assert batch.first_record_id <= record.pk <= batch.last_record_id
    empty = next(b for b in batches.values() if b.unit.endswith("/empty"))
    assert (empty.items_processed, empty.first_record_id, empty.last_record_id) == (0, None, None)
    # And the staged units' bounds are tight (their ids are reserved for exactly their records)
    for batch in batches.values():
        if batch.items_processed:
            span = batch.last_record_id - batch.first_record_id + 1
            assert span == batch.items_processed, batch.unit


def test_the_migration_bounds_the_batches_committed_before_it(tmp_path: Path) -> None:
    session = _finished(_tree(tmp_path / "t", 3, 4))
    expected = dict(
        TaskOutputRecord.objects.values("batch_id")
        .annotate(first=Min("id"), last=Max("id"))
        .values_list("batch_id", "first")
    )
    backfill = importlib.import_module(
        "enumeration.migrations.0015_batch_record_id_bounds_filled"
    ).bound_the_batches

    # Each way the migration can run: PostgreSQL's grouped UPDATE, and the portable one
    for vendor in ("postgresql", "portable"):
        Batch.objects.update(first_record_id=None, last_record_id=None)
        backfill(django_apps, SimpleNamespace(connection=_vendor(vendor)))
        found = dict(
            Batch.objects.filter(session=session, items_processed__gt=0).values_list(
                "pk", "first_record_id"
            )
        )
        assert found == expected, vendor
        assert not Batch.objects.filter(items_processed__gt=0, last_record_id=None).exists()


def _vendor(vendor: str) -> object:
    """The connection, or one that says it is not PostgreSQL (the migration's other branch)."""
    return connection if vendor == "postgresql" else SimpleNamespace(vendor=vendor)


# --- the pages ----------------------------------------------------------------------------------
def test_the_pages_of_each_session_hold_exactly_its_records_though_their_ids_interleave(
    api: APIClient, tmp_path: Path
) -> None:
    # Given two sessions whose records were committed in turn, so their id ranges overlap
    first, second = _two_sessions_committed_in_turn(tmp_path)
    ranges = [
        Batch.objects.filter(session=s).aggregate(
            lo=Min("first_record_id"), hi=Max("last_record_id")
        )
        for s in (first, second)
    ]
    assert ranges[0]["lo"] < ranges[1]["lo"] < ranges[0]["hi"]

    for session in (first, second):
        # When its records are paged through, three at a time
        rows = _every_page(api, {"session": str(session.pk), "limit": 3})

        # Then the pages hold each of its records once, in id order, and no other session's
        assert [r["id"] for r in rows] == _ids(TaskOutputRecord.objects.filter(session=session))
        assert {r["session"] for r in rows} == {str(session.pk)}


def test_a_tasks_and_a_batchs_records_are_paged_the_same_way(
    api: APIClient, tmp_path: Path
) -> None:
    first, _ = _two_sessions_committed_in_turn(tmp_path)
    task = Task.objects.filter(session=first, batches__items_processed__gt=1).first()
    batch = Batch.objects.filter(session=first, items_processed__gt=1).last()

    by_task = _every_page(api, {"task": str(task.pk), "limit": 2})
    by_batch = _every_page(api, {"batch": str(batch.pk), "limit": 2})
    both = _every_page(api, {"session": str(first.pk), "batch": str(batch.pk), "limit": 2})

    assert [r["id"] for r in by_task] == _ids(TaskOutputRecord.objects.filter(task=task))
    assert [r["id"] for r in by_batch] == _ids(TaskOutputRecord.objects.filter(batch=batch))
    assert both == by_batch


def _ids(records) -> list[int]:
    return list(records.order_by("id").values_list("id", flat=True))


@pytest.mark.parametrize("ordering", ["size", "-size", "name", "-name", "modified_at", "-id"])
def test_every_ordering_pages_through_each_record_once_with_ties_and_missing_values(
    api: APIClient, tmp_path: Path, ordering: str
) -> None:
    # Given a session whose sizes repeat (0, 1, 2 bytes) and whose directories have no size
    session = _finished(_tree(tmp_path / "t", 3, 5))
    field, descending = ordering.lstrip("-"), ordering.startswith("-")

    # When it is paged through two at a time in that order
    rows = _every_page(api, {"session": str(session.pk), "ordering": ordering, "limit": 2})

    # Then each record comes once, sorted by the field (ties by id, values missing last)
    stored = list(TaskOutputRecord.objects.filter(session=session))
    assert sorted(r["id"] for r in rows) == sorted(r.pk for r in stored)
    keys = [(r[field] is None, _comparable(field, r[field]), r["id"]) for r in rows]

    if descending:
        present = [k for k in keys if not k[0]]
        assert present == sorted(present, key=lambda k: (k[1], k[2]), reverse=True)
        assert all(k[0] for k in keys[len(present) :])
    else:
        assert keys == sorted(keys)


def _comparable(field: str, value: object) -> object:
    """A value as the database orders it: times as times (DRF leaves out a zero fraction, so
    their strings do not sort), a missing one as anything (they sort by id alone)."""
    if value is None:
        return 0
    return datetime.fromisoformat(value) if field == "modified_at" else value


def test_a_page_of_the_newest_session_reads_no_record_of_an_older_one(
    api: APIClient, tmp_path: Path
) -> None:
    # Given an older session of 600 records and a newer one of 12
    older = _finished(_tree(tmp_path / "old", 20, 29))
    newer = _finished(_tree(tmp_path / "new", 2, 5))
    assert TaskOutputRecord.objects.filter(session=older).count() == 600

    # When the first page of the newer session is read, with the plan PostgreSQL takes on a
    # table too big to sort (an index walk in id order)
    with CaptureQueriesContext(connection) as queries:
        page = api.get(RECORDS, {"session": str(newer.pk), "limit": 5}).json()
    (sql,) = [q["sql"] for q in queries if 'FROM "task_output_records"' in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        plan = cursor.fetchone()[0][0]["Plan"]

    # Then the page is the newer session's, and the walk read only its rows: its first six
    assert {r["session"] for r in page["results"]} == {str(newer.pk)}
    read = _rows_read(plan, TaskOutputRecord._meta.db_table)
    assert read <= 6, json.dumps(plan, indent=1)


def _rows_read(plan: dict, table: str) -> int:
    """Rows the plan's scans of ``table`` read: returned and removed by their filters."""
    own = 0
    if plan.get("Relation Name") == table:
        own = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)
    return own + sum(_rows_read(p, table) for p in plan.get("Plans", ()))


def test_batches_without_bounds_still_give_every_record_of_their_session(
    api: APIClient, tmp_path: Path
) -> None:
    # Given a session one of whose batches has records but no bounds, as a worker of the code
    # before them commits until migration 0015 has run (or after it, during a rolling upgrade)
    session = _finished(_tree(tmp_path / "t", 3, 4))
    legacy = Batch.objects.filter(session=session, items_processed__gt=0).last()
    Batch.objects.filter(pk=legacy.pk).update(first_record_id=None, last_record_id=None)

    # When its records, and that batch's, are paged through
    rows = _every_page(api, {"session": str(session.pk), "limit": 5})
    of_batch = _every_page(api, {"batch": str(legacy.pk), "limit": 5})

    # Then none is missing: they were found through their batches
    assert [r["id"] for r in rows] == _ids(TaskOutputRecord.objects.filter(session=session))
    assert [r["id"] for r in of_batch] == _ids(TaskOutputRecord.objects.filter(batch=legacy))


def test_a_session_with_nothing_committed_has_an_empty_page(api: APIClient, tmp_path: Path) -> None:
    # Given a session whose root task has not run yet, and one that found records
    _finished(_tree(tmp_path / "done", 1, 3))
    pending = enumerate_target(path=str(_tree(tmp_path / "pending", 1, 1)))

    response = api.get(RECORDS, {"session": str(pending.pk)})

    assert response.json() == {"next": None, "results": []}


# --- bad input ----------------------------------------------------------------------------------
def _cursor(position: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


@pytest.mark.parametrize(
    ("cursor", "ordering"),
    [
        ("not-base64!", "id"),
        (base64.urlsafe_b64encode(b"\xff\xfe").decode(), "id"),
        (_cursor({"id": 1}), "id"),
        (_cursor(["id", 1]), "id"),
        (_cursor(["id", 1, "2"]), "id"),
        (_cursor(["id", 1, True]), "id"),
        (_cursor(["modified_at", "yesterday", 2]), "modified_at"),
        (_cursor([1, 2, 3]), "id"),
        (base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode(), "id"),
    ],
    ids=[
        "not-base64",
        "not-json",
        "an-object",
        "short",
        "text-id",
        "bool-id",
        "bad-time",
        "number-term",
        "nested-deep",
    ],
)
def test_a_cursor_that_is_not_a_position_is_a_400_saying_so(
    api: APIClient, cursor: str, ordering: str
) -> None:
    response = api.get(RECORDS, {"cursor": cursor, "ordering": ordering})

    assert response.status_code == 400
    assert response.json() == {
        "cursor": ["Not a position in this list: follow the next link as given."]
    }


def test_a_cursor_followed_with_another_ordering_is_a_400_naming_its_own(
    api: APIClient, tmp_path: Path
) -> None:
    session = _finished(_tree(tmp_path / "t", 1, 3))
    by_size = api.get(RECORDS, {"session": str(session.pk), "ordering": "size", "limit": 1}).json()
    (cursor,) = parse_qs(urlsplit(by_size["next"]).query)["cursor"]

    # (by name, and by modified time, which cannot even read a size as its value)
    for ordering in ("name", "modified_at"):
        query = {"session": str(session.pk), "ordering": ordering, "cursor": cursor}
        response = api.get(RECORDS, query)

        assert response.status_code == 400
        assert "made for ?ordering=size" in response.json()["cursor"][0]


@pytest.mark.parametrize("limit", ["0", "-3", "ten", "1.5"])
def test_a_limit_that_is_not_a_positive_whole_number_is_a_400(api: APIClient, limit: str) -> None:
    response = api.get(RECORDS, {"limit": limit})

    assert response.status_code == 400
    assert response.json() == {"limit": ["A whole number of rows, at least 1."]}


def test_a_limit_above_the_ceiling_is_served_at_the_ceiling(
    api: APIClient, tmp_path: Path, monkeypatch
) -> None:
    session = _finished(_tree(tmp_path / "t", 1, 8))
    monkeypatch.setattr(KeysetPagination, "max_limit", 4)

    page = api.get(RECORDS, {"session": str(session.pk), "limit": 1000}).json()

    assert len(page["results"]) == 4
    assert page["next"] is not None


# --- batches and tasks --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "ordering"),
    [
        ("/api/batches/", None),
        ("/api/batches/", "-completed_at"),
        ("/api/batches/", "-items_processed"),
        ("/api/batches/", "unit"),
        ("/api/tasks/", None),
        ("/api/tasks/", "-completed_at"),
        ("/api/tasks/", "attempts"),
    ],
)
def test_batches_and_tasks_are_paged_by_position_each_row_once_in_order(
    api: APIClient, tmp_path: Path, url: str, ordering: str | None
) -> None:
    # Given two sessions' batches and tasks, times that tie, and some without a completion time
    _two_sessions_committed_in_turn(tmp_path)
    model = Batch if "batches" in url else Task
    rows = list(model.objects.order_by("pk"))
    tied = rows[1].completed_at
    model.objects.filter(pk__in=[r.pk for r in rows[2:5]]).update(completed_at=tied)
    model.objects.filter(pk__in=[r.pk for r in rows[5:7]]).update(completed_at=None)
    params = {"limit": 2, **({"ordering": ordering} if ordering else {})}

    # When the list is paged through two at a time
    listed = _every_page(api, params, url)

    # Then each row comes once, sorted by the field (ties by id, values missing last)
    assert sorted(r["id"] for r in listed) == sorted(str(r.pk) for r in rows)
    field = (ordering or ("completed_at" if model is Batch else "created_at")).lstrip("-")
    descending = bool(ordering) and ordering.startswith("-")
    stored = {str(r.pk): r for r in model.objects.all()}
    keys = [(getattr(stored[r["id"]], field), stored[r["id"]].pk) for r in listed]
    present = [k for k in keys if k[0] is not None]
    assert present == sorted(present, reverse=descending)
    assert all(k[0] is None for k in keys[len(present) :])
    assert [k[1] for k in keys[len(present) :]] == sorted(
        (k[1] for k in keys[len(present) :]), reverse=descending
    )


@pytest.mark.parametrize(
    ("url", "index"),
    [("/api/batches/", "batch_completed"), ("/api/tasks/", "task_created")],
)
def test_a_deep_page_of_batches_or_tasks_is_read_from_its_position_along_the_index(
    api: APIClient, tmp_path: Path, url: str, index: str, settings
) -> None:
    # Given a history of batches and tasks (two directories a task), and a position well into it
    settings.CENSUS = {**settings.CENSUS, "PIPELINE_GROUP_SIZE": 2}
    _finished(_tree(tmp_path / "t", 30, 1))
    _finished(_tree(tmp_path / "u", 30, 1))
    page = api.get(url, {"limit": 40}).json()
    (cursor,) = parse_qs(urlsplit(page["next"]).query)["cursor"]

    # When the next page of three is read, with the plan PostgreSQL takes on a table too big
    # to sort
    with CaptureQueriesContext(connection) as queries:
        response = api.get(url, {"limit": 3, "cursor": cursor})
    assert response.status_code == 200
    table = (Batch if "batches" in url else Task)._meta.db_table
    (sql,) = [q["sql"] for q in queries if f'FROM "{table}"' in q["sql"] and "LIMIT" in q["sql"]]
    with connection.cursor() as cursor_:
        cursor_.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        cursor_.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        plan = cursor_.fetchone()[0][0]["Plan"]

    # Then the walk entered the index at the position: it read the row there, the page, and
    # the one after (which says whether there is a next page)
    assert index in json.dumps(plan)
    assert _rows_read(plan, table) <= 5, json.dumps(plan, indent=1)


@pytest.mark.parametrize(
    "position",
    [["completed_at", "2026-01-01T00:00:00+00:00", 7], ["completed_at", None, "not-a-uuid"]],
    ids=["number-id", "not-a-uuid"],
)
def test_a_batch_cursor_whose_id_is_not_a_uuid_is_a_400(api: APIClient, position: list) -> None:
    response = api.get("/api/batches/", {"cursor": _cursor(position)})

    assert response.status_code == 400
    assert response.json() == {
        "cursor": ["Not a position in this list: follow the next link as given."]
    }
