"""The README's first command, on the embedded default: SQLite and an in-process worker, with no
DATABASE_URL and no broker in the environment."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_demo_runs_on_the_embedded_default(tmp_path):
    # Given an environment with no database and no broker configured
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY")
    }
    env["CENSUS_VAR_DIR"] = str(tmp_path / "var")
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
    assert "COMPLETED: 663 items (601 files, 60 directories)" in result.stdout, result.stdout
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


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY")
    }
    env["CENSUS_VAR_DIR"] = str(tmp_path / "var")
    return env


def test_the_monitor_commands_say_in_one_line_that_they_need_postgresql(tmp_path):
    for command in (["nms_tick"], ["nms_poll", "1"]):
        result = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=REPO,
            env=_embedded_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
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
