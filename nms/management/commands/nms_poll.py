"""Poll devices now, in this process (what a `poll` worker does with a poll task)."""

from __future__ import annotations

from django.core.management.base import CommandParser

from nms.management.commands._postgresql import PostgreSQLCommand
from nms.services.poller import database_now, devices_poll


class Command(PostgreSQLCommand):
    needs_postgresql_for = "the poller"
    help = "Poll the given active devices now, in this process; prints what happened."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_ids", nargs="+", type=int)

    def handle(self, *args: object, **options: object) -> None:
        outcome = devices_poll(
            device_ids=options["device_ids"],  # type: ignore[arg-type]
            dispatched_at=database_now(),
        )
        self.stdout.write(
            f"polled {outcome.polled} (skipped {outcome.skipped}: inactive or polled within "
            f"half an interval), succeeded {len(outcome.succeeded)}, failed {len(outcome.failed)}, "
            f"deactivated {len(outcome.deactivated)}, samples written {outcome.samples}"
        )
        for device_id, why in sorted({**outcome.failed, **outcome.not_counted}.items()):
            self.stdout.write(f"  device {device_id}: {why}")
