"""The network monitor's periodic jobs (installed by ``config.periodic``)."""

from django.conf import settings

from config.periodic import PeriodicJob

PERIODIC_JOBS = (
    PeriodicJob(
        "nms: scheduler tick",
        "nms.tasks_monitoring.scheduler_tick",
        max(1, int(settings.CENSUS_NMS["TICK_SECONDS"])),
    ),
    PeriodicJob("nms: metrics retention", "nms.tasks_monitoring.metrics_retention", 3600),
    # Discovery runs whose message died with the broker (a Redis that keeps nothing on disk).
    PeriodicJob("nms: discovery safety net", "nms.tasks.resend_discovery_runs", 300),
)
