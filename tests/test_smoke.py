import os
import subprocess
import sys

import pytest
from django.db import connection


@pytest.mark.django_db
def test_runs_on_postgresql():
    assert connection.vendor == "postgresql"


@pytest.mark.parametrize(("preset", "expected"), [(None, "1"), ("", "")])
def test_workers_skip_system_checks_unless_told_otherwise(preset, expected):
    # Celery's Django fix-up runs the system checks at worker start-up unless this is set
    env = {k: v for k, v in os.environ.items() if k != "CELERY_SKIP_CHECKS"}
    if preset is not None:
        env["CELERY_SKIP_CHECKS"] = preset
    shown = subprocess.run(
        [sys.executable, "-c", "import os, config.celery; print(os.environ['CELERY_SKIP_CHECKS'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert shown == expected


def test_compose_runs_the_procfiles_processes_with_the_same_commands():
    # Docker cannot run here: the compose file is kept right by reading it against the Procfile
    import re
    import shlex
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    procfile = {}
    for line in (repo / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        # ${VAR:-default} as the compose file spells it out: the default
        procfile[name.strip()] = shlex.split(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", command))
    services = yaml.safe_load((repo / "docker" / "compose.yml").read_text())["services"]
    # Census's own services (built from this repository), not postgres or redis
    compose = {name: service["command"] for name, service in services.items() if "build" in service}
    compose["release"] = compose.pop("migrate")
    assert procfile == compose
