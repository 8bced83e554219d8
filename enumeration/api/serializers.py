"""What the API shows of the enumeration domain, and the one input it parses (a session to start).

Keys (target locations, units, containers, object keys, names) are lossless text keys
(``enumeration.connectors.keys``): exposed exactly as stored, each beside a ``display_*`` form for
people, in which bytes that are not UTF-8 appear as ``\\xNN`` escapes.
"""

from django.core.validators import ProhibitNullCharactersValidator
from django.db import models
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from enumeration.choices import (
    BatchStatus,
    RecordType,
    SessionStatus,
    TargetType,
    TaskKind,
    TaskStatus,
)
from enumeration.connectors.keys import RAW_PREFIX, decode_key, display_key
from enumeration.models import Batch, ScanTarget, SessionState, Task, TaskOutputRecord
from enumeration.models.sessions import SESSION_COUNTERS
from enumeration.selectors import session_task_counts


class DisplayKeyField(serializers.CharField):
    """The ``display_key`` of another (key) attribute, read-only."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value: str) -> str:
        return display_key(value)


class EnumField(serializers.ChoiceField):
    """A read-only choice field shown in the schema as one enum named after its choices class.

    Without it drf-spectacular names enums after the field ("status"), and sessions, batches and
    tasks each have a "status" with different choices.
    """

    def __init__(self, choices_class: type[models.TextChoices], **kwargs: object) -> None:
        self.enum_name = f"{choices_class.__name__}Enum"
        kwargs.setdefault("read_only", True)
        super().__init__(choices=choices_class.choices, **kwargs)


class EnumFieldExtension(OpenApiSerializerFieldExtension):
    target_class = EnumField

    def get_name(self) -> str:
        return self.target.enum_name

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict:
        return {"type": "string", "enum": list(self.target.choices)}


# --- errors, for the schema -------------------------------------------------------------------
class ErrorDetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class PathErrorSerializer(serializers.Serializer):
    path = serializers.ListField(child=serializers.CharField())


# --- targets ------------------------------------------------------------------------------------
class ScanTargetSerializer(serializers.ModelSerializer):
    target_type = EnumField(TargetType)
    display_location = DisplayKeyField(source="location")

    class Meta:
        model = ScanTarget
        fields = (
            "id",
            "name",
            "target_type",
            "location",
            "display_location",
            "metadata",
            "last_scan_time",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class ScanTargetSummarySerializer(serializers.ModelSerializer):
    target_type = EnumField(TargetType)
    display_location = DisplayKeyField(source="location")

    class Meta:
        model = ScanTarget
        fields = ("id", "name", "target_type", "location", "display_location")
        read_only_fields = fields


# --- sessions -----------------------------------------------------------------------------------
class SessionCountersSerializer(serializers.ModelSerializer):
    """Seed 001's SessionMetrics."""

    class Meta:
        model = SessionState
        fields = SESSION_COUNTERS
        read_only_fields = fields


class SessionTimelineSerializer(serializers.ModelSerializer):
    class Meta:
        model = SessionState
        fields = ("created_at", "started_at", "completed_at", "last_update", "purge_started_at")
        read_only_fields = fields


class SessionSerializer(serializers.ModelSerializer):
    target = ScanTargetSummarySerializer(read_only=True)
    source_type = EnumField(TargetType)
    status = EnumField(SessionStatus)
    counters = SessionCountersSerializer(source="*", read_only=True)
    timeline = SessionTimelineSerializer(source="*", read_only=True)

    class Meta:
        model = SessionState
        fields = (
            "id",
            "target",
            "source_type",
            "status",
            "failure_reason",
            "counters",
            "timeline",
            "config",
        )
        read_only_fields = fields


TASK_COUNTS_FIELD = serializers.DictField(
    child=serializers.DictField(child=serializers.IntegerField()),
    help_text="Tasks of the session by kind, then by status.",
)


class SessionDetailSerializer(SessionSerializer):
    task_counts = serializers.SerializerMethodField()

    class Meta(SessionSerializer.Meta):
        fields = (*SessionSerializer.Meta.fields, "task_counts")
        read_only_fields = fields

    @extend_schema_field(TASK_COUNTS_FIELD)
    def get_task_counts(self, session: SessionState) -> dict[str, dict[str, int]]:
        return session_task_counts(session_id=session.pk)


class PathField(serializers.CharField):
    """A filesystem path, taken as typed: no trimming, and a NUL is left for the service to refuse
    (it says why in words an operator understands)."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ]

    def to_internal_value(self, data: object) -> str | bytes:
        text = super().to_internal_value(data)
        if text.startswith(RAW_PREFIX):
            # The lossless form of a location, as this API returns it for non-UTF-8 paths.
            try:
                return decode_key(text)
            except ValueError as exc:
                raise serializers.ValidationError(
                    "A path starting with 'base64:' must be a lossless key: base64 after it."
                ) from exc
        try:
            text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise serializers.ValidationError(
                "The path contains characters that are not valid."
            ) from exc
        return text


class SessionCreateSerializer(serializers.Serializer):
    path = PathField(
        help_text="The directory to enumerate: an absolute path on the workers' filesystem, "
        "or a lossless key ('base64:...') as returned in a target's location."
    )
    name = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="A name for the target (default: the directory's name).",
    )

    def validate_name(self, value: str | None) -> str | None:
        try:
            (value or "").encode("utf-8")
        except UnicodeEncodeError as exc:
            raise serializers.ValidationError("The name is not valid Unicode text.") from exc
        return value


# --- batches, tasks, records --------------------------------------------------------------------
class BatchSerializer(serializers.ModelSerializer):
    display_unit = DisplayKeyField(source="unit")
    status = EnumField(BatchStatus)
    completion_percentage = serializers.FloatField(read_only=True)

    class Meta:
        model = Batch
        fields = (
            "id",
            "session",
            "task",
            "unit",
            "display_unit",
            "unit_hash",
            "status",
            "expected_items",
            "items_processed",
            "items_resumed",
            "completion_percentage",
            "error_details",
            "pipelined",
            "started_at",
            "completed_at",
            "last_update",
        )
        read_only_fields = fields


class TaskSerializer(serializers.ModelSerializer):
    kind = EnumField(TaskKind)
    status = EnumField(TaskStatus)

    class Meta:
        model = Task
        fields = (
            "id",
            "session",
            "kind",
            "status",
            "attempts",
            "max_attempts",
            "last_commit_attempt",
            "lease_owner",
            "lease_expires_at",
            "heartbeat_at",
            "enqueued_at",
            "last_error",
            "created_at",
            "started_at",
            "completed_at",
        )
        read_only_fields = fields


class TaskDetailSerializer(TaskSerializer):
    class Meta(TaskSerializer.Meta):
        fields = (*TaskSerializer.Meta.fields, "payload")
        read_only_fields = fields


class TaskOutputRecordSerializer(serializers.ModelSerializer):
    record_type = EnumField(RecordType)
    display_key = DisplayKeyField(source="object_key")
    display_container = DisplayKeyField(source="container")
    display_name = DisplayKeyField(source="name")

    class Meta:
        model = TaskOutputRecord
        fields = (
            "id",
            "session",
            "task",
            "batch",
            "record_type",
            "container",
            "display_container",
            "object_key",
            "display_key",
            "object_key_hash",
            "name",
            "display_name",
            "size",
            "modified_at",
            "metadata",
        )
        read_only_fields = fields
