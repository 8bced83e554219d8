"""The operator console for the enumeration engine.

Everything the engine owns (statuses, counters, leases, what was found) is read-only here: the
engine's state changes only through its services, which the actions below call. List filters are
the API's FilterSets (``enumeration.filters``), so a filter means the same thing in both places.
"""

import uuid
from collections.abc import Iterable
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django_filters.rest_framework import FilterSet

from enumeration.connectors.keys import display_key
from enumeration.filters import (
    BatchFilterSet,
    ScanTargetFilterSet,
    SessionStateFilterSet,
    TaskFilterSet,
    TaskOutputRecordFilterSet,
)
from enumeration.models import Batch, DomainEvent, ScanTarget, SessionState, Task, TaskOutputRecord
from enumeration.models.sessions import SESSION_COUNTERS
from enumeration.services.retention import (
    SessionNotFinished,
    purge_sessions_soon,
    session_purge_start,
)
from enumeration.services.sessions import SessionConflict, resume_target, task_requeue


# --- shared pieces ------------------------------------------------------------------------------
def filterset_list_filter(filterset_class: type[FilterSet], name: str) -> type[admin.ListFilter]:
    """An admin list filter for one filter of a FilterSet: same parameter, same meaning.

    Offered values are the filter's choices (a ChoiceFilter), the id given (a UUIDFilter: shown
    only when a link or the URL filters by one) or yes/no (a BooleanFilter).
    """

    class FilterSetListFilter(admin.SimpleListFilter):
        parameter_name = name

        def __init__(self, request: HttpRequest, params: dict, model: type[Model], *args) -> None:
            self.title = filterset_class().form.fields[name].label or name.replace("_", " ")
            super().__init__(request, params, model, *args)

        def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
            field = filterset_class().form.fields[name]
            if isinstance(field, forms.UUIDField):
                # An id (a link from another page): offered is the one given, so that the
                # sidebar shows it and "All" clears it. Without one, the filter is not shown.
                value = self.value()
                return [] if value is None else [(value, value)]
            choices = getattr(field, "choices", None)
            if choices is None:
                return [("true", "Yes"), ("false", "No")]
            return [(value, label) for value, label in choices if value not in ("", None)]

        def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
            value = self.value()
            if value is None:
                return queryset
            filterset = filterset_class(data={name: value}, queryset=queryset, request=request)
            if not filterset.is_valid():
                raise IncorrectLookupParameters(filterset.errors)
            return filterset.filters[name].filter(queryset, filterset.form.cleaned_data[name])

    FilterSetListFilter.__name__ = f"{filterset_class.__name__}_{name}"
    return FilterSetListFilter


class LargeTablePaginator(Paginator):
    """Counts at most COUNT_LIMIT rows, so a page of a table of millions does not wait on COUNT(*).

    Past the limit, an unfiltered PostgreSQL table reports the planner's estimate of its size;
    a filtered listing reports the limit (narrow the filter to see further).
    """

    COUNT_LIMIT = 10_000

    @cached_property
    def count(self) -> int:
        if not isinstance(self.object_list, QuerySet):
            return len(self.object_list)
        bounded = self.object_list[: self.COUNT_LIMIT + 1].count()
        if bounded <= self.COUNT_LIMIT:
            return bounded
        estimate = self._planner_estimate()
        return max(estimate or 0, self.COUNT_LIMIT)

    def _planner_estimate(self) -> int | None:
        if self.object_list.query.where or connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [self.object_list.model._meta.db_table],
            )
            row = cursor.fetchone()
        return int(row[0]) if row and row[0] > 0 else None


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the engine owns: viewable, never added, changed or deleted by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        fields = [field.name for field in self.model._meta.concrete_fields]
        return [*fields, *(name for name in self.readonly_fields if name not in fields)]


class IdSearchAdmin(admin.ModelAdmin):
    """A search term that is a UUID finds the row by id (and, via ``id_search_relations``, the
    rows of that session or task) with an index; other terms go to ``search_fields``."""

    id_search_relations: tuple[str, ...] = ()

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        try:
            wanted = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        match = Q(pk=wanted)
        for relation in self.id_search_relations:
            match |= Q(**{f"{relation}_id": wanted})
        return queryset.filter(match), False


