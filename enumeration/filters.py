"""One FilterSet per model: the API's query parameters, reused by the admin's list filters.

Relations are filtered by id with ``UUIDFilter`` rather than ``ModelChoiceFilter``: a filter by
session should not cost a query to load the session, and an unknown id simply matches nothing.
"""

import uuid

from django.db.models import QuerySet
from django_filters import rest_framework as filters

from config.filters import FilterSet
from enumeration import selectors
from enumeration.models import Batch, ScanTarget, SessionState, Task, TaskOutputRecord


class ScanTargetFilterSet(FilterSet):
    name = filters.CharFilter(lookup_expr="icontains", label="Name contains")

    class Meta:
        model = ScanTarget
        fields = {"target_type": ["exact"], "location": ["exact", "startswith"]}


class SessionStateFilterSet(FilterSet):
    target = filters.UUIDFilter(field_name="target_id", label="Target id")

    class Meta:
        model = SessionState
        fields = {"status": ["exact"], "source_type": ["exact"], "created_at": ["gte", "lte"]}


class BatchFilterSet(FilterSet):
    session = filters.UUIDFilter(field_name="session_id", label="Session id")
    task = filters.UUIDFilter(field_name="task_id", label="Task id")

    class Meta:
        model = Batch
        fields = {"status": ["exact"], "pipelined": ["exact"]}


class TaskFilterSet(FilterSet):
    session = filters.UUIDFilter(field_name="session_id", label="Session id")

    class Meta:
        model = Task
        fields = {"kind": ["exact"], "status": ["exact"]}


class TaskOutputRecordFilterSet(FilterSet):
    """``object_key`` and ``name`` filters compare the stored lossless key (``base64:...`` for
    non-UTF-8).

    Only the id (the primary key) and ``batch`` (the unique key) are indexed on the output table,
    deliberately (``enumeration.models.work``); ``session`` and ``task`` find their records along
    the id, between the bounds their batches hold (``selectors.records_found_by``). The name,
    size and time filters have no index: they narrow a session's, a task's or a batch's records,
    and alone read the whole table.
    """

    session = filters.UUIDFilter(method="_found_by", label="Session id")
    task = filters.UUIDFilter(method="_found_by", label="Task id")
    batch = filters.UUIDFilter(method="_found_by", label="Batch id")
    name = filters.CharFilter(lookup_expr="icontains", label="Name contains")

    class Meta:
        model = TaskOutputRecord
        fields = {
            "record_type": ["exact"],
            "container": ["exact"],
            "object_key": ["exact", "icontains", "startswith"],
            "size": ["gte", "lte"],
            "modified_at": ["gte", "lte"],
        }

    def _found_by(
        self, queryset: QuerySet[TaskOutputRecord], name: str, value: uuid.UUID
    ) -> QuerySet[TaskOutputRecord]:
        owner = {"session": "session_id", "task": "task_id", "batch": "id"}[name]
        return selectors.records_found_by(queryset, **{owner: value})
