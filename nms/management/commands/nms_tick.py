"""Run the scheduler tick now, or in a loop (an operator's stand-in for beat).

Two runners at once (this and beat, or two of these) are safe: they claim disjoint windows of
time, so each deadline of a device is claimed by one of them.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

from django.conf import settings
from django.core.management.base import CommandParser

from nms.management.commands._postgresql import PostgreSQLCommand
from nms.services.scheduler import scheduler_tick


class Command(PostgreSQLCommand):
    needs_postgresql_for = "the scheduler tick"
    help = "Run the NMS scheduler tick once (claim due devices, fping, dispatch polls), or loop."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--loop", action="store_true", help="tick again every --every seconds")
        parser.add_argument(
            "--every",
            type=float,
            default=None,
            help="seconds between ticks (default CENSUS_NMS_TICK_SECONDS)",
        )
        parser.add_argument(
            "--duration", type=float, default=None, help="with --loop: stop after this many seconds"
        )

    def handle(self, *args: object, **options: object) -> None:
        every = float(options["every"] or settings.CENSUS_NMS["TICK_SECONDS"])
        duration = options["duration"]
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        started = time.monotonic()
        while True:
            began = time.monotonic()
            result = scheduler_tick()
            if result.claimed or not options["loop"]:
                self.stdout.write(result.summary())
            if not options["loop"] or stopping:
                return
            if duration is not None and time.monotonic() - started >= float(duration):
                return
            pause = every - (time.monotonic() - began)
            while pause > 0 and not stopping:
                time.sleep(min(pause, 0.1))
                pause -= 0.1
            if stopping:
                return
