"""Wake-up calls: Celery messages that carry a task id and nothing else, sent after commit."""

import logging
import uuid
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

from enumeration.choices import TaskKind
from enumeration.models import DomainEvent, Task
from enumeration.services.events import TASK_CREATED, events_record

logger = logging.getLogger(__name__)

# Kinds with a runner today. CLASSIFICATION tasks are created and wait for the classifier.
RUNNABLE_KINDS = (TaskKind.DISCOVERY_ENUMERATE,)


def _send(task_ids: list[str]) -> None:
    from enumeration.tasks import run_enumeration_task

    if settings.CENSUS_IN_PROCESS_WORKER:
        # The embedded default: no broker, nothing would consume a message. This process's
        # background worker (the web process has one) is woken instead; a process without one
        # (a management command) runs its work in the foreground, or leaves it in the database
        # for the next process that has one.
        from enumeration.services.inprocess import background_worker_wake

        background_worker_wake()
        return
    for task_id in task_ids:
        try:
            run_enumeration_task.apply_async(args=[task_id], retry=False)
        except Exception:
            # The row is safe in the database; the Reaper re-sends tasks left waiting too long.
            logger.warning("could not send task %s to the broker", task_id, exc_info=True)


def waiting_messages() -> int | None:
    """How many wake-up calls wait in the broker's queue for enumeration tasks; None when the
    broker cannot be asked. Messages a worker has received and not acknowledged do not count."""
    from enumeration.tasks import run_enumeration_task

    app = run_enumeration_task.app
    queue = app.amqp.router.route({}, run_enumeration_task.name)["queue"].name
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            try:
                return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
            except conn.channel_errors as exc:
                if str(getattr(exc, "reply_code", "")) == "404":  # AMQP's NOT_FOUND
                    return 0  # no such queue: Redis drops a queue's list once it is empty
                raise
    except Exception:
        logger.warning("could not ask the broker how many messages wait", exc_info=True)
        return None


def tasks_enqueue_on_commit(task_ids: Iterable[uuid.UUID | str]) -> None:
    ids = [str(task_id) for task_id in task_ids]
    if ids:
        transaction.on_commit(lambda: _send(ids), robust=True)


def tasks_create(tasks: list[Task]) -> list[Task]:
    """Save new tasks with their TaskCreated events (the outbox), then announce them after commit.

    Must run inside a transaction: the rows, the events and the messages stand or fall together.
    """
    created = Task.objects.bulk_create(tasks)
    events_record(
        DomainEvent(
            event_type=TASK_CREATED,
            aggregate_type="task",
            aggregate_id=str(task.pk),
            payload={
                "task_id": str(task.pk),
                "session_id": str(task.session_id),
                "kind": task.kind,
                "units": task.units,
            },
        )
        for task in created
    )
    tasks_enqueue_on_commit(task.pk for task in created if task.kind in RUNNABLE_KINDS)
    return created
