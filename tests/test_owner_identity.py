"""A lease owner's name says which boot of which machine made it: a machine with the same hostname
and PID namespace (a cloned VM, a container with a fixed hostname) does not take another's live
worker for gone because its pid is missing here."""

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from enumeration.choices import TaskStatus
from enumeration.models import Task
from enumeration.services import owners
from enumeration.services.engine import task_claim
from enumeration.services.owners import owner_identity, owner_is_gone
from enumeration.services.sessions import enumerate_target, tasks_reap

ANOTHER_BOOT = "0b5e4a6c-7d8e-4f90-a1b2-c3d4e5f60718"


def _name_of_an_exited_process(*, boot_id: str | None = "this") -> str:
    """The owner name another process gave itself, that process having exited (and been
    collected) by the time this returns: made on this machine, or, with ``boot_id``, as if on a
    machine whose kernel has that boot id (None: a kernel with none to read)."""
    pretend = "" if boot_id == "this" else f"owners._boot_id = lambda: {boot_id!r}; "
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from enumeration.services import owners; {pretend}print(owners.owner_identity())",
        ],
        capture_output=True,
        check=True,
        cwd=os.getcwd(),
        timeout=30,
    )
    return proc.stdout.decode().strip()


def _assert_made_here_by_a_process_now_gone(identity: str) -> None:
    """The name has this hostname and PID namespace, and no process here has its pid."""
    assert identity.startswith(f"{socket.gethostname()}:")
    assert f":{owners._pid_namespace()}:" in identity
    pid = identity.split(":")[-3]
    assert pid.isdigit()
    assert not os.path.exists(f"/proc/{pid}")


def test_an_owner_on_another_machine_with_the_same_hostname_and_namespace_is_not_gone():
    # Given the name of a worker on a clone of this machine: same hostname, same (initial) PID
    # namespace, and a pid no process here has
    identity = _name_of_an_exited_process(boot_id=ANOTHER_BOOT)
    _assert_made_here_by_a_process_now_gone(identity)
    # Then it is not taken for gone: only its lease can tell
    assert not owner_is_gone(identity)


def test_an_owner_of_this_boot_whose_process_exited_is_gone():
    # Given the name of a worker of this boot that has exited
    identity = _name_of_an_exited_process()
    _assert_made_here_by_a_process_now_gone(identity)
    # Then it is gone
    assert owner_is_gone(identity)


def test_after_a_reboot_the_owners_of_the_boot_before_are_left_to_their_leases(monkeypatch):
    # Given the name of a worker that exited, and this process now on another boot (it cannot
    # tell a boot before from another machine)
    identity = _name_of_an_exited_process()
    monkeypatch.setattr(owners, "_boot_id", lambda: ANOTHER_BOOT)
    # Then it is not taken for gone
    assert not owner_is_gone(identity)


def test_an_owner_named_before_boot_ids_is_left_to_its_lease():
    # Given a worker of this host and namespace that has exited, named the old way (no boot
    # id): the same name a clone of this machine would have made
    host, _boot, rest = _name_of_an_exited_process().split(":", 2)
    old_style = f"{host}:{rest}"
    assert len(old_style.split(":")) == 5
    # Then it is not taken for gone: only its lease can tell
    assert not owner_is_gone(old_style)


def test_without_a_boot_id_an_owner_cannot_be_checked(monkeypatch):
    # Given a worker that exited on a kernel with no boot id to read
    identity = _name_of_an_exited_process(boot_id=None)
    # Then its name is one no one can check, and it is not taken for gone
    assert not owner_is_gone(identity)
    # And a process that cannot read the boot id takes no one for gone
    exited = _name_of_an_exited_process()
    monkeypatch.setattr(owners, "_boot_id", lambda: None)
    assert not owner_is_gone(exited)
    assert not owner_is_gone(owner_identity())


@pytest.mark.django_db(transaction=True)
def test_the_reaper_leaves_alone_a_task_leased_to_a_clone_of_this_machine(tmp_path):
    # Given a task leased, a minute left, to a worker of another machine with this hostname and
    # PID namespace, whose pid no process here has
    task = Task.objects.get(session=enumerate_target(path=tmp_path))
    clone = _name_of_an_exited_process(boot_id=ANOTHER_BOOT)
    assert task_claim(task_id=task.pk, worker_id=clone) is not None
    # When the Reaper runs
    result = tasks_reap()
    # Then the task stays with its owner
    assert result.requeued == 0
    task.refresh_from_db()
    assert task.status == TaskStatus.RUNNING
    assert task.lease_owner == clone
    assert task.lease_expires_at > timezone.now() + timedelta(seconds=1)
