"""The enumeration API under /api/: JWT, sessions, resume and requeue, read-only listings."""

import base64
import json
import os
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from django.contrib.auth.models import Permission
from django.core.management import call_command
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from enumeration.choices import BatchStatus, SessionStatus, TargetType, TaskKind, TaskStatus
from enumeration.connectors.keys import encode_key
from enumeration.models import Batch, ScanTarget, SessionState, Task, TaskOutputRecord
from enumeration.services.inprocess import session_drain
from enumeration.services.retention import sessions_purge_marked
from enumeration.services.sessions import enumerate_target

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password-1"
NON_UTF8_NAME = b"caf\xe9.txt"


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_user(username="operator", password=PASSWORD)


@pytest.fixture
def api(operator) -> APIClient:
    """A client holding a JWT obtained the way a real client does."""
    client = APIClient()
    response = client.post(
        "/api/auth/token/", {"username": "operator", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    return client


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{docs/{a.txt,b.txt}, empty/, big.bin (2 KiB), café.txt (name not UTF-8)}."""
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "docs" / "a.txt").write_text("a")
    (root / "docs" / "b.txt").write_text("bb")
    (root / "big.bin").write_bytes(b"\0" * 2048)
    with open(os.path.join(os.fsencode(root), NON_UTF8_NAME), "wb") as handle:
        handle.write(b"x")
    return root


@pytest.fixture
def finished_session(tree: Path) -> SessionState:
    """A session of ``tree`` run to the end in this process, as the embedded default does."""
    session = enumerate_target(path=str(tree))
    finished = session_drain(session_id=session.pk, idle_sleep=0)
    assert finished.status == SessionStatus.COMPLETED
    return finished


def _results(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()["results"]


# --- authentication -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    ["/api/targets/", "/api/sessions/", "/api/batches/", "/api/tasks/", "/api/output-records/"],
)
def test_requests_without_a_token_are_refused_with_401(url: str) -> None:
    # Given a client with no credentials
    client = APIClient()

    # When it lists anything
    response = client.get(url)

    # Then it is told to authenticate, with a Bearer challenge
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_starting_a_session_without_a_token_is_refused_and_creates_nothing(tree: Path) -> None:
    response = APIClient().post("/api/sessions/", {"path": str(tree)}, format="json")

    assert response.status_code == 401
    assert not SessionState.objects.exists()


def test_a_token_obtained_from_the_auth_endpoint_opens_the_api(api: APIClient) -> None:
    # Given a client that obtained a JWT (the fixture)
    # When it lists sessions
    response = api.get("/api/sessions/")

    # Then it is served
    assert response.status_code == 200
    assert response.json()["count"] == 0


def test_a_wrong_password_gets_no_token(operator) -> None:
    response = APIClient().post(
        "/api/auth/token/", {"username": "operator", "password": "wrong"}, format="json"
    )

    assert response.status_code == 401


# --- starting sessions --------------------------------------------------------------------------
def test_starting_a_session_for_a_directory_returns_201_with_a_first_task(
    api: APIClient, tree: Path
) -> None:
    # Given a real directory
    # When a session is started for it
    response = api.post("/api/sessions/", {"path": str(tree), "name": "Tree"}, format="json")

    # Then the session exists, INITIALIZED, with one DISCOVERY_ENUMERATE task for the root
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == SessionStatus.INITIALIZED
    assert body["target"]["name"] == "Tree"
    assert body["target"]["location"] == str(tree)
    assert body["counters"]["items_found"] == 0
    assert body["task_counts"] == {TaskKind.DISCOVERY_ENUMERATE: {TaskStatus.PENDING: 1}}
    assert response["Location"].endswith(f"/api/sessions/{body['id']}/")
    task = Task.objects.get(session_id=body["id"])
    assert task.kind == TaskKind.DISCOVERY_ENUMERATE
    assert task.paths_to_scan == [str(tree)]


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tree: str(tree / "missing"), "does not exist"),
        (lambda tree: str(tree / "big.bin"), "is not a directory"),
        (lambda tree: "", "A directory path is required."),
        (lambda tree: "   ", "A directory path is required."),
        (lambda tree: f"{tree}\x00/etc", "cannot contain a NUL character"),
        (lambda tree: "base64:!!!", "must be a lossless key"),
    ],
    ids=["missing", "a-file", "empty", "blank", "nul", "bad-key"],
)
def test_a_bad_path_is_refused_with_a_readable_message_and_nothing_is_created(
    api: APIClient, tree: Path, make_path, message: str
) -> None:
    # Given a path that does not name a usable directory
    path = make_path(tree)

    # When a session is asked for it
    response = api.post("/api/sessions/", {"path": path}, format="json")

    # Then it is a 400 about the path, in words, and nothing was written
    assert response.status_code == 400, response.content
    errors = response.json()["path"]
    assert len(errors) == 1
    assert message in errors[0]
    assert not ScanTarget.objects.exists()
    assert not SessionState.objects.exists()
    assert not Task.objects.exists()


def test_a_request_without_a_path_is_refused(api: APIClient) -> None:
    response = api.post("/api/sessions/", {}, format="json")

    assert response.status_code == 400
    assert response.json() == {"path": ["This field is required."]}


def test_a_second_session_for_an_active_target_is_a_409_conflict(
    api: APIClient, tree: Path
) -> None:
    # Given an active session of a directory
    first = api.post("/api/sessions/", {"path": str(tree)}, format="json")
    assert first.status_code == 201

    # When another is asked for the same directory
    second = api.post("/api/sessions/", {"path": str(tree)}, format="json")

    # Then it is refused as a conflict naming the active session, and nothing was added
    assert second.status_code == 409
    assert first.json()["id"] in second.json()["detail"]
    assert SessionState.objects.count() == 1
    assert Task.objects.count() == 1


def test_a_finished_target_can_be_enumerated_again(
    api: APIClient, finished_session: SessionState
) -> None:
    response = api.post("/api/sessions/", {"path": finished_session.target.location}, format="json")

    assert response.status_code == 201
    assert response.json()["target"]["id"] == str(finished_session.target_id)


def test_a_path_given_as_a_lossless_key_is_decoded(api: APIClient, tree: Path) -> None:
    # Given the "base64:" key form of a directory's path
    key = "base64:" + base64.b64encode(os.fsencode(tree)).decode("ascii")

    # When a session is started with it
    response = api.post("/api/sessions/", {"path": key}, format="json")

    # Then it names the same directory as the plain path
    assert response.status_code == 201, response.content
    assert response.json()["target"]["location"] == str(tree)


def test_a_non_utf8_directory_can_be_enumerated_by_its_lossless_key(
    api: APIClient, tmp_path: Path
) -> None:
    # Given a directory whose name is not UTF-8
    raw = os.path.join(os.fsencode(tmp_path), b"d\xe9j\xe0")
    os.mkdir(raw)

    # When a session is started with the key form the API itself returns for such paths
    response = api.post("/api/sessions/", {"path": encode_key(raw)}, format="json")

    # Then the target is stored losslessly and shown readably
    assert response.status_code == 201, response.content
    target = response.json()["target"]
    assert target["location"] == encode_key(raw)
    assert target["display_location"] == f"{tmp_path}/d\\xe9j\\xe0"


# --- reading sessions ---------------------------------------------------------------------------
def test_session_detail_shows_counters_timeline_and_tasks_by_status(
    api: APIClient, finished_session: SessionState
) -> None:
    # Given a finished session of a tree of 3 directories (root, docs, empty) and 4 files
    # When its detail is read
    response = api.get(f"/api/sessions/{finished_session.pk}/")

    # Then its counters, status and timeline are those of the run
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == SessionStatus.COMPLETED
    assert body["failure_reason"] == ""
    assert body["counters"] == {
        "total_batches": 3,
        "failed_batches": 0,
        "items_found": 6,
        "items_processed": finished_session.items_processed,
        "files_found": 4,
        "directories_found": 2,
        "processing_seconds": pytest.approx(
            sum(b.elapsed_seconds for b in Batch.objects.filter(session=finished_session))
        ),
    }
    assert body["timeline"]["started_at"] is not None
    assert body["timeline"]["completed_at"] is not None
    assert body["task_counts"][TaskKind.DISCOVERY_ENUMERATE] == {TaskStatus.COMPLETED: 2}


def test_an_unknown_session_is_404(api: APIClient) -> None:
    assert api.get("/api/sessions/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert api.get("/api/sessions/not-a-uuid/").status_code == 404


def test_sessions_are_filtered_by_status_and_paginated(
    api: APIClient, finished_session: SessionState, tmp_path: Path
) -> None:
    # Given one finished session and three active ones
    for name in ("one", "two", "three"):
        (tmp_path / name).mkdir()
        enumerate_target(path=str(tmp_path / name))

    # When sessions are listed by status, and a page at a time
    active = api.get("/api/sessions/", {"status": SessionStatus.INITIALIZED})
    completed = api.get("/api/sessions/", {"status": SessionStatus.COMPLETED})
    page = api.get("/api/sessions/", {"limit": 2, "offset": 2, "ordering": "created_at"})

    # Then each filter keeps its own, and pages follow the limit/offset
    assert len(_results(active)) == 3
    assert [s["id"] for s in _results(completed)] == [str(finished_session.pk)]
    body = page.json()
    assert body["count"] == 4
    assert len(body["results"]) == 2
    assert body["previous"] is not None
    assert body["next"] is None
    assert (
        body["results"][0]["timeline"]["created_at"] <= body["results"][1]["timeline"]["created_at"]
    )


def test_an_invalid_filter_value_is_a_400(api: APIClient) -> None:
    response = api.get("/api/sessions/", {"status": "SLEEPING"})

    assert response.status_code == 400
    assert "status" in response.json()


def test_targets_are_listed_and_read(api: APIClient, finished_session: SessionState) -> None:
    listing = _results(api.get("/api/targets/", {"name": "roo"}))
    detail = api.get(f"/api/targets/{finished_session.target_id}/").json()

    assert [t["id"] for t in listing] == [str(finished_session.target_id)]
    assert detail["last_scan_time"] is not None
    assert detail["display_location"] == detail["location"]


def test_targets_are_read_only(api: APIClient, finished_session: SessionState) -> None:
    url = f"/api/targets/{finished_session.target_id}/"

    assert api.patch(url, {"name": "renamed"}, format="json").status_code == 405
    assert api.delete(url).status_code == 405
    assert api.post("/api/targets/", {"name": "x"}, format="json").status_code == 405


# --- resume -------------------------------------------------------------------------------------
def test_resuming_a_failed_session_retries_its_failed_units(api: APIClient, tree: Path) -> None:
    # Given a session that FAILED because its root vanished before it was listed
    session = enumerate_target(path=str(tree))
    moved = tree.with_name("elsewhere")
    tree.rename(moved)
    failed = session_drain(session_id=session.pk, idle_sleep=0)
    assert failed.status == SessionStatus.FAILED
    assert failed.failed_batches == 1

    # When the directory is back and the session is resumed through the API
    moved.rename(tree)
    response = api.post(f"/api/sessions/{session.pk}/resume/")

    # Then it is IN_PROGRESS again with its failed unit given a new task, and it can finish
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == SessionStatus.IN_PROGRESS
    assert body["counters"]["failed_batches"] == 0
    assert body["task_counts"][TaskKind.DISCOVERY_ENUMERATE][TaskStatus.PENDING] == 1
    finished = session_drain(session_id=session.pk, idle_sleep=0)
    assert finished.status == SessionStatus.COMPLETED
    assert finished.items_found == 6


def test_resuming_an_active_session_is_harmless(api: APIClient, tree: Path) -> None:
    session = enumerate_target(path=str(tree))

    first = api.post(f"/api/sessions/{session.pk}/resume/")
    second = api.post(f"/api/sessions/{session.pk}/resume/")

    assert first.status_code == second.status_code == 200
    assert second.json()["status"] == SessionStatus.INITIALIZED
    assert Task.objects.filter(session=session).count() == 1


def test_resuming_a_completed_session_is_a_409_conflict(
    api: APIClient, finished_session: SessionState
) -> None:
    response = api.post(f"/api/sessions/{finished_session.pk}/resume/")

    assert response.status_code == 409
    assert "already COMPLETED" in response.json()["detail"]


# --- delete -------------------------------------------------------------------------------------
def test_deleting_a_session_needs_the_delete_permission(
    api: APIClient, finished_session: SessionState
) -> None:
    response = api.delete(f"/api/sessions/{finished_session.pk}/")

    assert response.status_code == 403
    assert "delete_sessionstate" in response.json()["detail"]
    assert SessionState.objects.get(pk=finished_session.pk).purge_started_at is None


def test_deleting_a_finished_session_marks_it_and_a_worker_deletes_it(
    api: APIClient, operator, finished_session: SessionState
) -> None:
    # Given an operator allowed to delete sessions
    operator.user_permissions.add(Permission.objects.get(codename="delete_sessionstate"))

    # When they delete a finished session (twice: a repeated request changes nothing)
    first = api.delete(f"/api/sessions/{finished_session.pk}/")
    second = api.delete(f"/api/sessions/{finished_session.pk}/")

    # Then it is accepted and marked, and can no longer be resumed
    assert first.status_code == second.status_code == 202, first.content
    marked = first.json()["timeline"]["purge_started_at"]
    assert marked is not None
    assert second.json()["timeline"]["purge_started_at"] == marked
    resumed = api.post(f"/api/sessions/{finished_session.pk}/resume/")
    assert resumed.status_code == 409
    assert "being deleted" in resumed.json()["detail"]
    # And once the worker's job has run, the session and its records are gone
    assert sessions_purge_marked().sessions == 1
    assert api.get(f"/api/sessions/{finished_session.pk}/").status_code == 404
    assert not TaskOutputRecord.objects.filter(session_id=finished_session.pk).exists()


def test_deleting_an_active_session_is_a_409_conflict(api: APIClient, operator, tree: Path) -> None:
    operator.user_permissions.add(Permission.objects.get(codename="delete_sessionstate"))
    session = enumerate_target(path=str(tree))

    response = api.delete(f"/api/sessions/{session.pk}/")

    assert response.status_code == 409
    assert "only a finished session" in response.json()["detail"]
    assert SessionState.objects.get(pk=session.pk).purge_started_at is None


def test_resuming_an_unknown_session_is_404(api: APIClient) -> None:
    response = api.post("/api/sessions/00000000-0000-0000-0000-000000000000/resume/")

    assert response.status_code == 404


# --- batches and tasks --------------------------------------------------------------------------
def test_batches_are_filtered_by_session_and_status(
    api: APIClient, finished_session: SessionState, tmp_path: Path
) -> None:
    # Given a finished session and, beside it, another session's failed unit
    (tmp_path / "other").mkdir()
    other = enumerate_target(path=str(tmp_path / "other"))
    shutil.rmtree(tmp_path / "other")
    session_drain(session_id=other.pk, idle_sleep=0)

    # When batches are listed by session and by status
    mine = _results(api.get("/api/batches/", {"session": str(finished_session.pk)}))
    failed = _results(api.get("/api/batches/", {"status": BatchStatus.FAILED}))
    pending = _results(api.get("/api/batches/", {"pipelined": "false"}))

    # Then each filter keeps its own
    assert len(mine) == 3
    assert {b["status"] for b in mine} == {BatchStatus.SUCCEEDED}
    assert [b["session"] for b in failed] == [str(other.pk)]
    assert "No such file or directory" in failed[0]["error_details"]
    assert pending == []
    detail = api.get(f"/api/batches/{mine[0]['id']}/").json()
    assert detail["completion_percentage"] == 100.0


def test_tasks_are_filtered_by_session_kind_and_status(
    api: APIClient, finished_session: SessionState
) -> None:
    # Given a finished session (2 enumeration tasks, classification tasks for its files)
    session = str(finished_session.pk)

    # When its tasks are listed by kind and status
    enumerations = _results(
        api.get("/api/tasks/", {"session": session, "kind": TaskKind.DISCOVERY_ENUMERATE})
    )
    running = _results(api.get("/api/tasks/", {"status": TaskStatus.RUNNING}))

    # Then the listing leaves out payloads, which the detail shows
    assert len(enumerations) == 2
    assert {t["status"] for t in enumerations} == {TaskStatus.COMPLETED}
    assert running == []
    assert "payload" not in enumerations[0]
    detail = api.get(f"/api/tasks/{enumerations[0]['id']}/").json()
    assert detail["payload"]["paths_to_scan"]


def _fail_by_hand(task: Task) -> Task:
    Task.objects.filter(pk=task.pk).update(
        status=TaskStatus.FAILED, attempts=task.max_attempts, last_error="worker exploded"
    )
    task.refresh_from_db()
    return task


def test_requeuing_a_failed_task_makes_it_pending_again(api: APIClient, tree: Path) -> None:
    # Given a session whose only task has FAILED
    session = enumerate_target(path=str(tree))
    task = _fail_by_hand(Task.objects.get(session=session))

    # When the task is requeued through the API
    response = api.post(f"/api/tasks/{task.pk}/requeue/")

    # Then it is PENDING with its attempts reset, and a worker can finish the session
    assert response.status_code == 200, response.content
    assert response.json()["status"] == TaskStatus.PENDING
    assert response.json()["attempts"] == 0
    finished = session_drain(session_id=session.pk, idle_sleep=0)
    assert finished.status == SessionStatus.COMPLETED


def test_requeuing_a_task_that_has_not_failed_is_a_409_conflict(api: APIClient, tree: Path) -> None:
    session = enumerate_target(path=str(tree))
    task = Task.objects.get(session=session)

    response = api.post(f"/api/tasks/{task.pk}/requeue/")

    assert response.status_code == 409
    assert "Only a FAILED task can be requeued" in response.json()["detail"]
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING


# --- output records -----------------------------------------------------------------------------
def test_output_records_are_filtered_by_type_container_and_key(
    api: APIClient, finished_session: SessionState, tree: Path
) -> None:
    url = "/api/output-records/"
    session = str(finished_session.pk)

    # When records are listed with each filter
    files = _results(api.get(url, {"session": session, "record_type": "FILE"}))
    directories = _results(api.get(url, {"record_type": "DIRECTORY"}))
    in_docs = _results(api.get(url, {"container": str(tree / "docs")}))
    by_prefix = _results(api.get(url, {"object_key__startswith": str(tree / "docs") + "/"}))
    by_part = _results(api.get(url, {"object_key__icontains": "BIG.B"}))
    exact = _results(api.get(url, {"object_key": str(tree / "docs" / "a.txt")}))

    # Then each keeps its own
    assert len(files) == 4
    assert {r["display_name"] for r in directories} == {"docs", "empty"}
    assert {r["name"] for r in in_docs} == {"a.txt", "b.txt"}
    assert {r["name"] for r in by_prefix} == {"a.txt", "b.txt"}
    assert [r["name"] for r in by_part] == ["big.bin"]
    assert [r["size"] for r in exact] == [1]


def test_output_records_are_ordered_and_paginated(
    api: APIClient, finished_session: SessionState
) -> None:
    largest = api.get(
        "/api/output-records/", {"ordering": "-size", "record_type": "FILE", "limit": 1}
    ).json()
    by_name = _results(api.get("/api/output-records/", {"ordering": "name", "record_type": "FILE"}))

    assert "count" not in largest  # keyset pages: nothing counts a session's records
    assert largest["results"][0]["name"] == "big.bin"
    assert largest["next"] is not None
    names = [r["name"] for r in by_name]
    assert names == sorted(names)


def test_a_non_utf8_object_key_is_exposed_losslessly_with_a_readable_form(
    api: APIClient, finished_session: SessionState, tree: Path
) -> None:
    # Given a file whose name is not UTF-8, found by the session
    raw = os.path.join(os.fsencode(tree), NON_UTF8_NAME)

    # When it is looked up by its lossless key
    records = _results(api.get("/api/output-records/", {"object_key": encode_key(raw)}))

    # Then the key is the stored one and the display form escapes the odd byte
    assert len(records) == 1
    record = records[0]
    assert record["object_key"].startswith("base64:")
    assert record["display_key"] == f"{tree}/caf\\xe9.txt"
    assert record["display_name"] == "caf\\xe9.txt"
    assert record["display_container"] == str(tree)
    assert TaskOutputRecord.objects.get(pk=record["id"]).object_key == record["object_key"]


def test_output_records_are_read_only(api: APIClient, finished_session: SessionState) -> None:
    record = TaskOutputRecord.objects.filter(session=finished_session).first()

    assert api.delete(f"/api/output-records/{record.pk}/").status_code == 405
    assert Batch.objects.filter(pk=record.batch_id).exists()


# --- schema and docs ----------------------------------------------------------------------------
def test_the_schema_endpoint_serves_a_valid_openapi_document(api: APIClient) -> None:
    response = api.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = json.loads(response.content)
    validate_schema(schema)
    for path in ("/api/sessions/", "/api/sessions/{id}/resume/", "/api/tasks/{id}/requeue/"):
        assert path in schema["paths"]


def test_the_enumeration_api_schema_generates_without_warnings(tmp_path: Path) -> None:
    # --fail-on-warn turns any warning about these views into an error
    out = tmp_path / "schema.yaml"
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--urlconf",
        "enumeration.api.urls",
        "--file",
        str(out),
    )

    schema = yaml.safe_load(out.read_text())
    assert {"SessionStatusEnum", "TaskStatusEnum", "BatchStatusEnum"} <= set(
        schema["components"]["schemas"]
    )


def test_a_page_is_never_larger_than_the_limit_ceiling(api: APIClient) -> None:
    ScanTarget.objects.bulk_create(
        ScanTarget(name=f"t{i}", target_type=TargetType.DIRECTORY, location=f"/srv/t{i}")
        for i in range(1005)
    )

    page = api.get("/api/targets/", {"limit": 100_000}).json()

    assert page["count"] == 1005
    assert len(page["results"]) == 1000
    assert "limit=1000" in page["next"]


def test_the_api_docs_page_is_served_without_a_cdn(api: APIClient) -> None:
    response = api.get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
    # Swagger UI comes from the installed sidecar package: the page works on a closed network
    assert b"https://" not in response.content
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in (
        response.content
    )


# --- output records: name, size and modified-time filters --------------------------------------
RECORDS = "/api/output-records/"


def _names(response) -> set[str]:
    return {r["display_name"] for r in _results(response)}


def test_output_records_are_filtered_by_a_part_of_their_name_in_any_case(
    api: APIClient, finished_session: SessionState
) -> None:
    # Given a finished session of the tree (docs/a.txt, docs/b.txt, big.bin, a non-UTF-8 name)
    session = str(finished_session.pk)

    # When its records are listed by a part of their name
    texts = api.get(RECORDS, {"session": session, "name": "TXT"})
    docs = api.get(RECORDS, {"session": session, "name": "oc"})

    # Then only the names containing it, whatever the case (the stored key of a non-UTF-8 name,
    # "base64:...", does not contain it)
    assert _names(texts) == {"a.txt", "b.txt"}
    assert _names(docs) == {"docs"}


def test_output_records_are_filtered_by_a_size_range(
    api: APIClient, finished_session: SessionState
) -> None:
    # Given files of 1 byte (a.txt and the non-UTF-8 one), 2 (b.txt) and 2048 (big.bin), and
    # directories, which have no size
    session = str(finished_session.pk)

    # When records are listed by a lower bound, an upper bound, and both
    at_least_two = api.get(RECORDS, {"session": session, "size__gte": 2})
    at_most_one = api.get(RECORDS, {"session": session, "size__lte": 1})
    between = api.get(RECORDS, {"session": session, "size__gte": 2, "size__lte": 100})

    # Then each bound is inclusive and a record without a size is in no range
    assert _names(at_least_two) == {"b.txt", "big.bin"}
    assert _names(at_most_one) == {"a.txt", "caf\\xe9.txt"}
    assert [r["size"] for r in _results(between)] == [2]


def test_output_records_are_filtered_by_a_modified_time_range(api: APIClient, tree: Path) -> None:
    # Given files last modified in 2019, 2021, 2023 and 2030, then enumerated
    for path, year in (
        (tree / "docs" / "a.txt", 2019),
        (tree / "docs" / "b.txt", 2021),
        (tree / "big.bin", 2023),
        (os.path.join(os.fsencode(tree), NON_UTF8_NAME), 2030),
    ):
        stamp = datetime(year, 6, 1, tzinfo=UTC).timestamp()
        os.utime(path, (stamp, stamp))
    session = session_drain(session_id=enumerate_target(path=str(tree)).pk, idle_sleep=0)
    assert session.status == SessionStatus.COMPLETED
    query = {"session": str(session.pk)}

    # When records are listed by a time range, and by each bound alone (ISO 8601)
    within = api.get(
        RECORDS,
        {**query, "modified_at__gte": "2020-01-01T00:00:00Z", "modified_at__lte": "2024-01-01"},
    )
    until = api.get(RECORDS, {**query, "modified_at__lte": "2022-01-01T00:00:00+00:00"})
    since = api.get(RECORDS, {**query, "modified_at__gte": "2029-12-31T23:00:00Z"})

    # Then each keeps the files modified in it
    assert _names(within) == {"b.txt", "big.bin"}
    assert _names(until) == {"a.txt", "b.txt"}
    assert _names(since) == {"caf\\xe9.txt"}
    assert _results(since)[0]["modified_at"].startswith("2030-06-01T")


@pytest.mark.parametrize(
    "params",
    [{"size__gte": "big"}, {"size__lte": "1.5kB"}, {"modified_at__gte": "yesterday"}],
    ids=["size-gte", "size-lte", "modified-at"],
)
def test_a_size_or_time_bound_that_is_not_one_is_a_400(api: APIClient, params: dict) -> None:
    response = api.get(RECORDS, params)

    assert response.status_code == 400
    assert set(response.json()) == set(params)


@pytest.mark.parametrize(
    ("url", "param"),
    [
        (RECORDS, "modified_at__gte"),
        ("/api/sessions/", "created_at__lte"),
        ("/api/nms/discovery_runs", "created_at__gte"),
    ],
)
def test_a_time_with_an_offset_postgresql_cannot_take_is_compared_in_utc(
    api: APIClient, url: str, param: str
) -> None:
    # Python accepts offsets up to 23:59, PostgreSQL up to 15:59: this was a 500 (schemathesis)
    response = api.get(url, {param: "2024-05-01T10:00:00+23:43"})

    assert response.status_code == 200, response.content


def test_a_time_filter_means_the_same_instant_whatever_its_offset(
    api: APIClient, finished_session: SessionState
) -> None:
    # Given records modified at one instant
    record = TaskOutputRecord.objects.filter(session=finished_session).first()
    instant = record.modified_at.astimezone(UTC)
    query = {"session": str(finished_session.pk), "object_key": record.object_key}

    # When it is asked for at that instant written in UTC+05:00 and in UTC-20:00
    for offset in (5, -20):
        local = instant.astimezone(timezone(timedelta(hours=offset)))
        both = {
            **query,
            "modified_at__gte": local.isoformat(),
            "modified_at__lte": local.isoformat(),
        }

        # Then the record is found each time
        assert [r["id"] for r in _results(api.get(RECORDS, both))] == [record.pk], offset


def test_a_time_that_leaves_the_calendar_once_in_utc_is_a_400(api: APIClient) -> None:
    response = api.get(RECORDS, {"modified_at__lte": "0001-01-01T00:30:00+05:00"})

    assert response.status_code == 400
    assert response.json() == {
        "modified_at__lte": ["Enter a time that stays within years 1 to 9999 in UTC."]
    }


def test_an_ip_filter_given_something_that_is_not_an_address_is_a_400(api: APIClient) -> None:
    # (compared as inet, it was a 500 from PostgreSQL: schemathesis)
    response = api.get("/api/nms/devices", {"ip": "__main__"})

    assert response.status_code == 400
    assert response.json() == {"ip": ["Enter a valid IPv4 or IPv6 address."]}


# --- 404s in words ------------------------------------------------------------------------------
UNKNOWN_UUID = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        (f"/api/targets/{UNKNOWN_UUID}/", "No target with this id."),
        ("/api/targets/not-an-id/", "No target with this id."),
        (f"/api/sessions/{UNKNOWN_UUID}/", "No session with this id."),
        ("/api/sessions/not-an-id/", "No session with this id."),
        (f"/api/tasks/{UNKNOWN_UUID}/", "No task with this id."),
        ("/api/tasks/not-an-id/", "No task with this id."),
        (f"/api/batches/{UNKNOWN_UUID}/", "No batch with this id."),
        ("/api/batches/not-an-id/", "No batch with this id."),
        ("/api/output-records/999999999999/", "No output record with this id."),
        ("/api/output-records/not-an-id/", "No output record with this id."),
    ],
)
def test_a_detail_url_that_names_nothing_is_a_404_saying_what_was_looked_for(
    api: APIClient, finished_session: SessionState, url: str, detail: str
) -> None:
    # Given objects of every kind exist (a finished session), but not this one
    # When it is read, by an unknown id or by something that is not an id
    response = api.get(url)

    # Then the 404 says in words what was not found, the same either way, naming no model class
    assert response.status_code == 404
    assert response.json() == {"detail": detail}


def test_actions_on_an_unknown_object_are_a_404_in_words(api: APIClient, operator) -> None:
    # Given an operator allowed to delete sessions, and no sessions or tasks
    operator.user_permissions.add(Permission.objects.get(codename="delete_sessionstate"))

    # When they resume, delete or requeue what does not exist
    resumed = api.post(f"/api/sessions/{UNKNOWN_UUID}/resume/")
    deleted = api.delete(f"/api/sessions/{UNKNOWN_UUID}/")
    requeued = api.post("/api/tasks/not-an-id/requeue/")

    # Then each is a 404 naming what was looked for
    assert (resumed.status_code, resumed.json()) == (404, {"detail": "No session with this id."})
    assert (deleted.status_code, deleted.json()) == (404, {"detail": "No session with this id."})
    assert (requeued.status_code, requeued.json()) == (404, {"detail": "No task with this id."})


# --- the API root -------------------------------------------------------------------------------
def test_the_api_root_without_a_token_is_refused_with_401() -> None:
    response = APIClient().get("/api/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_the_api_root_links_every_endpoint_and_each_link_is_served(api: APIClient) -> None:
    # Given a client with a token
    # When it reads the API root
    response = api.get("/api/")

    # Then it is JSON linking the enumeration and NMS endpoints, the token, schema and docs
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    links = response.json()
    assert links["sessions"] == "http://testserver/api/sessions/"
    assert links["nms/devices"].rstrip("/") == "http://testserver/api/nms/devices"
    assert links["auth/token"] == "http://testserver/api/auth/token/"
    assert {
        "targets",
        "sessions",
        "batches",
        "tasks",
        "output-records",
        "nms/credential_profiles",
        "nms/discovery_profiles",
        "nms/discovery_runs",
        "nms/devices",
        "auth/token",
        "auth/token/refresh",
        "schema",
        "docs",
    } == set(links)
    # And every link that is read with GET is served
    for key, url in links.items():
        if not key.startswith("auth/"):
            assert api.get(url).status_code == 200, key


def test_the_whole_api_schema_generates_without_warnings_and_leaves_out_the_root(
    tmp_path: Path,
) -> None:
    # Given the project's URLconf, API root included
    out = tmp_path / "schema.yaml"

    # When its schema is generated with warnings as errors
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    # Then it is valid and the root, a list of links, is no operation of it
    paths = yaml.safe_load(out.read_text())["paths"]
    assert "/api/sessions/" in paths
    assert "/api/" not in paths


# --- a path that is no endpoint -----------------------------------------------------------------
NO_ENDPOINT = ["/api/nope/", "/api/nope", "/api/nms/nope/", "/api/sessions/a/b/c/"]


@pytest.mark.parametrize("url", NO_ENDPOINT)
def test_a_path_under_api_that_is_no_endpoint_is_a_json_404(api: APIClient, url: str) -> None:
    response = api.get(url)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


@pytest.mark.parametrize("url", NO_ENDPOINT)
def test_without_a_token_a_path_under_api_that_is_no_endpoint_is_the_same_json_404(
    url: str,
) -> None:
    # Given a client without a token, to whom the schema lists every endpoint anyway
    anonymous = APIClient()
    assert anonymous.get("/api/schema/").status_code == 200

    # When it asks for a path that is no endpoint
    response = anonymous.get(url)

    # Then it gets the same 404 as a client with a token, echoing nothing of the request
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert b"nope" not in response.content


def test_a_404_outside_the_api_is_still_djangos_html_page(admin_client, client) -> None:
    # Given an administrator logged in, and an anonymous browser
    # When they ask for pages that do not exist, in the admin and outside it
    in_admin = admin_client.get("/admin/nope/")
    elsewhere = client.get("/nope/")

    # Then both are Django's HTML 404 page, not the API's JSON
    for response in (in_admin, elsewhere):
        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html")
