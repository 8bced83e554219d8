"""Metrics query endpoints, included by nms.api.urls under /api/nms/."""

from django.urls import path

from nms.api.metrics_views import DeviceMetricsLatestView, DeviceMetricsRangeView

urlpatterns = [
    path(
        "devices/<int:device_id>/metrics/latest/",
        DeviceMetricsLatestView.as_view(),
        name="nms-device-metrics-latest",
    ),
    path(
        "devices/<int:device_id>/metrics/",
        DeviceMetricsRangeView.as_view(),
        name="nms-device-metrics",
    ),
]
