"""The transactional outbox for domain events."""

from django.db import models
from django.utils import timezone


class DomainEvent(models.Model):
    """A domain event, written in the transaction that caused it, dispatched after commit.

    The payload carries ids and facts, never credentials. Shape: ``docs/events.md``.
    """

    event_type = models.CharField(max_length=64)
    aggregate_type = models.CharField(max_length=64)
    aggregate_id = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    occurred_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # The dispatch that holds the event, and until when: one that dies before it has handed the
    # event on is redone once the claim has expired (at least once).
    claimed_by = models.CharField(
        max_length=32, blank=True, default="", db_default="", editable=False
    )
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["id"],
                condition=models.Q(dispatched_at__isnull=True),
                name="event_undispatched",
            ),
            # Retention deletes the oldest dispatched first, a chunk at a time.
            models.Index(
                fields=["dispatched_at"],
                condition=models.Q(dispatched_at__isnull=False),
                name="event_dispatched",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.aggregate_id}"

    def envelope(self) -> dict:
        return {
            "id": self.pk,
            "type": self.event_type,
            "aggregate": {"type": self.aggregate_type, "id": self.aggregate_id},
            "occurred_at": self.occurred_at.isoformat(),
            "payload": self.payload,
        }
