"""What the monitoring commands share: the monitor runs on PostgreSQL only."""

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from nms.services.poller import require_postgresql


class PostgreSQLCommand(BaseCommand):
    """A command of the monitor. On the embedded default (SQLite) it stops with a one-line
    error that says what it needs, before doing anything."""

    needs_postgresql_for: str

    def execute(self, *args: object, **options: object) -> str | None:
        try:
            require_postgresql(self.needs_postgresql_for)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        return super().execute(*args, **options)
