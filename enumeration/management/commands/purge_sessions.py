import uuid
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from enumeration.connectors.keys import display_key
from enumeration.models import SessionState
from enumeration.services.retention import (
    SessionNotFinished,
    session_purge_start,
    sessions_expired,
    sessions_purge_marked,
)


class Command(BaseCommand):
    help = (
        "Delete finished enumeration sessions with their records: the given ones, or those past "
        "retention (CENSUS_SESSION_RETENTION_DAYS, or --older-than-days), each target's newest "
        "kept. Deletions left half done by an earlier run are finished first."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("session_ids", nargs="*", metavar="SESSION_ID")
        parser.add_argument("--older-than-days", type=int, help="instead of the setting")
        parser.add_argument(
            "--keep-latest",
            type=int,
            help="finished sessions kept per target whatever their age (default: the setting)",
        )
        parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")

    def handle(
        self,
        *args,
        session_ids: list[str],
        older_than_days: int | None,
        keep_latest: int | None,
        dry_run: bool,
        **options,
    ) -> None:
        cfg = settings.CENSUS
        keep = cfg["SESSION_RETENTION_KEEP"] if keep_latest is None else keep_latest
        # An explicit --older-than-days 0 means every finished session; the setting's 0 means
        # retention is off.
        days = older_than_days if older_than_days is not None else cfg["SESSION_RETENTION_DAYS"]
        if keep < 0 or days < 0:
            raise CommandError("--older-than-days and --keep-latest cannot be negative.")
        if session_ids:
            chosen = list(self._sessions(session_ids))
        elif older_than_days is not None or days:
            chosen = list(
                sessions_expired(older_than=timedelta(days=days), keep_latest=keep).select_related(
                    "target"
                )
            )
        else:
            chosen = []
            self.stdout.write(
                "No retention set (CENSUS_SESSION_RETENTION_DAYS is 0 and no --older-than-days): "
                "only deletions under way are finished."
            )
        for session in chosen:
            completed = f"{session.completed_at:%Y-%m-%d %H:%M}" if session.completed_at else "-"
            self.stdout.write(
                f"{'would delete' if dry_run else 'deleting'} session {session.pk} "
                f"({session.status}, completed {completed}, {session.items_found:,} records) "
                f"of {display_key(session.target.location)}"
            )
        if dry_run:
            return
        for session in chosen:
            try:
                session_purge_start(session_id=session.pk)
            except SessionNotFinished as exc:
                raise CommandError(str(exc)) from exc
        result = sessions_purge_marked()
        self.stdout.write(f"deleted {result.sessions} sessions ({result.records:,} output records)")

    def _sessions(self, session_ids: list[str]):
        for raw in session_ids:
            try:
                yield SessionState.objects.select_related("target").get(pk=uuid.UUID(raw))
            except ValueError as exc:
                raise CommandError(f"{raw!r} is not a session id.") from exc
            except SessionState.DoesNotExist as exc:
                raise CommandError(f"No session {raw}.") from exc
