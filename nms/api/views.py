"""The NMS API under /api/nms/: thin views that parse input, call one service, and serialize.

Reads come from ``nms.selectors``, writes from ``nms.services``; a service's refusal becomes 400
(bad input, nothing created) or 409 (the row's state or its dependents do not allow it).
"""

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db.models import ProtectedError, QuerySet
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from config.api import NotFoundInWords
from enumeration.api.serializers import ErrorDetailSerializer
from nms import selectors
from nms.api.serializers import (
    DETAIL_TARGETS,
    CredentialProfileSerializer,
    CredentialProfileWriteSerializer,
    DeactivateSerializer,
    DeviceSerializer,
    DiscoveryProfileSerializer,
    DiscoveryRunDetailSerializer,
    DiscoveryRunSerializer,
    DiscoveryRunTargetSerializer,
    ProvisionSerializer,
)
from nms.choices import TargetOutcome
from nms.filters import (
    CredentialProfileFilterSet,
    DeviceFilterSet,
    DiscoveryProfileFilterSet,
    DiscoveryRunFilterSet,
    DiscoveryRunTargetFilterSet,
)
from nms.models import CredentialProfile, Device, DiscoveryProfile, DiscoveryRun
from nms.services import credentials, devices, discovery


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The current state of this object does not allow it."
    default_code = "conflict"


