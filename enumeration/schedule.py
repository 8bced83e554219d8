"""The enumeration engine's periodic jobs (installed by ``config.periodic``)."""

from config.periodic import PeriodicJob

PERIODIC_JOBS = (
    PeriodicJob("census: reaper", "enumeration.tasks.reap_tasks", 15),
    PeriodicJob("census: pipeliner safety net", "enumeration.tasks.pipeline_sweep", 30),
    PeriodicJob("census: stalled sessions", "enumeration.tasks.detect_stalled_sessions", 60),
    PeriodicJob("census: outbox dispatch", "enumeration.tasks.dispatch_events", 30),
    PeriodicJob("census: session retention", "enumeration.tasks.purge_sessions", 86400),
    PeriodicJob("census: outbox retention", "enumeration.tasks.prune_events", 3600),
)
