import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.trees", "tests.fixtures.workers"]


@pytest.fixture
def runs_without_budget(monkeypatch):
    """For the retention tasks, which spend half their soft time limit and send themselves
    again for the rest: give them no time, run their re-sends in process (eager, as a worker
    takes them one after another), and record what each run of ``module.name``, the service a
    task calls, returned. Call it with the module and the name; it returns the list."""
    from config.celery import app as celery_app
    from enumeration import tasks

    def record(module, name: str) -> list:
        runs: list = []
        real = getattr(module, name)

        def counted(**kwargs):
            runs.append(real(**kwargs))
            return runs[-1]

        monkeypatch.setattr(module, name, counted)
        return runs

    monkeypatch.setattr(tasks, "_purge_seconds", lambda: 0)
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)
    return record


@pytest.fixture
def tmpfs_path():
    """A directory on tmpfs, which keeps modification times far beyond a datetime's range (the
    test machine's ext4 clamps them to 1901-2446)."""
    if not os.path.isdir("/dev/shm"):
        pytest.fail("/dev/shm (tmpfs) is needed for this test")
    path = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="census-test-"))
    yield path
    shutil.rmtree(path)