def _changelist_link(model: type[Model], label: str, **params: object) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(params), label)


def _report(
    request: HttpRequest,
    model_admin: admin.ModelAdmin,
    done: Iterable[str],
    refused: Iterable[str],
) -> None:
    for line in done:
        model_admin.message_user(request, line, messages.SUCCESS)
    for line in refused:
        model_admin.message_user(request, line, messages.ERROR)


# --- targets and sessions -----------------------------------------------------------------------
@admin.register(ScanTarget)
class ScanTargetAdmin(admin.ModelAdmin):
    list_display = ("name", "target_type", "shown_location", "last_scan_time", "created_at")
    list_filter = (filterset_list_filter(ScanTargetFilterSet, "target_type"),)
    search_fields = ("name", "location")
    readonly_fields = (
        "id",
        "target_type",
        "location",
        "shown_location",
        "last_scan_time",
        "created_at",
        "updated_at",
        "sessions",
    )
    fields = ("name", "metadata", *readonly_fields)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A target is created by starting a session (API or `manage.py enumerate`), which
        # checks that it exists and can be listed.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        # A target's sessions hold its records and are deleted first, in chunks (the sessions'
        # delete action, or retention): until then the target stays, and shows no delete button.
        if obj is not None and obj.sessions.exists():
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict:
        # The bulk delete would only list the sessions in the way, as a permission error.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="location (readable)")
    def shown_location(self, target: ScanTarget) -> str:
        return display_key(target.location)

    @admin.display(description="sessions")
    def sessions(self, target: ScanTarget) -> str:
        return _changelist_link(SessionState, "sessions of this target", target=target.pk)


@admin.register(SessionState)
class SessionStateAdmin(IdSearchAdmin, ReadOnlyAdmin):
    list_display = (
        "id",
        "target",
        "status",
        "total_batches",
        "failed_batches",
        "items_found",
        "files_found",
        "directories_found",
        "created_at",
        "last_update",
    )
    list_filter = (
        filterset_list_filter(SessionStateFilterSet, "status"),
        filterset_list_filter(SessionStateFilterSet, "source_type"),
    )
    list_select_related = ("target",)
    search_fields = ("target__location", "target__name")
    search_help_text = "A session id, or part of the target's location or name."
    actions = ("resume_sessions", "delete_sessions")
    fieldsets = (
        (None, {"fields": ("id", "target", "source_type", "status", "failure_reason", "config")}),
        (
            "Counters",
            {"fields": SESSION_COUNTERS},
        ),
        (
            "Timeline",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "completed_at",
                    "last_update",
                    "purge_started_at",
                )
            },
        ),
        ("Work", {"fields": ("work",)}),
    )
    readonly_fields = ("work",)

    @admin.display(description="tasks, batches and records")
    def work(self, session: SessionState) -> str:
        return format_html(
            "{} · {} · {}",
            _changelist_link(Task, "tasks", session=session.pk),
            _changelist_link(Batch, "batches", session=session.pk),
            _changelist_link(TaskOutputRecord, "output records", session=session.pk),
        )

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("enumeration.change_sessionstate")

    @admin.action(description="Resume selected sessions", permissions=["operate"])
    def resume_sessions(self, request: HttpRequest, queryset: QuerySet[SessionState]) -> None:
        done, refused = [], []
        for session_id in queryset.values_list("pk", flat=True):
            try:
                session = resume_target(session_id=session_id)
            except SessionConflict as exc:
                refused.append(f"Session {session_id} was not resumed: {exc}")
            except SessionState.DoesNotExist:
                refused.append(f"Session {session_id} no longer exists.")
            else:
                done.append(f"Session {session_id} resumed; it is now {session.status}.")
        _report(request, self, done, refused)

    def has_purge_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("enumeration.delete_sessionstate")

    @admin.action(
        description="Delete selected finished sessions with their records", permissions=["purge"]
    )
    def delete_sessions(self, request: HttpRequest, queryset: QuerySet[SessionState]) -> None:
        # Marked here, deleted in chunks by a worker: a session of a million records is too
        # large for one request or one transaction (enumeration/services/retention.py).
        done, refused = [], []
        for session_id in queryset.values_list("pk", flat=True):
            try:
                session_purge_start(session_id=session_id)
            except SessionNotFinished as exc:
                refused.append(str(exc))
            else:
                done.append(f"Session {session_id} is being deleted.")
        if done:
            purge_sessions_soon()
        _report(request, self, done, refused)


