"""Celery tasks of the network monitor's discovery: thin edges that take ids and call one service.

The message carries a run id and nothing else; the service re-reads the run and claims its work
in the database, so a second delivery is harmless.
"""

import logging

from celery import shared_task

from nms.models import DiscoveryRun
from nms.services import discovery

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def run_discovery(run_id: int) -> str:
    try:
        return discovery.discovery_run_execute(run_id=run_id).status
    except DiscoveryRun.DoesNotExist:
        logger.info("discovery run %s no longer exists (its profile was deleted?)", run_id)
        return "GONE"


@shared_task(ignore_result=True)
def resend_discovery_runs() -> int:
    """Safety net for beat: re-send runs whose message may have died with the broker."""
    return len(discovery.discovery_runs_resend())
