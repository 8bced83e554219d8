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
        "enumeration.tasks.prune_events",
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
        # (a message beat could not deliver before the next run expires instead of piling up)
        assert row.expire_seconds == job.every_seconds
    assert PeriodicTask.objects.filter(name__in=[j.name for j in jobs]).count() == len(jobs)


@pytest.mark.django_db
def test_a_reinstall_keeps_what_an_operator_disabled_and_disables_jobs_gone_from_the_code():
    # Given a job an operator disabled in the admin, and rows of jobs the code no longer has
    # (one of Census's, and one an operator made)
    periodic_jobs_install()
    reaper = PeriodicTask.objects.get(name="census: reaper")
    reaper.enabled = False
    reaper.save()
    interval = reaper.interval
    PeriodicTask.objects.create(
        name="census: retired job", task="enumeration.tasks.gone", interval=interval
    )
    PeriodicTask.objects.create(name="their own job", task="elsewhere.task", interval=interval)
    # When the installer runs again (every migrate)
    periodic_jobs_install()
    # Then the disabled job stays disabled, Census's retired job is disabled, theirs is untouched
    assert not PeriodicTask.objects.get(name="census: reaper").enabled
    assert not PeriodicTask.objects.get(name="census: retired job").enabled
    assert PeriodicTask.objects.get(name="their own job").enabled
