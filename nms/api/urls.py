"""The NMS API, mounted at /api/nms/ by config.urls.

Paths take an optional trailing slash (``/api/nms/devices/7/provision`` and ``.../provision/``).
"""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from nms.api.views import (
    CredentialProfileViewSet,
    DeviceViewSet,
    DiscoveryProfileViewSet,
    DiscoveryRunViewSet,
)


class OptionalSlashRouter(SimpleRouter):
    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("credential_profiles", CredentialProfileViewSet, basename="nms-credential-profile")
router.register("discovery_profiles", DiscoveryProfileViewSet, basename="nms-discovery-profile")
router.register("discovery_runs", DiscoveryRunViewSet, basename="nms-discovery-run")
router.register("devices", DeviceViewSet, basename="nms-device")

urlpatterns = [
    *router.urls,
    path("", include("nms.api.metrics_urls")),
]
