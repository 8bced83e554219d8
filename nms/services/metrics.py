"""The metrics service (seed 003 §7): poll results in, JSONB rows out.

Writes (the seed's ``jobTypeWrite``, ``pgx.CopyFrom``): a batch of successful poll results goes
into ``nms_metric_samples`` with one PostgreSQL ``COPY ... FROM STDIN`` through the Django
connection (psycopg2's ``copy_expert``), inside the caller's transaction when there is one.

Reads (``jobTypeRead``): the latest sample of a device, the samples of a device in a time range;
both walk the ``(device, -collected_at)`` index.

Retention: samples older than ``CENSUS_NMS_METRICS_RETENTION_DAYS`` are deleted by a periodic
job, device by device through that index and at most ``CENSUS_NMS_RETENTION_CHUNK`` rows per
statement, so no statement holds many locks or runs for long.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg2
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DataError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from nms.models import Device, MetricSample

logger = logging.getLogger(__name__)

COPY_SQL = "COPY nms_metric_samples (device_id, collected_at, data) FROM STDIN"
COPY_CHUNK = 64 * 1024
RANGE_LIMIT_MAX = 10_000
# COPY's text format: a backslash starts an escape, so it is doubled; JSON has no raw tab or
# newline (json.dumps escapes control characters), so nothing else needs escaping. ASCII-only
# JSON, so a lone surrogate reaches PostgreSQL as an escape it refuses, not as bytes that
# cannot be encoded.
BACKSLASH = "\\"
DOUBLE_BACKSLASH = "\\\\"


@dataclass(frozen=True)
class Sample:
    device_id: int
    collected_at: datetime
    data: dict[str, Any]


def _without_nul(value: Any) -> Any:
    """PostgreSQL's jsonb cannot hold U+0000; a host that prints one gets U+FFFD instead."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def _copy_line(sample: Sample) -> str:
    document = json.dumps(sample.data, separators=(",", ":"))
    if "\\u0000" in document:
        document = json.dumps(_without_nul(sample.data), separators=(",", ":"))
    return (
        f"{int(sample.device_id)}\t{sample.collected_at.isoformat()}\t"
        f"{document.replace(BACKSLASH, DOUBLE_BACKSLASH)}\n"
    )


class _CopySource:
    """COPY's input, encoded as psycopg2 reads it: the client encodes the next chunk while the
    server parses the last one (two cores instead of one after the other)."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self._lines = map(_copy_line, samples)
        self._pending = ""

    def read(self, size: int = -1) -> str:
        chunks = [self._pending]
        length = len(self._pending)
        while size < 0 or length < size:
            line = next(self._lines, None)
            if line is None:
                break
            chunks.append(line)
            length += len(line)
        data = "".join(chunks)
        if 0 <= size < len(data):
            data, self._pending = data[:size], data[size:]
        else:
            self._pending = ""
        return data


def metric_samples_write(*, samples: Iterable[Sample]) -> int:
    """Write samples with one COPY; returns how many rows went in."""
    batch = list(samples)
    if not batch:
        return 0
    if any(sample.collected_at.tzinfo is None for sample in batch):
        raise ValueError("collected_at must be timezone-aware")
    if connection.vendor != "postgresql":
        raise ImproperlyConfigured("metric samples are written with PostgreSQL's COPY")
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.copy_expert(COPY_SQL, _CopySource(batch), size=COPY_CHUNK)
    except (DataError, psycopg2.DataError):
        # One bad document (e.g. a lone surrogate) must not lose the batch: row by row, each
        # in a savepoint, and the ones PostgreSQL refuses are logged and dropped.
        return _write_one_by_one([_copy_line(sample) for sample in batch])
    return len(batch)


def _write_one_by_one(lines: list[str]) -> int:
    written = 0
    for line in lines:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.copy_expert(COPY_SQL, io.StringIO(line))
            written += 1
        except (DataError, psycopg2.DataError) as error:
            device_id = line.split("\t", 1)[0]
            logger.error("metric sample of device %s dropped: %s", device_id, error)
    return written


# --- reads (selectors) ------------------------------------------------------------------------


def metric_sample_latest(*, device_id: int) -> MetricSample | None:
    return MetricSample.objects.filter(device_id=device_id).order_by("-collected_at", "-id").first()


def metric_samples_in_range(
    *,
    device_id: int,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> QuerySet[MetricSample]:
    """Samples of a device with ``since <= collected_at < until``, oldest first, at most `limit`."""
    queryset = MetricSample.objects.filter(device_id=device_id)
    if since is not None:
        queryset = queryset.filter(collected_at__gte=since)
    if until is not None:
        queryset = queryset.filter(collected_at__lt=until)
    limit = max(1, min(limit, RANGE_LIMIT_MAX))
    return queryset.order_by("collected_at", "id")[:limit]


# --- retention --------------------------------------------------------------------------------

_DELETE_SQL = """
DELETE FROM nms_metric_samples WHERE id IN (
    SELECT id FROM nms_metric_samples
    WHERE device_id = ANY(%(devices)s) AND collected_at < %(cutoff)s
    LIMIT %(chunk)s
)
"""
_DEVICES_PER_STATEMENT = 500


def metric_samples_prune(
    *, older_than: timedelta | None = None, chunk: int | None = None, now: datetime | None = None
) -> int:
    """Delete samples older than `older_than` (default: the retention setting); returns the
    number deleted. Each statement commits on its own and deletes at most `chunk` rows."""
    days = settings.CENSUS_NMS["METRICS_RETENTION_DAYS"]
    older_than = older_than if older_than is not None else timedelta(days=days)
    chunk = max(1, chunk or settings.CENSUS_NMS["RETENTION_CHUNK"])
    cutoff = (now or timezone.now()) - older_than
    device_ids: Sequence[int] = list(Device.objects.order_by("pk").values_list("pk", flat=True))
    deleted = 0
    for start in range(0, len(device_ids), _DEVICES_PER_STATEMENT):
        group = list(device_ids[start : start + _DEVICES_PER_STATEMENT])
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_DELETE_SQL, {"devices": group, "cutoff": cutoff, "chunk": chunk})
                removed = cursor.rowcount
            deleted += removed
            if removed < chunk:
                break
    if deleted:
        logger.info("metrics retention: %d sample(s) older than %s deleted", deleted, cutoff)
    return deleted
