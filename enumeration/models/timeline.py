from django.db import models
from django.utils import timezone


class Timeline(models.Model):
    """Seed 001's Timeline value object, folded into the rows that have a lifecycle."""

    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    last_update = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        abstract = True

    def update_last_update(self) -> None:
        self.last_update = timezone.now()

    def mark_timeline_started(self) -> None:
        now = timezone.now()
        self.started_at = self.started_at or now
        self.last_update = now

    def mark_timeline_completed(self) -> None:
        now = timezone.now()
        self.completed_at = now
        self.last_update = now

    @property
    def elapsed_seconds(self) -> float:
        """From start to completion; 0 until both are known."""
        if self.started_at is None or self.completed_at is None:
            return 0.0
        return (self.completed_at - self.started_at).total_seconds()

    @property
    def is_completed(self) -> bool:
        return self.completed_at is not None
