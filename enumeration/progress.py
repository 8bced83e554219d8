"""A live progress line for management commands: directories and files done, rate, elapsed."""

import sys
import time
from typing import TextIO

from enumeration.models import SessionState


class ProgressLine:
    def __init__(self, stream: TextIO | None = None, min_interval: float = 0.2) -> None:
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self.min_interval = min_interval if self.stream.isatty() else 5.0
        self._last = 0.0

    def render(self, session: SessionState) -> str:
        elapsed = time.monotonic() - self.started
        rate = session.items_found / elapsed if elapsed > 0 else 0.0
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
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
