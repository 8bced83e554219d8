"""Every transition of the session, task and batch state machines, allowed and forbidden."""

import itertools
import uuid

import pytest

from enumeration.choices import BatchStatus, SessionStatus, TaskStatus
from enumeration.models import Batch, InvalidTransition, SessionState, Task
from enumeration.models.sessions import SESSION_TRANSITIONS
from enumeration.models.work import BATCH_TRANSITIONS, TASK_TRANSITIONS

SESSION_METHODS = {
    SessionStatus.IN_PROGRESS: lambda s: s.mark_in_progress(),
    SessionStatus.COMPLETED: lambda s: s.mark_completed(),
    SessionStatus.FAILED: lambda s: s.mark_failed("boom"),
    SessionStatus.STALLED: lambda s: s.mark_stalled(),
    SessionStatus.PARTIALLY_COMPLETED: lambda s: s.mark_partially_completed("2 units failed"),
}
ALLOWED_SESSION = {
    (SessionStatus.INITIALIZED, SessionStatus.IN_PROGRESS),
    (SessionStatus.INITIALIZED, SessionStatus.FAILED),
    # No worker has started it within the threshold; the first claim takes it on.
    (SessionStatus.INITIALIZED, SessionStatus.STALLED),
    (SessionStatus.IN_PROGRESS, SessionStatus.COMPLETED),
    (SessionStatus.IN_PROGRESS, SessionStatus.FAILED),
    (SessionStatus.IN_PROGRESS, SessionStatus.STALLED),
    (SessionStatus.IN_PROGRESS, SessionStatus.PARTIALLY_COMPLETED),
    (SessionStatus.STALLED, SessionStatus.IN_PROGRESS),
    (SessionStatus.STALLED, SessionStatus.FAILED),
    # Not terminal: a resume retries the failed units.
    (SessionStatus.PARTIALLY_COMPLETED, SessionStatus.IN_PROGRESS),
    (SessionStatus.FAILED, SessionStatus.IN_PROGRESS),
}


def test_session_transition_table_is_the_documented_one():
    table = {(a, b) for a, targets in SESSION_TRANSITIONS.items() for b in targets}
    assert table == ALLOWED_SESSION


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product(SessionStatus.values, SESSION_METHODS))
)
def test_session_transition(current, target):
    # Given a session in ``current``
    session = SessionState(status=current)
    # When it is asked to move to ``target``
    if (current, target) in ALLOWED_SESSION:
        SESSION_METHODS[target](session)
        # Then it moves, with its timeline and reason kept in step
        assert session.status == target
        if target in (SessionStatus.COMPLETED, SessionStatus.FAILED):
            assert session.completed_at is not None
        if target == SessionStatus.IN_PROGRESS:
            assert session.started_at is not None
            assert session.completed_at is None
            assert session.failure_reason == ""
    else:
        # Then a forbidden move raises a clear error and changes nothing
        with pytest.raises(InvalidTransition, match=f"session cannot go from {current} to"):
            SESSION_METHODS[target](session)
        assert session.status == current


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product(TaskStatus.values, TaskStatus.values))
)
def test_task_transition(current, target):
    task = Task(status=current)
    if target in TASK_TRANSITIONS[current]:
        task.transition(target)
        assert task.status == target
    else:
        with pytest.raises(InvalidTransition, match="task cannot go from"):
            task.transition(target)
        assert task.status == current


BATCH_METHODS = {
    BatchStatus.SUCCEEDED: lambda b: b.mark_successful(3),
    BatchStatus.FAILED: lambda b: b.mark_failed(PermissionError("denied")),
}


@pytest.mark.parametrize(
    ("current", "target"), list(itertools.product(BatchStatus.values, BATCH_METHODS))
)
def test_batch_transition(current, target):
    batch = Batch(status=current)
    if target in BATCH_TRANSITIONS[current]:
        BATCH_METHODS[target](batch)
        assert batch.status == target
        assert batch.completed_at is not None
    else:
        with pytest.raises(InvalidTransition, match="batch cannot go from"):
            BATCH_METHODS[target](batch)


def test_batch_metrics():
    batch = Batch(expected_items=4)
    assert batch.completion_percentage() == 0.0
    batch.mark_successful(4)
    assert batch.completion_percentage() == 100.0
    failed = Batch()
    failed.mark_failed(PermissionError("Permission denied: /x"))
    assert failed.error_details == "Permission denied: /x"
    with pytest.raises(ValueError, match="negative"):
        Batch().mark_successful(-1)


def test_batch_started_is_the_keyword_made_batch():
    """``Batch.started`` (the positional path a worker takes per directory) gives the batch the
    keyword constructor gives: every field, defaults included, and a fresh id each time."""
    task = Task(session_id=uuid.uuid4())
    given = {"session_id": task.session_id, "unit": "/d", "unit_hash": "ab" * 16}
    fast = Batch.started(task_id=task.pk, expected_items=3, checkpoint={"unit": "/d"}, **given)
    slow = Batch(task=task, expected_items=3, checkpoint={"unit": "/d"}, **given)
    slow.mark_timeline_started()
    fields = [f.attname for f in Batch._meta.concrete_fields]
    different = {"id", "started_at", "last_update"}
    assert {f: getattr(fast, f) for f in fields if f not in different} == {
        f: getattr(slow, f) for f in fields if f not in different
    }
    assert fast.status == BatchStatus.IN_PROGRESS and fast.items_processed == 0
    assert fast.started_at == fast.last_update is not None and fast.completed_at is None
    assert fast.id.version == 7 and fast.id != Batch.started(**given, task_id=task.pk).id
    assert fast._state.adding
    with pytest.raises(TypeError, match="no field 'task'"):
        Batch.started(task=task, **given)


def test_is_stalled_only_when_in_progress_and_quiet():
    from datetime import timedelta

    from django.utils import timezone

    old = timezone.now() - timedelta(hours=1)
    assert SessionState(status=SessionStatus.IN_PROGRESS, last_update=old).is_stalled(
        timedelta(minutes=15)
    )
    assert not SessionState(status=SessionStatus.IN_PROGRESS).is_stalled(timedelta(minutes=15))
    assert not SessionState(status=SessionStatus.COMPLETED, last_update=old).is_stalled(
        timedelta(minutes=15)
    )
