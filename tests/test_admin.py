"""The operator console: every enumeration model browsable, engine state read-only, actions work."""

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.db.models import Model
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from enumeration.admin import LargeTablePaginator
from enumeration.choices import RecordType, SessionStatus, TaskKind, TaskStatus
from enumeration.models import (
    Batch,
    DomainEvent,
    ScanTarget,
    SessionState,
    Task,
    TaskOutputRecord,
)
from enumeration.services.inprocess import session_drain
from enumeration.services.sessions import enumerate_target

pytestmark = pytest.mark.django_db

MODELS = [ScanTarget, SessionState, Batch, Task, TaskOutputRecord, DomainEvent]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "report.txt").write_text("r")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"x")
    return root


@pytest.fixture
def finished_session(tree: Path) -> SessionState:
    session = enumerate_target(path=str(tree))
    finished = session_drain(session_id=session.pk, idle_sleep=0)
    assert finished.status == SessionStatus.COMPLETED
    return finished


@pytest.fixture
def failed_session(tmp_path: Path) -> SessionState:
    """A session whose root vanished before it was listed: FAILED, one failed unit."""
    root = tmp_path / "gone"
    root.mkdir()
    session = enumerate_target(path=str(root))
    root.rmdir()
    failed = session_drain(session_id=session.pk, idle_sleep=0)
    assert failed.status == SessionStatus.FAILED
    return failed


def _url(model: type[Model], view: str, *args: object) -> str:
    return reverse(f"admin:enumeration_{model._meta.model_name}_{view}", args=args)


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- every page ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_model_has_a_changelist_and_a_change_view_for_a_superuser(
    admin_client: Client, finished_session: SessionState, model: type[Model]
) -> None:
    # Given a finished session, so that every table has rows
    obj = model.objects.order_by("pk").first()
    assert obj is not None

    # When the operator opens the list and one row
    changelist = admin_client.get(_url(model, "changelist"))
    change = admin_client.get(_url(model, "change", obj.pk))

    # Then both pages render
    assert changelist.status_code == 200
    assert change.status_code == 200


def test_the_admin_index_lists_the_enumeration_models(admin_client: Client) -> None:
    response = admin_client.get(reverse("admin:app_list", args=["enumeration"]))

    assert response.status_code == 200
    for model in MODELS:
        assert _url(model, "changelist").encode() in response.content


# --- read-only engine state ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "model", [SessionState, Batch, Task, TaskOutputRecord, DomainEvent], ids=lambda m: m.__name__
)
def test_engine_owned_rows_cannot_be_added_changed_or_deleted_by_hand(
    admin_client: Client, finished_session: SessionState, model: type[Model]
) -> None:
    # Given a row the engine owns
    obj = model.objects.order_by("pk").first()

    # When the operator tries to add, change or delete one through the admin
    add = admin_client.get(_url(model, "add"))
    change = admin_client.post(_url(model, "change", obj.pk), {"status": "COMPLETED"})
    delete = admin_client.get(_url(model, "delete", obj.pk))

    # Then every attempt is forbidden
    assert add.status_code == 403
    assert change.status_code == 403
    assert delete.status_code == 403


def test_the_session_page_shows_status_and_counters_without_inputs(
    admin_client: Client, finished_session: SessionState
) -> None:
    response = admin_client.get(_url(SessionState, "change", finished_session.pk))

    content = response.content.decode()
    assert "COMPLETED" in content
    for field in ("status", "items_found", "failed_batches", "total_batches", "failure_reason"):
        assert f'name="{field}"' not in content
    assert f"?session={finished_session.pk}" in content  # links to its tasks, batches, records


def test_the_task_page_shows_its_lease_without_inputs(
    admin_client: Client, finished_session: SessionState
) -> None:
    task = Task.objects.filter(session=finished_session).first()

    content = admin_client.get(_url(Task, "change", task.pk)).content.decode()

    for field in ("status", "lease_owner", "lease_expires_at", "attempts", "payload"):
        assert f'name="{field}"' not in content


def test_a_target_can_be_renamed_but_not_moved(
    admin_client: Client, finished_session: SessionState
) -> None:
    # Given a target
    target = finished_session.target

    # When the operator saves a new name and, sneakily, a new location
    response = admin_client.post(
        _url(ScanTarget, "change", target.pk),
        {"name": "Finance share", "metadata": "{}", "location": "/etc"},
    )

    # Then the name changed and the location did not
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.name == "Finance share"
    assert target.location != "/etc"
    assert admin_client.get(_url(ScanTarget, "add")).status_code == 403


