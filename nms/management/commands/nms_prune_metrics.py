"""Delete metric samples older than the retention (what the hourly beat job does)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandParser

from nms.services.metrics import metric_samples_prune


class Command(BaseCommand):
    help = "Delete NMS metric samples older than --days (default: the retention setting)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, default=None)

    def handle(self, *args: object, **options: object) -> None:
        days = options["days"]
        older_than = timedelta(days=float(days)) if days is not None else None  # type: ignore[arg-type]
        deleted = metric_samples_prune(older_than=older_than)
        self.stdout.write(f"deleted {deleted} sample(s)")
