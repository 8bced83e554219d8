"""Metrics of a device (seed 003 §7 ``jobTypeRead``): the latest sample, and the samples of a time
range. JWT like the rest of the API; reads come from `nms.services.metrics`."""

from __future__ import annotations

from datetime import datetime

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import not_found_in_words
from nms.models import Device, MetricSample
from nms.services.metrics import RANGE_LIMIT_MAX, metric_sample_latest, metric_samples_in_range


class MetricSampleSerializer(serializers.ModelSerializer):
    device = serializers.IntegerField(source="device_id", read_only=True)

    class Meta:
        model = MetricSample
        fields = ["id", "device", "collected_at", "data"]


class MetricRangeSerializer(serializers.Serializer):
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=RANGE_LIMIT_MAX)

    def validate(self, attrs: dict) -> dict:
        since: datetime | None = attrs.get("since")
        until: datetime | None = attrs.get("until")
        if since and until and since >= until:
            raise ValidationError({"until": "must be later than since."})
        return attrs


def _device_exists_or_404(device_id: int) -> None:
    if not Device.objects.filter(pk=device_id).exists():
        raise not_found_in_words("device")


class DeviceMetricsLatestView(GenericAPIView):
    serializer_class = MetricSampleSerializer
    queryset = MetricSample.objects.none()  # for the schema: reads go through the service
    pagination_class = None

    @extend_schema(
        summary="The latest metric sample of a device",
        responses={
            200: MetricSampleSerializer,
            404: OpenApiResponse(description="No such device, or no sample yet."),
        },
    )
    def get(self, request: Request, device_id: int) -> Response:
        _device_exists_or_404(device_id)
        sample = metric_sample_latest(device_id=device_id)
        if sample is None:
            return Response({"detail": "This device has no metric sample yet."}, status=404)
        return Response(MetricSampleSerializer(sample).data)


class DeviceMetricsRangeView(GenericAPIView):
    serializer_class = MetricSampleSerializer
    queryset = MetricSample.objects.none()  # for the schema: reads go through the service
    pagination_class = None
    filter_backends: list = []  # since/until/limit are parsed by MetricRangeSerializer

    @extend_schema(
        summary="Metric samples of a device in a time range, oldest first",
        parameters=[
            OpenApiParameter("since", datetime, description="From this time (inclusive)."),
            OpenApiParameter("until", datetime, description="Up to this time (exclusive)."),
            OpenApiParameter(
                "limit", int, description=f"At most this many (1000; max {RANGE_LIMIT_MAX})."
            ),
        ],
        responses={200: MetricSampleSerializer(many=True)},
    )
    def get(self, request: Request, device_id: int) -> Response:
        _device_exists_or_404(device_id)
        given = MetricRangeSerializer(data=request.query_params)
        given.is_valid(raise_exception=True)
        samples = metric_samples_in_range(
            device_id=device_id,
            since=given.validated_data.get("since"),
            until=given.validated_data.get("until"),
            limit=given.validated_data.get("limit", 1000),
        )
        return Response(MetricSampleSerializer(samples, many=True).data)
