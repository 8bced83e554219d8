"""Typed access to the CENSUS settings block."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings


@dataclass(frozen=True)
class EngineSettings:
    listing_batch_size: int
    unit_memory_entries: int
    group_commit_entries: int
    pipeline_group_size: int
    classification_group_size: int
    lease: timedelta
    max_attempts: int
    resend_after: timedelta
    stall_after: timedelta
    test_pause_listing: str


def engine_settings() -> EngineSettings:
    c = settings.CENSUS
    return EngineSettings(
        listing_batch_size=c["LISTING_BATCH_SIZE"],
        unit_memory_entries=c["UNIT_MEMORY_ENTRIES"],
        group_commit_entries=c["GROUP_COMMIT_ENTRIES"],
        pipeline_group_size=c["PIPELINE_GROUP_SIZE"],
        classification_group_size=c["CLASSIFICATION_GROUP_SIZE"],
        lease=timedelta(seconds=c["LEASE_SECONDS"]),
        max_attempts=c["MAX_ATTEMPTS"],
        resend_after=timedelta(seconds=c["RESEND_AFTER_SECONDS"]),
        stall_after=timedelta(seconds=c["STALL_SECONDS"]),
        test_pause_listing=c["TEST_PAUSE_LISTING"],
    )
