"""Log context: every record carries the session and task it concerns, when there is one."""

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

_session_id: ContextVar[str | None] = ContextVar("census_session_id", default=None)
_task_id: ContextVar[str | None] = ContextVar("census_task_id", default=None)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.session_id = getattr(record, "session_id", None) or _session_id.get()
        record.task_id = getattr(record, "task_id", None) or _task_id.get()
        return True


@contextlib.contextmanager
def log_context(*, session_id: object = None, task_id: object = None) -> Iterator[None]:
    tokens = []
    if session_id is not None:
        tokens.append((_session_id, _session_id.set(str(session_id))))
    if task_id is not None:
        tokens.append((_task_id, _task_id.set(str(task_id))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
