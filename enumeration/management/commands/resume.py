import uuid

from django.core.management.base import BaseCommand, CommandError

from enumeration.management.commands._follow import follow_session, note_when_nothing_runs_it
from enumeration.models import SessionState
from enumeration.services.sessions import SessionConflict, resume_target


class Command(BaseCommand):
    help = "Resume an enumeration session (retries its failed units if it had finished)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("session_id")
        parser.add_argument("--wait", action="store_true", help="follow it to the end")

    def handle(self, *args, session_id: str, wait: bool, **options) -> None:
        try:
            session = resume_target(session_id=uuid.UUID(session_id))
        except ValueError as exc:
            if isinstance(exc, SessionConflict):
                raise CommandError(str(exc)) from exc
            raise CommandError(f"{session_id!r} is not a session id.") from exc
        except SessionState.DoesNotExist as exc:
            raise CommandError(f"No session {session_id}.") from exc
        self.stdout.write(f"session {session.pk} resumed: {session.status}")
        if not wait:
            note_when_nothing_runs_it(session, self.stdout)
            return
        session = follow_session(session, self.stdout)
        self.stdout.write(f"session {session.pk} {session.status}")