# --- work ---------------------------------------------------------------------------------------
@admin.register(Batch)
class BatchAdmin(ReadOnlyAdmin):
    list_display = (
        "shown_unit",
        "status",
        "items_processed",
        "expected_items",
        "pipelined",
        "session",
        "completed_at",
    )
    list_filter = (
        filterset_list_filter(BatchFilterSet, "status"),
        filterset_list_filter(BatchFilterSet, "pipelined"),
    )
    list_select_related = ("session",)
    search_fields = ("unit",)
    search_help_text = "Part of the unit's key (a directory path)."
    show_full_result_count = False
    paginator = LargeTablePaginator
    readonly_fields = ("shown_unit",)

    @admin.display(description="unit", ordering="unit")
    def shown_unit(self, batch: Batch) -> str:
        return display_key(batch.unit)


@admin.register(Task)
class TaskAdmin(IdSearchAdmin, ReadOnlyAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "attempts",
        "max_attempts",
        "lease_owner",
        "lease_expires_at",
        "session",
        "created_at",
    )
    list_filter = (
        filterset_list_filter(TaskFilterSet, "kind"),
        filterset_list_filter(TaskFilterSet, "status"),
    )
    list_select_related = ("session",)
    id_search_relations = ("session",)
    search_fields = ("lease_owner",)
    search_help_text = "A task id (or a session id, for its tasks), or a worker's lease owner."
    show_full_result_count = False
    paginator = LargeTablePaginator
    actions = ("requeue_tasks",)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("enumeration.change_task")

    @admin.action(description="Requeue selected failed tasks", permissions=["operate"])
    def requeue_tasks(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        done, refused = [], []
        for task_id in queryset.values_list("pk", flat=True):
            try:
                task_requeue(task_id=task_id)
            except SessionConflict as exc:
                refused.append(f"Task {task_id} was not requeued: {exc}")
            except Task.DoesNotExist:
                refused.append(f"Task {task_id} no longer exists.")
            else:
                done.append(f"Task {task_id} requeued.")
        _report(request, self, done, refused)


@admin.register(TaskOutputRecord)
class TaskOutputRecordAdmin(ReadOnlyAdmin):
    list_display = ("shown_key", "record_type", "size", "modified_at", "session", "task")
    # By session and task through the batches, as the API filters: the output table has no index
    # on its own session_id and task_id (the links from a session's page use these).
    list_filter = (
        filterset_list_filter(TaskOutputRecordFilterSet, "record_type"),
        filterset_list_filter(TaskOutputRecordFilterSet, "session"),
        filterset_list_filter(TaskOutputRecordFilterSet, "task"),
    )
    list_select_related = ("session", "task")
    search_fields = ("object_key",)
    search_help_text = "Part of the stored key (non-UTF-8 paths are stored as base64:...)."
    show_full_result_count = False
    paginator = LargeTablePaginator
    readonly_fields = ("shown_key",)

    @admin.display(description="object", ordering="object_key")
    def shown_key(self, record: TaskOutputRecord) -> str:
        return display_key(record.object_key)


@admin.register(DomainEvent)
class DomainEventAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "event_type",
        "aggregate_type",
        "aggregate_id",
        "occurred_at",
        "dispatched_at",
        "attempts",
        "claimed_until",
    )
    # No filter on event_type: its values would come from a DISTINCT over the whole outbox.
    list_filter = (("dispatched_at", admin.EmptyFieldListFilter),)
    search_fields = ("=aggregate_id", "=event_type")
    search_help_text = "An aggregate id (a task or session id) or an event type, exactly."
    show_full_result_count = False
    paginator = LargeTablePaginator
