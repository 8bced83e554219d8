"""One FilterSet per model: the API's query parameters, reused by the admin's list filters.

Relations are filtered by id with ``UUIDFilter`` rather than ``ModelChoiceFilter``: a filter by
session should not cost a query to load the session, and an unknown id simply matches nothing.
"""

from django_filters import rest_framework as filters

from enumeration.models import Batch, ScanTarget, SessionState, Task, TaskOutputRecord


class ScanTargetFilterSet(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains", label="Name contains")

    class Meta:
        model = ScanTarget
        fields = {"target_type": ["exact"], "location": ["exact", "startswith"]}


class SessionStateFilterSet(filters.FilterSet):
    target = filters.UUIDFilter(field_name="target_id", label="Target id")

    class Meta:
        model = SessionState
        fields = {"status": ["exact"], "source_type": ["exact"], "created_at": ["gte", "lte"]}


class BatchFilterSet(filters.FilterSet):
    session = filters.UUIDFilter(field_name="session_id", label="Session id")
    task = filters.UUIDFilter(field_name="task_id", label="Task id")

    class Meta:
        model = Batch
        fields = {"status": ["exact"], "pipelined": ["exact"]}


class TaskFilterSet(filters.FilterSet):
    session = filters.UUIDFilter(field_name="session_id", label="Session id")

    class Meta:
        model = Task
        fields = {"kind": ["exact"], "status": ["exact"]}


class TaskOutputRecordFilterSet(filters.FilterSet):
    """``object_key`` and ``name`` filters compare the stored lossless key (``base64:...`` for
    non-UTF-8).

    Only the id (the primary key) and ``batch`` (the unique key) are indexed on the output table,
    deliberately (``enumeration.models.work``); ``session`` and ``task`` reach it through those
    of Batch. The name, size and time filters have no index: they narrow a session's, a task's
    or a batch's records, and alone read the whole table.
    """

    # Through the Batch (the same session and task): the output table has no index of its own on
    # session_id or task_id.
    session = filters.UUIDFilter(field_name="batch__session_id", label="Session id")
    task = filters.UUIDFilter(field_name="batch__task_id", label="Task id")
    batch = filters.UUIDFilter(field_name="batch_id", label="Batch id")
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