def test_a_target_is_deleted_only_once_its_sessions_are_gone(
    admin_client: Client, finished_session: SessionState
) -> None:
    # Given a target with a session, and one without (its sessions deleted)
    busy = finished_session.target
    idle = ScanTarget.objects.create(name="idle", target_type="directory", location="/nowhere")
    # Then the busy one offers no delete, and its delete page is refused, not a permission puzzle
    assert "deletelink" not in admin_client.get(_url(ScanTarget, "change", busy.pk)).text
    assert admin_client.get(_url(ScanTarget, "delete", busy.pk)).status_code == 403
    # And there is no bulk delete of targets at all
    listing = admin_client.get(_url(ScanTarget, "changelist"))
    assert "delete_selected" not in listing.text
    # And the idle one is deleted from its page
    response = admin_client.post(_url(ScanTarget, "delete", idle.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not ScanTarget.objects.filter(pk=idle.pk).exists()
    assert ScanTarget.objects.filter(pk=busy.pk).exists()


# --- filters and search -------------------------------------------------------------------------
def test_sessions_are_filtered_by_status_and_source_type(
    admin_client: Client, finished_session: SessionState, failed_session: SessionState
) -> None:
    url = _url(SessionState, "changelist")

    completed = admin_client.get(url, {"status": SessionStatus.COMPLETED}).context["cl"]
    failed = admin_client.get(url, {"status": SessionStatus.FAILED}).context["cl"]
    directories = admin_client.get(url, {"source_type": "directory"}).context["cl"]

    assert list(completed.result_list) == [finished_session]
    assert list(failed.result_list) == [failed_session]
    assert directories.result_count == 2


def test_an_unknown_filter_value_sends_the_operator_back_with_an_error_flag(
    admin_client: Client,
) -> None:
    response = admin_client.get(_url(SessionState, "changelist"), {"status": "SLEEPING"})

    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_sessions_are_found_by_id_or_by_part_of_their_location(
    admin_client: Client, finished_session: SessionState, failed_session: SessionState
) -> None:
    url = _url(SessionState, "changelist")

    by_id = admin_client.get(url, {"q": str(failed_session.pk)}).context["cl"]
    by_location = admin_client.get(url, {"q": "share"}).context["cl"]

    assert list(by_id.result_list) == [failed_session]
    assert list(by_location.result_list) == [finished_session]


def test_tasks_are_filtered_by_kind_and_status_and_found_by_id(
    admin_client: Client, finished_session: SessionState
) -> None:
    url = _url(Task, "changelist")
    task = Task.objects.filter(kind=TaskKind.DISCOVERY_ENUMERATE).first()

    enumerations = admin_client.get(
        url, {"kind": TaskKind.DISCOVERY_ENUMERATE, "status": TaskStatus.COMPLETED}
    ).context["cl"]
    by_id = admin_client.get(url, {"q": str(task.pk)}).context["cl"]
    by_session = admin_client.get(url, {"q": str(finished_session.pk)}).context["cl"]

    assert enumerations.result_count == 2
    assert list(by_id.result_list) == [task]
    assert by_session.result_count == Task.objects.filter(session=finished_session).count()


def test_batches_are_filtered_by_status_and_pipelined_and_found_by_unit(
    admin_client: Client, finished_session: SessionState, tree: Path
) -> None:
    url = _url(Batch, "changelist")

    succeeded = admin_client.get(url, {"status": "SUCCEEDED", "pipelined": "true"}).context["cl"]
    not_pipelined = admin_client.get(url, {"pipelined": "false"}).context["cl"]
    docs = admin_client.get(url, {"q": "docs"}).context["cl"]

    assert succeeded.result_count == 2
    assert not_pipelined.result_count == 0
    assert [b.unit for b in docs.result_list] == [str(tree / "docs")]


def test_a_sessions_output_records_link_finds_them_between_its_batches_bounds(
    admin_client: Client, finished_session: SessionState, tmp_path: Path
) -> None:
    # Given a second finished session, of another tree
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").touch()
    other = enumerate_target(path=str(tmp_path / "other"))
    session_drain(session_id=other.pk, idle_sleep=0)
    change = admin_client.get(_url(SessionState, "change", finished_session.pk)).content.decode()
    link = f"{_url(TaskOutputRecord, 'changelist')}?session={finished_session.pk}"
    assert link in change

    # When the operator follows the session page's "output records" link
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(link)

    # Then they see that session's records only, the filter shown in the sidebar
    cl = response.context["cl"]
    assert {r.session_id for r in cl.result_list} == {finished_session.pk}
    assert cl.result_count == TaskOutputRecord.objects.filter(session=finished_session).count()
    assert str(finished_session.pk) in response.content.decode().split('id="changelist-filter"')[1]
    # And the records were found along the primary key, between the bounds of the session's
    # batches: the output table has no index on its own session_id, so a filter on it alone
    # would read the whole table
    listing = [q["sql"] for q in queries if 'FROM "task_output_records"' in q["sql"]]
    wheres = [sql.split(" WHERE ", 1)[1] for sql in listing]
    assert wheres and all('"task_output_records"."id" BETWEEN' in where for where in wheres)


def test_output_records_are_filtered_by_type_and_found_by_key(
    admin_client: Client, finished_session: SessionState
) -> None:
    url = _url(TaskOutputRecord, "changelist")

    directories = admin_client.get(url, {"record_type": RecordType.DIRECTORY}).context["cl"]
    report = admin_client.get(url, {"q": "report"}).context["cl"]
    session_rows = admin_client.get(url, {"session": str(finished_session.pk)}).context["cl"]

    assert [r.name for r in directories.result_list] == ["docs"]
    assert [r.name for r in report.result_list] == ["report.txt"]
    assert session_rows.result_count == 3


def test_a_non_utf8_key_is_listed_readably(
    admin_client: Client, finished_session: SessionState
) -> None:
    response = admin_client.get(_url(TaskOutputRecord, "changelist"))

    assert "caf\\xe9.txt" in response.content.decode()


# --- actions ------------------------------------------------------------------------------------
def test_resume_action_resumes_each_session_and_reports_each_outcome(
    admin_client: Client, finished_session: SessionState, failed_session: SessionState, tmp_path
) -> None:
    # Given a FAILED session whose directory is back, and a COMPLETED one
    (tmp_path / "gone").mkdir()

    # When the operator resumes both from the list
    response = admin_client.post(
        _url(SessionState, "changelist"),
        {
            "action": "resume_sessions",
            "_selected_action": [str(finished_session.pk), str(failed_session.pk)],
        },
        follow=True,
    )

    # Then the failed one is running again and the completed one is refused, each said so
    assert response.status_code == 200
    failed_session.refresh_from_db()
    assert failed_session.status == SessionStatus.IN_PROGRESS
    messages = _messages(response)
    assert f"Session {failed_session.pk} resumed; it is now IN_PROGRESS." in messages
    assert any(
        m.startswith(f"Session {finished_session.pk} was not resumed") and "COMPLETED" in m
        for m in messages
    )


def test_requeue_action_requeues_failed_tasks_and_refuses_the_others(
    admin_client: Client, finished_session: SessionState, tmp_path: Path
) -> None:
    # Given a session whose task was failed by hand, and a completed task elsewhere
    (tmp_path / "fresh").mkdir()
    session = enumerate_target(path=str(tmp_path / "fresh"))
    failed = Task.objects.get(session=session)
    Task.objects.filter(pk=failed.pk).update(status=TaskStatus.FAILED, attempts=3)
    completed = Task.objects.filter(session=finished_session, status=TaskStatus.COMPLETED).first()

    # When the operator requeues both
    response = admin_client.post(
        _url(Task, "changelist"),
        {"action": "requeue_tasks", "_selected_action": [str(failed.pk), str(completed.pk)]},
        follow=True,
    )

    # Then the failed task is PENDING with fresh attempts, the completed one untouched
    failed.refresh_from_db()
    completed.refresh_from_db()
    assert failed.status == TaskStatus.PENDING
    assert failed.attempts == 0
    assert completed.status == TaskStatus.COMPLETED
    messages = _messages(response)
    assert f"Task {failed.pk} requeued." in messages
    assert any(m.startswith(f"Task {completed.pk} was not requeued") for m in messages)


def test_a_viewer_without_change_permission_is_not_offered_the_actions(
    client: Client, django_user_model, finished_session: SessionState
) -> None:
    # Given a staff member who may only view sessions and tasks
    viewer = django_user_model.objects.create_user(username="viewer", is_staff=True)
    viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_sessionstate", "view_task"])
    )
    client.force_login(viewer)

    # When they open the lists
    sessions = client.get(_url(SessionState, "changelist"))
    tasks = client.get(_url(Task, "changelist"))

    # Then the lists show, without the actions that change state
    assert sessions.status_code == tasks.status_code == 200
    assert sessions.context["action_form"] is None or "resume_sessions" not in str(
        sessions.context["action_form"]
    )
    assert tasks.context["action_form"] is None or "requeue_tasks" not in str(
        tasks.context["action_form"]
    )


# --- big tables ---------------------------------------------------------------------------------
def test_the_large_table_paginator_stops_counting_at_its_limit(
    finished_session: SessionState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a paginator whose counting limit is below the number of rows
    monkeypatch.setattr(LargeTablePaginator, "COUNT_LIMIT", 2)
    rows = TaskOutputRecord.objects.filter(session=finished_session).order_by("pk")

    # When it counts a filtered listing of 3 rows, and one of 1 row
    capped = LargeTablePaginator(rows, per_page=1)
    small = LargeTablePaginator(rows.filter(record_type=RecordType.DIRECTORY), per_page=1)

    # Then it stops at the limit for the first and is exact for the second
    assert capped.count == 2
    assert small.count == 1
    assert [r.pk for r in capped.page(2).object_list] == [rows[1].pk]