class NoWorkers(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "no_workers"


CONFLICT = OpenApiResponse(ErrorDetailSerializer, description="The object's state forbids it.")
BAD_INPUT = OpenApiResponse(description="Bad input: each field with what is wrong with it.")


Refusal = credentials.CredentialInvalid | devices.DeviceInvalid | discovery.DiscoveryInvalid


def _refused(exc: Refusal) -> ValidationError:
    return ValidationError({field: [text] for field, text in exc.errors.items()})


def _protected(kind: str, exc: ProtectedError) -> Conflict:
    users: dict[str, int] = {}
    for obj in exc.protected_objects:
        name = obj._meta.verbose_name_plural
        users[name] = users.get(name, 0) + 1
    listed = ", ".join(f"{count} {name}" for name, count in users.items())
    return Conflict(f"This {kind} is still used by {listed}; change or delete those first.")


# --- credential profiles ------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(summary="List credential profiles (payloads masked)"),
    retrieve=extend_schema(summary="A credential profile (payload masked)"),
    create=extend_schema(
        summary="Create a credential profile",
        request=CredentialProfileWriteSerializer,
        responses={201: CredentialProfileSerializer, 400: BAD_INPUT},
    ),
    update=extend_schema(
        summary="Replace a credential profile",
        description="A payload without a password (or with ******** as the password) keeps the "
        "current password.",
        request=CredentialProfileWriteSerializer,
        responses={200: CredentialProfileSerializer, 400: BAD_INPUT},
    ),
    partial_update=extend_schema(
        summary="Change a credential profile",
        description="Keys of the payload that are left out keep their current values.",
        request=CredentialProfileWriteSerializer,
        responses={200: CredentialProfileSerializer, 400: BAD_INPUT},
    ),
    destroy=extend_schema(
        summary="Delete an unused credential profile", responses={204: None, 409: CONFLICT}
    ),
)
class CredentialProfileViewSet(NotFoundInWords, viewsets.ModelViewSet):
    object_name = "credential profile"
    filterset_class = CredentialProfileFilterSet
    ordering_fields = ("name", "created_at", "updated_at")
    ordering = ("name",)

    def get_queryset(self) -> QuerySet[CredentialProfile]:
        return selectors.credential_profile_list()

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action in ("create", "update", "partial_update"):
            return CredentialProfileWriteSerializer
        return CredentialProfileSerializer

    def _shown(self, profile: CredentialProfile, code: int = status.HTTP_200_OK) -> Response:
        data = CredentialProfileSerializer(profile, context=self.get_serializer_context()).data
        return Response(data, status=code)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        given = CredentialProfileWriteSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        try:
            profile = credentials.credential_profile_create(
                name=data["name"], protocol=data.get("protocol", "winrm"), payload=data["payload"]
            )
        except credentials.CredentialInvalid as exc:
            raise _refused(exc) from None
        return self._shown(profile, status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        partial = kwargs.pop("partial", False)
        profile = self.get_object()
        given = CredentialProfileWriteSerializer(profile, data=request.data, partial=partial)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        try:
            profile = credentials.credential_profile_update(
                credential_id=profile.pk,
                name=data.get("name"),
                protocol=data.get("protocol"),
                payload=data.get("payload"),
                merge_payload=partial,
            )
        except credentials.CredentialInvalid as exc:
            raise _refused(exc) from None
        return self._shown(profile)

    def perform_destroy(self, instance: CredentialProfile) -> None:
        try:
            instance.delete()
        except ProtectedError as exc:
            raise _protected("credential profile", exc) from None


# --- discovery profiles -------------------------------------------------------------------------
def _service_fields(validated: Mapping[str, Any]) -> dict[str, Any]:
    """Validated serializer data as a service takes it: the credential by its id."""
    fields = dict(validated)
    if "credential" in fields:
        fields["credential_id"] = fields.pop("credential").pk
    return fields


@extend_schema_view(
    list=extend_schema(summary="List discovery profiles"),
    retrieve=extend_schema(summary="A discovery profile"),
    create=extend_schema(
        summary="Create a discovery profile",
        responses={201: DiscoveryProfileSerializer, 400: BAD_INPUT},
    ),
    update=extend_schema(
        summary="Replace a discovery profile",
        responses={200: DiscoveryProfileSerializer, 400: BAD_INPUT},
    ),
    partial_update=extend_schema(
        summary="Change a discovery profile",
        responses={200: DiscoveryProfileSerializer, 400: BAD_INPUT},
    ),
    destroy=extend_schema(summary="Delete a discovery profile and its runs"),
)
class DiscoveryProfileViewSet(NotFoundInWords, viewsets.ModelViewSet):
    object_name = "discovery profile"
    serializer_class = DiscoveryProfileSerializer
    filterset_class = DiscoveryProfileFilterSet
    ordering_fields = ("name", "created_at", "updated_at")
    ordering = ("name",)

    def get_queryset(self) -> QuerySet[DiscoveryProfile]:
        return selectors.discovery_profile_list()

    def perform_create(self, serializer: BaseSerializer) -> None:
        try:
            serializer.instance = discovery.discovery_profile_create(
                **_service_fields(serializer.validated_data)
            )
        except discovery.DiscoveryInvalid as exc:
            raise _refused(exc) from None

    def perform_update(self, serializer: BaseSerializer) -> None:
        try:
            serializer.instance = discovery.discovery_profile_update(
                profile_id=serializer.instance.pk,
                changes=_service_fields(serializer.validated_data),
            )
        except discovery.DiscoveryInvalid as exc:
            raise _refused(exc) from None

    @extend_schema(
        summary="Run discovery for this profile",
        description="Creates a PENDING run with one target per address and hands it to a "
        "worker. Follow it at /api/nms/discovery_runs/{id}.",
        request=None,
        responses={
            202: DiscoveryRunSerializer,
            400: BAD_INPUT,
            503: OpenApiResponse(
                ErrorDetailSerializer, description="No broker: no worker can run it."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str | None = None) -> Response:
        profile = self.get_object()
        if settings.CENSUS_IN_PROCESS_WORKER:
            # No broker, no worker would ever take the run: say so rather than leave it PENDING.
            raise NoWorkers(
                "Discovery runs on Celery workers: configure a broker (CELERY_BROKER_URL) and "
                "PostgreSQL (DATABASE_URL), and start `celery -A config worker`."
            )
        try:
            run = discovery.discovery_run_start(profile_id=profile.pk)
        except discovery.DiscoveryInvalid as exc:
            raise _refused(exc) from None
        run = selectors.discovery_run_list().get(pk=run.pk)
        return Response(
            DiscoveryRunSerializer(run, context=self.get_serializer_context()).data,
            status=status.HTTP_202_ACCEPTED,
        )


# --- discovery runs -----------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(summary="List discovery runs", responses=DiscoveryRunSerializer),
    retrieve=extend_schema(
        summary="A discovery run, with the outcome of each target",
        responses=DiscoveryRunDetailSerializer,
    ),
)
class DiscoveryRunViewSet(NotFoundInWords, viewsets.ReadOnlyModelViewSet):
    object_name = "discovery run"
    filterset_class = DiscoveryRunFilterSet
    ordering_fields = ("created_at", "completed_at", "status")
    ordering = ("-created_at",)

    def get_queryset(self) -> QuerySet[DiscoveryRun]:
        runs = selectors.discovery_run_list()
        if self.action == "retrieve":
            runs = selectors.with_first_targets(runs, DETAIL_TARGETS)
        return runs

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action == "retrieve":
            return DiscoveryRunDetailSerializer
        if self.action == "targets":
            return DiscoveryRunTargetSerializer
        return DiscoveryRunSerializer

    def filter_queryset(self, queryset: QuerySet[DiscoveryRun]) -> QuerySet[DiscoveryRun]:
        if self.action == "targets":  # the run by its id alone: the query is about its targets
            return queryset
        return super().filter_queryset(queryset)

    @extend_schema(
        summary="The targets of a run, a page at a time",
        description="For large runs: the same outcomes as the run's detail, paged and filterable "
        "by outcome.",
        responses=DiscoveryRunTargetSerializer(many=True),
        filters=False,
        parameters=[
            OpenApiParameter("outcome", enum=TargetOutcome.values, description="Only this outcome.")
        ],
    )
    @action(detail=True, methods=["get"])
    def targets(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        filterset = DiscoveryRunTargetFilterSet(
            {"outcome": request.query_params.get("outcome", "")},
            queryset=selectors.discovery_run_targets(run_id=run.pk),
        )
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        rows = filterset.qs
        page = self.paginate_queryset(rows)
        serializer = DiscoveryRunTargetSerializer(page, many=True)
        return self.get_paginated_response(serializer.data)


# --- devices ------------------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(summary="List devices"),
    retrieve=extend_schema(summary="A device"),
    create=extend_schema(
        summary="Add a device by hand (discovered until provisioned)",
        responses={201: DeviceSerializer, 400: BAD_INPUT},
    ),
    update=extend_schema(
        summary="Replace a device (its IP and port cannot change)",
        responses={200: DeviceSerializer, 400: BAD_INPUT},
    ),
    partial_update=extend_schema(
        summary="Change a device (its IP and port cannot change)",
        responses={200: DeviceSerializer, 400: BAD_INPUT},
    ),
    destroy=extend_schema(summary="Delete a device, its events and its metrics"),
)
class DeviceViewSet(NotFoundInWords, viewsets.ModelViewSet):
    object_name = "device"
    serializer_class = DeviceSerializer
    filterset_class = DeviceFilterSet
    ordering_fields = ("ip", "port", "hostname", "status", "schedule_anchor", "created_at")
    ordering = ("ip", "port")

    def get_queryset(self) -> QuerySet[Device]:
        return selectors.device_list()

    def perform_create(self, serializer: BaseSerializer) -> None:
        try:
            serializer.instance = devices.device_create(
                **_service_fields(serializer.validated_data)
            )
        except devices.DeviceInvalid as exc:
            raise _refused(exc) from None

    def perform_update(self, serializer: BaseSerializer) -> None:
        try:
            serializer.instance = devices.device_update(
                device_id=serializer.instance.pk,
                changes=_service_fields(serializer.validated_data),
            )
        except devices.DeviceInvalid as exc:
            raise _refused(exc) from None

    def perform_destroy(self, instance: Device) -> None:
        devices.device_delete(device_id=instance.pk)

    @extend_schema(
        summary="Provision a device: poll it every `interval` seconds, starting now",
        request=ProvisionSerializer,
        responses={200: DeviceSerializer, 400: BAD_INPUT, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def provision(self, request: Request, pk: str | None = None) -> Response:
        device = self.get_object()
        given = ProvisionSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            device = devices.device_provision(
                device_id=device.pk, interval_seconds=given.validated_data["interval"]
            )
        except devices.DeviceInvalid as exc:
            raise _refused(exc) from None
        except devices.DeviceConflict as exc:
            raise Conflict(str(exc)) from None
        return Response(DeviceSerializer(device, context=self.get_serializer_context()).data)

    @extend_schema(
        summary="Deactivate a device: stop polling it",
        request=DeactivateSerializer,
        responses={200: DeviceSerializer, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def deactivate(self, request: Request, pk: str | None = None) -> Response:
        device = self.get_object()
        given = DeactivateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        who = getattr(request.user, "get_username", lambda: "")() or "the API"
        reason = given.validated_data.get("reason") or f"deactivated by {who} through the API"
        try:
            device = devices.device_deactivate(device_id=device.pk, reason=reason)
        except devices.DeviceConflict as exc:
            raise Conflict(str(exc)) from None
        return Response(DeviceSerializer(device, context=self.get_serializer_context()).data)
