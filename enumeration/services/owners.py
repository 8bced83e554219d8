"""Who holds a lease, and whether that process is certainly gone.

A lease expires on its own; this only makes a crash cheaper to recover from. A worker names
itself ``host:pid-namespace:pid:start:nonce``, the start being the process's start time in
clock ticks since boot (``/proc/<pid>/stat``). Another process on the same host and in the same
PID namespace can look the owner up: no such process, or one that started at another time (its
pid reused), means the owner is gone, and its tasks need not wait for their leases to run out.
Anything else (another host, another namespace, no ``/proc``, a ``/proc`` that hides other
users' processes, an owner named some other way) is not known to be gone, and the lease decides
as before.

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
def _sees_every_process() -> bool:
    """Whether a missing /proc entry means a missing process: not so under ``hidepid`` (a
    hardened /proc hides other users' processes), which hides init's entry from a non-root
    process. A pid seen with another start time is proof enough either way."""
    return os.access("/proc/1/stat", os.R_OK)


def owner_identity() -> str:
    """This process's name as a lease owner (unique per process start)."""
    nonce = uuid.uuid4().hex[:8]
    pid = os.getpid()
    namespace, start = _pid_namespace(), _start_ticks(pid)
    if namespace is None or start is None:  # no /proc here: a name no one can check
        return f"{socket.gethostname()}:{pid}:{nonce}"
    return f"{socket.gethostname()}:{namespace}:{pid}:{start}:{nonce}"


def owner_is_gone(owner: str) -> bool:
    """True only when ``owner`` names a process of this host and PID namespace that has exited."""
    parts = owner.rsplit(":", 4)
    if len(parts) != 5:
        return False
    host, namespace, pid, start, _nonce = parts
    if host != socket.gethostname() or namespace != _pid_namespace() or not pid.isdigit():
        return False
    seen = _start_ticks(int(pid))
    if seen is None:  # no entry: gone, unless this /proc hides other users' processes
        return _sees_every_process()
    return seen != start  # exited, or its pid reused by a process started since
