"""Reads of the network-monitoring domain, shared by the API, the admin and the commands.

Writes go through ``nms.services``; nothing here changes a row.
"""

from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery

from nms.models import (
    CredentialProfile,
    Device,
    DeviceEvent,
    DiscoveryProfile,
    DiscoveryRun,
    DiscoveryRunTarget,
    MetricSample,
)


def credential_profile_list() -> QuerySet[CredentialProfile]:
    return CredentialProfile.objects.all()


def discovery_profile_list() -> QuerySet[DiscoveryProfile]:
    return DiscoveryProfile.objects.select_related("credential")


def discovery_run_list() -> QuerySet[DiscoveryRun]:
    return DiscoveryRun.objects.select_related("profile")


def discovery_run_targets(*, run_id: int) -> QuerySet[DiscoveryRunTarget]:
    return DiscoveryRunTarget.objects.filter(run_id=run_id).order_by("pk")


def with_first_targets(runs: QuerySet[DiscoveryRun], count: int) -> QuerySet[DiscoveryRun]:
    """``runs`` with the first ``count`` targets of each, in the order they were expanded, as
    ``first_targets`` (one query, a window per run; a sliced prefetch needs its own attribute)."""
    first = DiscoveryRunTarget.objects.order_by("pk")[:count]
    return runs.prefetch_related(Prefetch("targets", queryset=first, to_attr="first_targets"))


def discovery_run_target_list() -> QuerySet[DiscoveryRunTarget]:
    return DiscoveryRunTarget.objects.all()


def discovery_run_outcome_counts(*, run_id: int) -> dict[str, int]:
    rows = (
        DiscoveryRunTarget.objects.filter(run_id=run_id)
        .values_list("outcome")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return dict(rows)


def _latest_sample(field: str) -> Subquery:
    # One index probe per device on metric_device_time (device, -collected_at).
    return Subquery(
        MetricSample.objects.filter(device_id=OuterRef("pk"))
        .order_by("-collected_at")
        .values(field)[:1]
    )


def device_list(*, with_latest_sample: bool = False) -> QuerySet[Device]:
    devices = Device.objects.select_related("credential", "discovery_profile")
    if with_latest_sample:
        devices = devices.annotate(latest_sample_at=_latest_sample("collected_at"))
    return devices


def device_latest_sample(*, device_id: int) -> MetricSample | None:
    return MetricSample.objects.filter(device_id=device_id).order_by("-collected_at").first()


def device_events(*, device_id: int) -> QuerySet[DeviceEvent]:
    return DeviceEvent.objects.filter(device_id=device_id).order_by("-occurred_at", "-pk")
