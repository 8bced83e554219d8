"""The README's first command, on the embedded default: SQLite and an in-process worker, with no
DATABASE_URL and no broker in the environment."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures.workers import manage_py

REPO = Path(__file__).resolve().parents[1]


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    """This environment without a database, a broker or a secret key: the embedded default,
    its SQLite file under ``tmp_path``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY")
    }
    env["CENSUS_VAR_DIR"] = str(tmp_path / "var")
    return env


@pytest.mark.slow
def test_make_demo_runs_on_the_embedded_default(tmp_path):
    # Given an environment with no database and no broker configured
    env = _embedded_env(tmp_path)
    venv = Path(sys.executable).parent.parent
    # When the README's first command runs (on a small tree, in this checkout's venv)
    result = subprocess.run(
        [
            "make",
            "demo",
            f"VENV={venv}",
            f"DEMO_TREE={tmp_path / 'tree'}",
            "DEMO_DIRECTORIES=60",
            "DEMO_FILES=600",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Then it enumerates the whole sample tree and says so
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "COMPLETED: 663 items (601 files, 60 directories, 2 other: symlinks, devices, sockets) "
        "in 61 directories listed (the target's included), 0 failed" in result.stdout
    ), result.stdout
    # And it did so in SQLite, under CENSUS_VAR_DIR
    db = sqlite3.connect(tmp_path / "var" / "census.sqlite3")
    assert db.execute("select status from enumeration_sessionstate").fetchall() == [("COMPLETED",)]
    # 601 files, 60 directories, 2 symlinks
    assert db.execute("select count(*) from task_output_records").fetchone() == (663,)
    # And every file is in exactly one CLASSIFICATION task, named in a few ranges of ids: each
    # commit gave its files the lowest ids, so the directories between them break no range
    files = {
        i for (i,) in db.execute("select id from task_output_records where record_type = 'FILE'")
    }
    ranges = [
        r
        for (payload,) in db.execute(
            "select payload from enumeration_task where kind = 'CLASSIFICATION'"
        )
        for r in json.loads(payload)["record_id_ranges"]
    ]
    classified = [i for first, last in ranges for i in range(first, last + 1)]
    assert len(classified) == len(set(classified)) and set(classified) == files
    assert len(ranges) <= 10, ranges


def test_the_monitor_commands_say_in_one_line_that_they_need_postgresql(tmp_path):
    for command in (["nms_tick"], ["nms_poll", "1"]):
        result = manage_py(_embedded_env(tmp_path), *command)
        assert result.returncode == 1, result.stderr
        assert "needs PostgreSQL" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_sample_trees_symlink_loop_points_at_its_root_from_a_relative_path(
    tmp_path, monkeypatch
):
    from enumeration.sampletree import sample_tree_create

    monkeypatch.chdir(tmp_path)
    tree = sample_tree_create("relative", directories=12, files=20)

    loop = tree.symlinks[0]
    assert os.readlink(loop) == os.fsencode(tmp_path / "relative")
    assert os.path.samefile(loop, tmp_path / "relative")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(
    url: str, *, token: str | None = None, body: dict | None = None, method: str | None = None
) -> dict:
    """A JSON request to the web process under test (http://127.0.0.1 only)."""
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(  # noqa: S310  (loopback http, checked above)
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return {"http_status": response.status} | json.loads(response.read() or b"{}")


@pytest.mark.slow
def test_the_web_process_runs_the_sessions_the_api_starts_on_the_embedded_default(tmp_path):
    # Given the embedded default (no database, no broker configured), migrated, with a user
    from enumeration.sampletree import ground_truth, sample_tree_create

    env = _embedded_env(tmp_path) | {
        "DJANGO_SUPERUSER_USERNAME": "operator",
        "DJANGO_SUPERUSER_PASSWORD": "a-long-test-password-1",
        "DJANGO_SUPERUSER_EMAIL": "operator@example.invalid",
        "LOG_LEVEL": "WARNING",
    }
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--no-input", "-v", "0"], ["createsuperuser", "--no-input"]):
        subprocess.run([*manage, *command], cwd=REPO, env=env, check=True, timeout=120)
    tree = sample_tree_create(tmp_path / "tree", directories=40, files=300)
    # And a shell's `enumerate` without --wait, which has no worker of its own
    shell = subprocess.run(
        [*manage, "enumerate", str(tmp_path / "tree")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "runserver" in shell.stdout, shell.stdout
    # And an event whose dispatch after commit died with its process
    db = sqlite3.connect(tmp_path / "var" / "census.sqlite3")
    with db:
        db.execute(
            "INSERT INTO enumeration_domainevent (event_type, aggregate_type, aggregate_id, "
            "payload, occurred_at, attempts) VALUES ('TaskCreated', 'task', 'lost', '{}', "
            "'2026-01-01 00:00:00', 0)"
        )
    port = _free_port()
    server = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                token = _request(
                    f"{base}/auth/token/",
                    body={"username": "operator", "password": "a-long-test-password-1"},
                )["access"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "the web process did not start"
                time.sleep(0.2)
        # When the web process is up: it picks up the shell's session, and runs the API's
        second = tmp_path / "second"
        second.mkdir()
        for i in range(25):
            (second / f"f{i}").write_text("x")
        started = _request(f"{base}/sessions/", token=token, body={"path": str(second)})
        sessions = {}
        while time.monotonic() < deadline + 120:
            sessions = {s["id"]: s for s in _request(f"{base}/sessions/", token=token)["results"]}
            if all(s["status"] == "COMPLETED" for s in sessions.values()):
                break
            time.sleep(0.3)
        # Then both sessions end COMPLETED, each with exactly what is on disk
        assert len(sessions) == 2
        assert {s["status"] for s in sessions.values()} == {"COMPLETED"}, sessions
        truth = ground_truth(tree.root)
        first = next(s for s in sessions.values() if s["id"] != started["id"])
        assert first["counters"]["items_found"] == len(truth)
        assert sessions[started["id"]]["counters"]["items_found"] == 25
        # And a session deleted through the API is marked at once and deleted by the web
        # process's worker, outside the request
        deleting = _request(f"{base}/sessions/{first['id']}/", token=token, method="DELETE")
        assert deleting["http_status"] == 202 and deleting["timeline"]["purge_started_at"], deleting
        while time.monotonic() < deadline + 180:
            try:
                _request(f"{base}/sessions/{first['id']}/", token=token)
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the marked session was never deleted")
        remaining = _request(f"{base}/sessions/", token=token)["results"]
        assert [s["id"] for s in remaining] == [started["id"]]
        # And the web process's worker did beat's part too: the outbox sweep sent the lost event
        (dispatched,) = db.execute(
            "SELECT dispatched_at FROM enumeration_domainevent WHERE aggregate_id = 'lost'"
        ).fetchone()
        assert dispatched is not None
    finally:
        db.close()
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_ctrl_c_during_wait_says_how_to_carry_on_and_resume_finishes_exactly(tmp_path):
    # Given the embedded default, and a listing that will pause in the middle of a directory
    env = _embedded_env(tmp_path) | {
        "LOG_LEVEL": "WARNING",
        "CENSUS_LISTING_BATCH_SIZE": "10",
        "CENSUS_UNIT_MEMORY_ENTRIES": "0",  # "big" is staged past its first batch
        "CENSUS_TEST_PAUSE_LISTING": f"big:1:60:{tmp_path / 'paused'}",
    }
    tree = tmp_path / "tree"
    (tree / "big").mkdir(parents=True)
    (tree / "small").mkdir()
    for i in range(35):
        (tree / "big" / f"f{i}").write_text("x")
    (tree / "small" / "g").write_text("y")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], cwd=REPO, env=env, check=True)
    waiting = subprocess.Popen(
        [*manage, "enumerate", str(tree), "--wait"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "paused").exists():
        assert waiting.poll() is None, waiting.communicate()
        assert time.monotonic() < deadline, "the listing never paused"
        time.sleep(0.1)
    # When the operator presses Ctrl-C in the middle of the directory
    waiting.send_signal(signal.SIGINT)
    out, err = waiting.communicate(timeout=60)
    # Then the command stops with one line saying how to carry on, not a traceback
    assert waiting.returncode == 130, out + err
    assert "Traceback" not in err
    session_id = out.split()[1]
    assert f"manage.py resume {session_id} --wait" in err
    # And resuming it finishes with exactly what is on disk
    resumed = subprocess.run(
        [*manage, "resume", session_id, "--wait"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"session {session_id} COMPLETED" in resumed.stdout, resumed.stdout + resumed.stderr
    db = sqlite3.connect(tmp_path / "var" / "census.sqlite3")
    keys = [k for (k,) in db.execute("select object_key from task_output_records")]
    assert len(keys) == len(set(keys)) == 35 + 1 + 2  # the files, and the two directories
    # And on SQLite too every unit's Batch bounds its records' ids, the staged one included
    # (the API finds a session's records by them)
    outside = db.execute(
        "select count(*) from task_output_records r join enumeration_batch b "
        "on r.batch_id = b.id where not r.id between b.first_record_id and b.last_record_id"
    ).fetchone()
    unbounded = db.execute(
        "select count(*) from enumeration_batch where items_processed > 0 "
        "and (first_record_id is null or last_record_id is null)"
    ).fetchone()
    assert (outside, unbounded) == ((0,), (0,))


@pytest.mark.parametrize("process", [["worker", "-Q", "default", "-c", "1"], ["beat"]])
def test_a_worker_or_beat_without_a_broker_refuses_to_start_saying_why(tmp_path, process):
    # Given no broker configured (the embedded default), its database migrated
    env = _embedded_env(tmp_path)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True
    )
    # When a worker or beat is started
    result = subprocess.run(
        [str(Path(sys.executable).with_name("celery")), "-A", "config", *process],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then it stops at once, saying what is missing, rather than waiting on a transport
    # no other process shares
    assert result.returncode == 1, result.stderr[-2000:]
    assert "CELERY_BROKER_URL is not set" in result.stdout + result.stderr


@pytest.mark.parametrize("size", ["0", "-5", "10001"])
def test_a_listing_batch_size_out_of_range_is_refused(tmp_path, size):
    # Given a batch size with which a listing would end at once (or break SQLite's exclusion)
    env = _embedded_env(tmp_path) | {"CENSUS_LISTING_BATCH_SIZE": size}
    # When Census starts, it refuses, saying what is allowed
    result = manage_py(env, "check")
    assert result.returncode != 0
    assert f"CENSUS_LISTING_BATCH_SIZE ({size}) must be between 1 and 10000" in result.stderr


def test_a_visibility_timeout_no_longer_than_the_task_time_limit_is_refused(tmp_path):
    # Given a broker's visibility timeout that a task at its time limit outlasts
    env = _embedded_env(tmp_path) | {
        "CELERY_TASK_TIME_LIMIT": "7200",
        "CELERY_VISIBILITY_TIMEOUT": "3600",
    }
    # When Census starts, it refuses, naming both
    result = manage_py(env, "check")
    assert result.returncode != 0
    assert "CELERY_VISIBILITY_TIMEOUT (3600 s) must be longer than" in result.stderr


def test_migrating_the_engine_alone_on_a_new_database_leaves_the_jobs_to_the_full_migrate(
    tmp_path,
):
    # Given a new database (the embedded default's SQLite file)
    env = _embedded_env(tmp_path)
    # When only the engine's migrations run: beat's tables are not made yet
    alone = manage_py(env, "migrate", "enumeration", "--no-input", "-v", "0")
    # Then it succeeds, and the full migrate writes the periodic jobs
    assert alone.returncode == 0, alone.stderr
    full = manage_py(env, "migrate", "--no-input", "-v", "0")
    assert full.returncode == 0, full.stderr
    jobs = manage_py(
        env,
        "shell",
        "-v",
        "0",
        "-c",
        "from django_celery_beat.models import PeriodicTask; "
        "print(PeriodicTask.objects.filter(name='census: reaper', enabled=True).count())",
    )
    assert jobs.stdout.split() == ["1"], jobs.stderr
