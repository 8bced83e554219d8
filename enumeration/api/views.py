"""The enumeration API: thin views that parse input, call one service, and serialize.

Reads come from ``enumeration.selectors``, writes from ``enumeration.services.sessions``; a
service's refusal becomes 400 (bad input) or 409 (the session is not in a state that allows it).
"""

from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from config.api import NotFoundInWords
from config.pagination import KeysetPagination
from enumeration import selectors
from enumeration.api.serializers import (
    BatchSerializer,
    ErrorDetailSerializer,
    PathErrorSerializer,
    ScanTargetSerializer,
    SessionCreateSerializer,
    SessionDetailSerializer,
    SessionSerializer,
    TaskDetailSerializer,
    TaskOutputRecordSerializer,
    TaskSerializer,
)
from enumeration.filters import (
    BatchFilterSet,
    ScanTargetFilterSet,
    SessionStateFilterSet,
    TaskFilterSet,
    TaskOutputRecordFilterSet,
)
from enumeration.models import Batch, ScanTarget, SessionState, Task, TaskOutputRecord
from enumeration.services.retention import (
    SessionNotFinished,
    purge_sessions_soon,
    session_purge_start,
)
from enumeration.services.sessions import (
    SessionConflict,
    TargetInvalid,
    enumerate_target,
    resume_target,
    task_requeue,
)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The session is not in a state that allows this."
    default_code = "conflict"


CONFLICT_RESPONSE = OpenApiResponse(
    ErrorDetailSerializer, description="The session's state does not allow it."
)


@extend_schema_view(
    list=extend_schema(summary="List scan targets"),
    retrieve=extend_schema(summary="A scan target"),
)
class ScanTargetViewSet(NotFoundInWords, viewsets.ReadOnlyModelViewSet):
    object_name = "target"
    serializer_class = ScanTargetSerializer
    filterset_class = ScanTargetFilterSet
    ordering_fields = ("name", "created_at", "last_scan_time")
    ordering = ("name",)

    def get_queryset(self) -> QuerySet[ScanTarget]:
        return selectors.scan_target_list()


