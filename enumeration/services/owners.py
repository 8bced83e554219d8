"""Who holds a lease, and whether that process is certainly gone.

A lease expires on its own; this only makes a crash cheaper to recover from. A worker names
itself ``host:boot:pid-namespace:pid:start:nonce``: the kernel's boot id
(``/proc/sys/kernel/random/boot_id``, new at every boot of every machine), the PID namespace, and
the process's start time in clock ticks since boot (``/proc/<pid>/stat``). Another process of the
same boot and PID namespace can look the owner up: no such process, or one that started at
another time (its pid reused), means the owner is gone, and its tasks need not wait for their
leases to run out.

Host and namespace alone would not do: the initial PID namespace has the same id on every Linux
machine, so two machines with one hostname (cloned VMs, containers with a fixed hostname) would
each find the other's live workers missing. The boot id tells them apart.

Anything else (another boot, another namespace, no ``/proc`` or no boot id, a ``/proc`` that hides
other users' processes, an owner named some other way) is not known to be gone, and the lease
decides as before. That includes owners named the way Census did before boot ids
(``host:pid-namespace:pid:start:nonce``): such a name cannot say which machine made it, so a worker
killed before an upgrade has its tasks back when its leases expire.

Wrongly calling an owner gone would cost work, not correctness: the owner's next write finds
its lease taken and stops (``LeaseLost``), and the next claimant resumes from what was staged.
"""

import functools
import os
import socket
import uuid

# What ``_start_ticks`` says of a zombie: the process has exited, its parent has not yet
# collected it.
_EXITED = "exited"


def _start_ticks(pid: int) -> str | None:
    """The process's start time since boot, in clock ticks; ``_EXITED`` for a zombie; None when
    /proc has no entry for it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: fields 3 (the state)
    # and 22 (the start time) are counted from its end.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return _EXITED
    return fields[19].decode()


@functools.cache
def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return None


@functools.cache
def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


@functools.cache
def _sees_every_process() -> bool:
    """Whether a missing /proc entry means a missing process: not so under ``hidepid`` (a
    hardened /proc hides other users' processes), which hides init's entry from a non-root
    process. A pid seen with another start time is proof enough either way."""
    return os.access("/proc/1/stat", os.R_OK)


def owner_identity() -> str:
    """This process's name as a lease owner (unique per process start)."""
    nonce = uuid.uuid4().hex[:8]
    pid = os.getpid()
    boot, namespace, start = _boot_id(), _pid_namespace(), _start_ticks(pid)
    if boot is None or namespace is None or start is None:  # a name no one can check
        return f"{socket.gethostname()}:{pid}:{nonce}"
    return f"{socket.gethostname()}:{boot}:{namespace}:{pid}:{start}:{nonce}"


def owner_is_gone(owner: str) -> bool:
    """True only when ``owner`` names a process of this boot and PID namespace that has exited."""
    parts = owner.rsplit(":", 5)
    if len(parts) != 6:
        return False
    host, boot, namespace, pid, start, _nonce = parts
    if (
        host != socket.gethostname()
        or boot != _boot_id()
        or namespace != _pid_namespace()
        or not pid.isdigit()
    ):
        return False
    seen = _start_ticks(int(pid))
    if seen is None:  # no entry: gone, unless this /proc hides other users' processes
        return _sees_every_process()
    return seen != start  # exited, or its pid reused by a process started since
