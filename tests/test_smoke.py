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