@extend_schema_view(
    list=extend_schema(summary="List enumeration sessions", responses=SessionSerializer),
    retrieve=extend_schema(
        summary="A session: status, counters, timeline and tasks by status",
        responses=SessionDetailSerializer,
    ),
)
class SessionViewSet(
    NotFoundInWords,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    object_name = "session"
    filterset_class = SessionStateFilterSet
    ordering_fields = ("created_at", "last_update", "status", "items_found")
    ordering = ("-created_at",)

    def get_queryset(self) -> QuerySet[SessionState]:
        return selectors.session_list()

    def get_serializer_class(self) -> type[BaseSerializer]:
        if self.action == "create":
            return SessionCreateSerializer
        if self.action == "list":
            return SessionSerializer
        return SessionDetailSerializer

    @extend_schema(
        summary="Start an enumeration of a directory",
        request=SessionCreateSerializer,
        responses={
            201: SessionDetailSerializer,
            400: OpenApiResponse(PathErrorSerializer, description="The path is not usable."),
            409: OpenApiResponse(
                ErrorDetailSerializer, description="The target already has an active session."
            ),
        },
    )
    def create(self, request: Request) -> Response:
        given = SessionCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            session = enumerate_target(
                path=given.validated_data["path"], name=given.validated_data.get("name") or None
            )
        except TargetInvalid as exc:
            raise ValidationError({"path": [str(exc)]}) from exc
        except SessionConflict as exc:
            raise Conflict(str(exc)) from exc
        location = reverse("enumeration:session-detail", kwargs={"pk": session.pk})
        return Response(
            SessionDetailSerializer(session, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": request.build_absolute_uri(location)},
        )

    @extend_schema(
        summary="Resume a session",
        description="Sends its pending tasks again and retries its failed units. Safe to repeat.",
        request=None,
        responses={200: SessionDetailSerializer, 409: CONFLICT_RESPONSE},
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        session = self.get_object()
        try:
            session = resume_target(session_id=session.pk)
        except SessionConflict as exc:
            raise Conflict(str(exc)) from exc
        return Response(
            SessionDetailSerializer(session, context=self.get_serializer_context()).data
        )

    @extend_schema(
        summary="Delete a finished session with its records",
        description=(
            "Marks the session (`timeline.purge_started_at`) and has a worker delete it in "
            "chunks; it can no longer be resumed. Needs the `enumeration.delete_sessionstate` "
            "permission. Safe to repeat."
        ),
        request=None,
        responses={
            202: SessionDetailSerializer,
            204: OpenApiResponse(description="Deleted at once (the embedded default)."),
            403: OpenApiResponse(ErrorDetailSerializer, description="Not allowed to delete."),
            409: OpenApiResponse(ErrorDetailSerializer, description="The session is still active."),
        },
    )
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        if not request.user.has_perm("enumeration.delete_sessionstate"):
            raise PermissionDenied("Deleting a session needs the delete_sessionstate permission.")
        session = self.get_object()
        try:
            session = session_purge_start(session_id=session.pk)
        except SessionNotFinished as exc:
            raise Conflict(str(exc)) from exc
        purge_sessions_soon()
        if not SessionState.objects.filter(pk=session.pk).exists():
            return Response(status=status.HTTP_204_NO_CONTENT)  # deleted here already
        return Response(
            SessionDetailSerializer(session, context=self.get_serializer_context()).data,
            status=status.HTTP_202_ACCEPTED,
        )


@extend_schema_view(
    list=extend_schema(summary="List committed units (batches)"),
    retrieve=extend_schema(summary="A committed unit (batch)"),
)
class BatchViewSet(NotFoundInWords, viewsets.ReadOnlyModelViewSet):
    object_name = "batch"
    serializer_class = BatchSerializer
    filterset_class = BatchFilterSet
    # Keyset pages, as the records': one batch per directory listed, millions in a big history.
    pagination_class = KeysetPagination
    ordering_fields = ("completed_at", "started_at", "items_processed", "unit")
    ordering = ("completed_at", "id")

    def get_queryset(self) -> QuerySet[Batch]:
        return selectors.batch_list()


@extend_schema_view(
    list=extend_schema(summary="List tasks", responses=TaskSerializer),
    retrieve=extend_schema(summary="A task, with its payload", responses=TaskDetailSerializer),
)
class TaskViewSet(NotFoundInWords, viewsets.ReadOnlyModelViewSet):
    object_name = "task"
    filterset_class = TaskFilterSet
    pagination_class = KeysetPagination
    ordering_fields = ("created_at", "started_at", "completed_at", "attempts")
    ordering = ("created_at", "id")

    def get_queryset(self) -> QuerySet[Task]:
        return selectors.task_list(with_payload=self.action != "list")

    def get_serializer_class(self) -> type[BaseSerializer]:
        return TaskSerializer if self.action == "list" else TaskDetailSerializer

    @extend_schema(
        summary="Requeue a FAILED task",
        description="Its failed units are forgotten and tried again.",
        request=None,
        responses={200: TaskDetailSerializer, 409: CONFLICT_RESPONSE},
    )
    @action(detail=True, methods=["post"])
    def requeue(self, request: Request, pk: str | None = None) -> Response:
        task = self.get_object()
        try:
            task = task_requeue(task_id=task.pk)
        except SessionConflict as exc:
            raise Conflict(str(exc)) from exc
        return Response(TaskDetailSerializer(task, context=self.get_serializer_context()).data)


@extend_schema_view(
    list=extend_schema(summary="List what tasks found (output records)"),
    retrieve=extend_schema(summary="An output record"),
)
class TaskOutputRecordViewSet(NotFoundInWords, viewsets.ReadOnlyModelViewSet):
    object_name = "output record"
    serializer_class = TaskOutputRecordSerializer
    filterset_class = TaskOutputRecordFilterSet
    # Keyset pages: a session can hold millions of records, and an offset or a count reads them.
    pagination_class = KeysetPagination
    ordering_fields = ("id", "object_key", "name", "size", "modified_at")
    ordering = ("id",)

    def get_queryset(self) -> QuerySet[TaskOutputRecord]:
        return selectors.output_record_list()
