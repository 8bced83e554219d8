"""The embedded default's worker, in process, straight from the database (which is the queue in
every mode; a broker only delivers wake-up calls).

Two forms: ``session_drain`` runs one session's tasks in the foreground until it ends (the
management commands' ``--wait``); ``background_worker_start`` gives a long-lived process (the
embedded default's web process) a thread that runs every active session's tasks, woken by the
messages this process sends and by a poll of the database.
"""

import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from time import monotonic, sleep

from django.db import close_old_connections
from django.utils.module_loading import import_string

from config.periodic import PeriodicJob
from enumeration.choices import SessionStatus, TaskStatus
from enumeration.models import SessionState, Task
from enumeration.models.sessions import ACTIVE_SESSION_STATUSES
from enumeration.schedule import PERIODIC_JOBS
from enumeration.services.dispatch import RUNNABLE_KINDS
from enumeration.services.engine import task_run, worker_identity
from enumeration.services.pipeliner import pipeline_advance
from enumeration.services.retention import sessions_purge_marked
from enumeration.services.sessions import session_refresh_status, tasks_reap

logger = logging.getLogger(__name__)

# How often the background worker looks at the database when no message woke it: work another
# process created (``manage.py enumerate`` in a shell) or a lease that ran out.
BACKGROUND_POLL_SECONDS = 2.0


def _next_pending_task(session_id: uuid.UUID | None = None) -> uuid.UUID | None:
    """The oldest pending task this loop runs: of one session, or of any active session."""
    tasks = Task.objects.filter(kind__in=RUNNABLE_KINDS, status=TaskStatus.PENDING)
    if session_id is not None:
        tasks = tasks.filter(session_id=session_id)
    else:
        tasks = tasks.filter(
            session__status__in=ACTIVE_SESSION_STATUSES, session__purge_started_at__isnull=True
        )
    return tasks.order_by("created_at").values_list("pk", flat=True).first()


def session_drain(
    *,
    session_id: uuid.UUID,
    on_progress: Callable[[SessionState], None] | None = None,
    idle_sleep: float = 0.5,
) -> SessionState:
    """Run the session's tasks here until it is no longer active. Returns it, finished."""
    worker_id = worker_identity()
    while True:
        next_task = _next_pending_task(session_id)
        if next_task is not None:
            task_run(task_id=next_task, worker_id=worker_id)
        else:
            tasks_reap()
            pipeline_advance(session_id=session_id)
            session = session_refresh_status(session_id=session_id)
            if (
                session.status not in ACTIVE_SESSION_STATUSES
                or session.status == SessionStatus.STALLED
            ):
                if on_progress:
                    on_progress(session)
                return session
            sleep(idle_sleep)  # a task is running elsewhere: wait for it
        if on_progress:
            on_progress(SessionState.objects.get(pk=session_id))


def sessions_work(*, worker_id: str) -> int:
    """One pass of the background worker over every active session: expired leases taken
    back, every pending task run, then the Reaper again, the Pipeliner and the sessions'
    closing. Returns how many tasks it ran. (The rest of beat's jobs: ``PeriodicJobsDue``.)"""
    ran, unclaimed = 0, None
    # First the leases that ran out (say while this process was down): their tasks run in this
    # pass, before the periodic jobs would find their sessions quiet and call them stalled.
    tasks_reap()
    while (task_id := _next_pending_task()) is not None:
        if task_id == unclaimed:
            break  # still pending, yet this process could not claim it: left for the next pass
        outcome = task_run(task_id=task_id, worker_id=worker_id)
        ran += 1
        unclaimed = task_id if outcome.status == "skipped" else None
    tasks_reap()
    active = SessionState.objects.filter(
        status__in=ACTIVE_SESSION_STATUSES, purge_started_at__isnull=True
    ).values_list("pk", flat=True)
    for session_id in active:
        pipeline_advance(session_id=session_id)
        session_refresh_status(session_id=session_id)
    return ran


class PeriodicJobsDue:
    """beat's part on the embedded default, which has no beat: the enumeration engine's periodic
    jobs (the outbox sweep, stalled sessions, retention, ...), each run here when its interval
    has passed since its last run, and all of them on the first call, as beat runs a job it has
    never run. (The network monitor's jobs need PostgreSQL, so they are not among them.)"""

    def __init__(self, jobs: Iterable[PeriodicJob] = PERIODIC_JOBS) -> None:
        self._jobs = tuple(jobs)
        self._last_run: dict[str, float] = {}

    def run(self) -> list[str]:
        """Run the jobs that are due; returns their names. A job that fails is logged and
        tried again at its next interval; the others still run."""
        ran = []
        for job in self._jobs:
            last = self._last_run.get(job.name)
            if last is not None and monotonic() - last < job.every_seconds:
                continue
            self._last_run[job.name] = monotonic()
            ran.append(job.name)
            try:
                import_string(job.task)()
            except Exception:
                logger.exception("in-process worker: periodic job %r failed", job.name)
        return ran


class _BackgroundWorker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._purge = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="census-in-process-worker", daemon=True
                )
                self._thread.start()

    def wake(self) -> bool:
        if self._thread is None or not self._thread.is_alive():
            return False
        self._wake.set()
        return True

    def purge_soon(self) -> bool:
        if self._thread is None or not self._thread.is_alive():
            return False
        self._purge.set()
        self._wake.set()
        return True

    def _run(self) -> None:
        worker_id = worker_identity()
        periodic = PeriodicJobsDue()
        logger.info("in-process worker started")
        while True:
            self._wake.clear()
            # Each step on its own: one that keeps failing (a session whose tasks raise) must
            # not starve the others. The database is the queue: what failed is still there.
            steps: list[tuple[str, Callable[[], object]]] = [
                ("the sessions' tasks", partial(sessions_work, worker_id=worker_id)),
                ("the periodic jobs", periodic.run),
            ]
            if self._purge.is_set():
                self._purge.clear()  # before the purge: a request made during it is kept
                steps.append(("deleting the marked sessions", sessions_purge_marked))
            for name, step in steps:
                try:
                    step()
                except Exception:
                    logger.exception("in-process worker: %s failed", name)
                finally:
                    close_old_connections()
            self._wake.wait(BACKGROUND_POLL_SECONDS)


_background = _BackgroundWorker()


def background_worker_start() -> None:
    """Give this process a background worker (once; a no-op when it has one). The first pass
    resumes every active session, as the Orchestrator does when a worker starts; every pass
    also runs beat's periodic jobs that are due (``PeriodicJobsDue``)."""
    _background.start()


def background_worker_wake() -> bool:
    """Wake this process's background worker now; False when this process has none."""
    return _background.wake()


def background_worker_purge_soon() -> bool:
    """Have this process's background worker delete the sessions marked for deletion, now
    rather than in the caller's thread (a web request); False when this process has none."""
    return _background.purge_soon()
