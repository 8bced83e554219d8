"""A live progress line for management commands: directories and files done, rate, elapsed."""

import sys
import time
from typing import TextIO

from django.core.management.base import OutputWrapper

from enumeration.models import SessionState


class ProgressLine:
    """On a terminal one line rewritten in place (every ``min_interval`` seconds); elsewhere a
    line every 5 seconds. The rate counts what was found since this line started (a resumed
    session's earlier items are not this run's)."""

    def __init__(self, stream: TextIO | OutputWrapper | None = None, min_interval: float = 0.2):
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.min_interval = min_interval if self.stream.isatty() else 5.0
        self._last = 0.0
        self._items_at_start: int | None = None

    def render(self, session: SessionState) -> str:
        if self._items_at_start is None:
            self._items_at_start = session.items_found
        elapsed = time.monotonic() - self.started
        found_here = session.items_found - self._items_at_start
        rate = found_here / elapsed if elapsed > 0 else 0.0
        minutes, seconds = divmod(int(elapsed), 60)
        return (
            f"{session.status:<19} directories {session.total_batches:>9,}  "
            f"files {session.files_found:>11,}  {rate:>10,.0f} items/s  "
            f"failed units {session.failed_batches:,}  elapsed {minutes:02d}:{seconds:02d}"
        )

    def update(self, session: SessionState, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self.min_interval:
            return
        self._last = now
        line = self.render(session)
        if self.stream.isatty():
            self._write("\r" + line + ("\n" if final else ""))
        else:
            self._write(line + "\n")
        self.stream.flush()

    def _write(self, text: str) -> None:
        # A command's OutputWrapper ends every write with a newline unless told otherwise, which
        # would turn the line rewritten in place into a scroll of lines.
        if isinstance(self.stream, OutputWrapper):
            self.stream.write(text, ending="")
        else:
            self.stream.write(text)
