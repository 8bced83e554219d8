import pytest
from django_celery_beat.models import PeriodicTask

from config.periodic import periodic_jobs, periodic_jobs_install


@pytest.mark.django_db
def test_migrate_installs_every_periodic_job_once():
    # Given a database migrated by the test run (post_migrate installed the jobs)
    jobs = periodic_jobs()
    assert {j.task for j in jobs} >= {
        "enumeration.tasks.reap_tasks",
        "enumeration.tasks.pipeline_sweep",
        "enumeration.tasks.detect_stalled_sessions",
        "enumeration.tasks.dispatch_events",
        "enumeration.tasks.purge_sessions",
    }
    # When the installer runs again
    periodic_jobs_install()
    # Then each job has exactly one enabled row with its interval and queue
    for job in jobs:
        row = PeriodicTask.objects.get(name=job.name)
        assert row.task == job.task
        assert row.enabled
        assert row.interval.every == job.every_seconds
        assert row.queue == job.queue
    assert PeriodicTask.objects.filter(name__in=[j.name for j in jobs]).count() == len(jobs)
