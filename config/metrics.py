"""Prometheus exposition at /metrics.

The figures come from the database, not from process memory: counters kept inside one worker
process would be lost with it and would not add up across many workers. A scrape reads the
sessions' own counters (one row per session, moved by each commit) and the tasks grouped by
status, never the batches or records, whose tables grow with every directory ever listed.
"""

from collections.abc import Iterator

from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class EnumerationCollector(Collector):
    def collect(self) -> Iterator:
        from enumeration.models import SessionState, Task

        sessions = GaugeMetricFamily(
            "census_enumeration_sessions", "Enumeration sessions by status", labels=["status"]
        )
        for row in SessionState.objects.values("status").annotate(n=Count("pk")):
            sessions.add_metric([row["status"]], row["n"])
        yield sessions

        totals = SessionState.objects.aggregate(
            found=Sum("items_found"),
            processed=Sum("items_processed"),
            batches=Sum("total_batches"),
            failed=Sum("failed_batches"),
            seconds=Sum("processing_seconds"),
        )
        for name, key, doc in (
            ("census_enumeration_items_found", "found", "Objects committed to output records"),
            ("census_enumeration_items_processed", "processed", "Objects handed to the next stage"),
            ("census_enumeration_batches", "batches", "Units committed"),
            ("census_enumeration_failed_batches", "failed", "Units that failed for good"),
        ):
            metric = CounterMetricFamily(name, doc)
            metric.add_metric([], totals[key] or 0)
            yield metric

        tasks = GaugeMetricFamily(
            "census_enumeration_tasks", "Tasks by kind and status", labels=["kind", "status"]
        )
        for row in Task.objects.values("kind", "status").annotate(n=Count("pk")):
            tasks.add_metric([row["kind"], row["status"]], row["n"])
        yield tasks

        timing = CounterMetricFamily(
            "census_enumeration_unit_processing_seconds",
            "Time spent listing and committing units",
            labels=[],
        )
        timing.add_metric([], totals["seconds"] or 0.0)
        yield timing
        units = CounterMetricFamily(
            "census_enumeration_units_timed", "Units counted in the processing time", labels=[]
        )
        units.add_metric([], totals["batches"] or 0)
        yield units


def metrics_view(request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry()
    registry.register(EnumerationCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
