"""Lease owners: a task whose owner is seen to be gone (a worker killed on this machine) goes
back to the queue at once, not when its lease runs out; an owner that cannot be checked keeps
its lease."""

import os
import socket
import subprocess
import sys

import pytest

from enumeration.choices import SessionStatus, TaskStatus
from enumeration.models import Task
from enumeration.services.engine import task_claim
from enumeration.services.inprocess import session_drain
from enumeration.services.owners import owner_identity, owner_is_gone
from enumeration.services.sessions import (
    enumerate_target,
    sessions_resume_active,
    tasks_reap,
)

PRINT_IDENTITY = "from enumeration.services.owners import owner_identity; print(owner_identity())"
_, BOOT, NAMESPACE, *_ = owner_identity().split(":")


def _identity_of_a_process(*, wait: bool = True) -> tuple[str, subprocess.Popen]:
    """The owner name of another process, which has exited by the time this returns (a zombie,
    when ``wait`` is false: exited, not yet collected by its parent)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PRINT_IDENTITY], stdout=subprocess.PIPE, cwd=os.getcwd()
    )
    identity = proc.stdout.read().decode().strip()
    proc.stdout.close()
    if wait:
        proc.wait(timeout=30)
    else:
        # Exited: its /proc entry says Z until it is collected.
        for _ in range(200):
            with open(f"/proc/{proc.pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            os.sched_yield()
    return identity, proc


def test_a_live_process_is_not_gone():
    assert not owner_is_gone(owner_identity())


def test_an_exited_process_is_gone_and_so_is_its_zombie():
    identity, _ = _identity_of_a_process()
    assert owner_is_gone(identity)
    zombie_identity, zombie = _identity_of_a_process(wait=False)
    try:
        assert owner_is_gone(zombie_identity)
    finally:
        zombie.wait(timeout=30)


def test_where_proc_hides_other_users_processes_a_missing_one_is_not_taken_for_gone(
    monkeypatch,
):
    # Given a /proc mounted with hidepid, as a process that cannot see init sees it
    from enumeration.services import owners

    exited, _ = _identity_of_a_process()
    monkeypatch.setattr(owners, "_sees_every_process", lambda: False)
    # Then a process it cannot find might be another user's live one: its lease decides
    assert not owner_is_gone(exited)
    # But a pid it can see with another start time is gone all the same
    host, boot, namespace, pid, start, nonce = owner_identity().split(":")
    assert owner_is_gone(f"{host}:{boot}:{namespace}:{pid}:{int(start) + 1}:{nonce}")


def test_a_reused_pid_is_told_apart_by_its_start_time():
    host, boot, namespace, pid, start, nonce = owner_identity().split(":")
    assert not owner_is_gone(f"{host}:{boot}:{namespace}:{pid}:{start}:{nonce}")
    assert owner_is_gone(f"{host}:{boot}:{namespace}:{pid}:{int(start) + 1}:{nonce}")


@pytest.mark.parametrize(
    "owner",
    [
        f"another-host:{BOOT}:{NAMESPACE}:1:1:abcd1234",  # another hostname: its lease decides
        f"{socket.gethostname()}:{BOOT}:1:999999999:1:abcd1234",  # another PID namespace
        f"{socket.gethostname()}:{NAMESPACE}:999999999:1:abcd1234",  # named before boot ids
        f"{socket.gethostname()}:{os.getpid()}:abcd1234",  # named where /proc could not tell
        "",
        "w1",
        "a:b:c:d:e",
        "a:b:c:d:e:f",
    ],
)
def test_an_owner_that_cannot_be_checked_is_not_gone(owner):
    assert not owner_is_gone(owner)


def _an_orphan_and_a_leased_task(tmp_path) -> tuple[Task, Task]:
    """Two sessions' tasks, each claimed with a minute of lease left: one by a process that has
    exited, one by this live process."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    dead_owner, _ = _identity_of_a_process()
    orphan = Task.objects.get(session=enumerate_target(path=tmp_path / "a"))
    leased = Task.objects.get(session=enumerate_target(path=tmp_path / "b"))
    assert task_claim(task_id=orphan.pk, worker_id=dead_owner) is not None
    assert task_claim(task_id=leased.pk, worker_id=owner_identity()) is not None
    return orphan, leased


@pytest.mark.django_db(transaction=True)
def test_the_reaper_takes_back_a_task_whose_owner_is_gone_before_its_lease_expires(tmp_path):
    # Given two sessions' tasks with a minute of lease left: one owned by a process that has
    # exited, one by this live process
    orphan, alive = _an_orphan_and_a_leased_task(tmp_path)
    # When the Reaper runs
    result = tasks_reap()
    # Then only the orphan is back in the queue, its attempt counted and the reason given
    assert result.requeued == 1
    orphan.refresh_from_db()
    assert orphan.status == TaskStatus.PENDING
    assert orphan.attempts == 1
    assert "ended with its process" in orphan.last_error
    alive.refresh_from_db()
    assert alive.status == TaskStatus.RUNNING
    # And the orphan's session runs to completion
    session = session_drain(session_id=orphan.session_id, idle_sleep=0.05)
    assert session.status == SessionStatus.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_a_task_whose_owners_keep_dying_fails_past_its_attempt_limit(tmp_path):
    session = enumerate_target(path=tmp_path)
    task = Task.objects.get(session=session)
    for _ in range(task.max_attempts):
        dead_owner, _ = _identity_of_a_process()
        assert task_claim(task_id=task.pk, worker_id=dead_owner) is not None
        tasks_reap()
    task.refresh_from_db()
    assert task.status == TaskStatus.FAILED
    assert f"ended with its process on attempt {task.max_attempts} of" in task.last_error


@pytest.mark.django_db(transaction=True)
def test_a_worker_starting_up_takes_back_the_tasks_of_one_killed_here(tmp_path):
    session = enumerate_target(path=tmp_path)
    task = Task.objects.get(session=session)
    dead_owner, _ = _identity_of_a_process()
    assert task_claim(task_id=task.pk, worker_id=dead_owner) is not None
    sessions_resume_active()
    task.refresh_from_db()
    assert task.status == TaskStatus.PENDING
    assert task.lease_owner == ""


@pytest.mark.django_db(transaction=True)
def test_a_message_for_a_task_leased_to_a_dead_process_runs_it_and_one_leased_to_a_live_one_not(
    tmp_path,
):
    from enumeration.services.engine import task_run

    orphan, leased = _an_orphan_and_a_leased_task(tmp_path)
    # A second delivery of a message, as task_reject_on_worker_lost makes one
    assert task_run(task_id=orphan.pk).status == "completed"
    assert task_run(task_id=leased.pk).status == "skipped"
    orphan.refresh_from_db()
    assert orphan.status == TaskStatus.COMPLETED
    assert orphan.attempts == 2
    leased.refresh_from_db()
    assert leased.status == TaskStatus.RUNNING
