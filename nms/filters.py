"""One FilterSet per model: the API's query parameters, reused by the admin's list filters.

Relations are filtered by id with ``NumberFilter``: an unknown id simply matches nothing, and a
filter costs no query to load the related row.
"""

from django_filters import rest_framework as filters

from config.filters import FilterSet
from nms.models import (
    CredentialProfile,
    Device,
    DeviceEvent,
    DiscoveryProfile,
    DiscoveryRun,
    DiscoveryRunTarget,
)


class CredentialProfileFilterSet(FilterSet):
    name = filters.CharFilter(lookup_expr="icontains", label="Name contains")

    class Meta:
        model = CredentialProfile
        fields = {"protocol": ["exact"]}


class DiscoveryProfileFilterSet(FilterSet):
    name = filters.CharFilter(lookup_expr="icontains", label="Name contains")
    credential = filters.NumberFilter(field_name="credential_id", label="Credential profile id")

    class Meta:
        model = DiscoveryProfile
        fields = {"protocol": ["exact"], "auto_provision": ["exact"]}


class DiscoveryRunFilterSet(FilterSet):
    profile = filters.NumberFilter(field_name="profile_id", label="Discovery profile id")

    class Meta:
        model = DiscoveryRun
        fields = {"status": ["exact"], "created_at": ["gte", "lte"]}


class DiscoveryRunTargetFilterSet(FilterSet):
    run = filters.NumberFilter(field_name="run_id", label="Discovery run id")

    class Meta:
        model = DiscoveryRunTarget
        fields = {"outcome": ["exact"], "ip": ["exact"]}


class DeviceFilterSet(FilterSet):
    hostname = filters.CharFilter(lookup_expr="icontains", label="Host name contains")
    credential = filters.NumberFilter(field_name="credential_id", label="Credential profile id")
    discovery_profile = filters.NumberFilter(
        field_name="discovery_profile_id", label="Discovery profile id"
    )

    class Meta:
        model = Device
        fields = {
            "status": ["exact"],
            "protocol": ["exact"],
            "ip": ["exact"],
            "port": ["exact"],
            "should_ping": ["exact"],
            "last_poll_success": ["exact"],
        }


class DeviceEventFilterSet(FilterSet):
    device = filters.NumberFilter(field_name="device_id", label="Device id")

    class Meta:
        model = DeviceEvent
        fields = {"kind": ["exact"], "reason": ["exact"], "occurred_at": ["gte", "lte"]}
