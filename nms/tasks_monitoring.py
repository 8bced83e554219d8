"""Celery tasks of the network monitor's scheduler, poller and metrics: thin edges that take ids,
call one service and report. Registered from ``NmsConfig.ready`` (Celery autodiscovers only
``tasks`` modules).

Every task is safe to run twice: the tick claims with a conditional UPDATE, a poll re-reads its
devices and claims them (a second delivery finds them polled and does nothing), retention deletes
what is old whenever it runs.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from nms.services import metrics, poller, scheduler


def _poll_time_limit() -> int:
    batch = int(settings.CENSUS_NMS["POLL_BATCH_SIZE"])
    return int(poller.poll_batch_timeout(batch)) + 60


@shared_task(ignore_result=True)
def scheduler_tick() -> dict:
    result = scheduler.scheduler_tick()
    return {
        "claimed": result.claimed,
        "unreachable": len(result.unreachable),
        "dispatched": result.qualified,
        "messages": result.messages,
    }


@shared_task(
    acks_late=True,
    ignore_result=True,
    soft_time_limit=_poll_time_limit(),
    time_limit=_poll_time_limit() + 30,
)
def poll_devices(device_ids: list[int], dispatched_at: str) -> dict:
    outcome = poller.devices_poll(device_ids=device_ids, dispatched_at=dispatched_at)
    return {
        "polled": outcome.polled,
        "succeeded": len(outcome.succeeded),
        "failed": len(outcome.failed),
        "skipped": outcome.skipped,
    }


@shared_task(acks_late=True, ignore_result=True)
def poll_batches_send(batches: list[list[int]], dispatched_at: str) -> int:
    """A share of a burst the tick handed over: publish its poll batches. Run twice, it sends
    them twice, and each device's poll claim lets one of the two through."""
    return poller.poll_batches_publish(batches, dispatched_at)


@shared_task(ignore_result=True)
def metrics_retention() -> int:
    return metrics.metric_samples_prune()
