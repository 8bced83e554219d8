from django.core.management.base import BaseCommand, CommandError

from enumeration.management.commands._follow import follow_session, note_when_nothing_runs_it
from enumeration.services.sessions import SessionConflict, TargetInvalid, enumerate_target


class Command(BaseCommand):
    help = "Start an enumeration of a directory. With --wait, follow it to the end."

    def add_arguments(self, parser) -> None:
        parser.add_argument("path", help="the directory to enumerate")
        parser.add_argument("--name", help="a name for the target (default: the directory's)")
        parser.add_argument(
            "--wait",
            action="store_true",
            help="follow the session with a live progress line; on the embedded default, "
            "run it to completion in this process",
        )

    def handle(self, *args, path: str, name: str | None, wait: bool, **options) -> None:
        try:
            session = enumerate_target(path=path, name=name)
        except (TargetInvalid, SessionConflict) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"session {session.pk} started for {session.target.location}")
        if not wait:
            note_when_nothing_runs_it(session, self.stdout)
            return
        session = follow_session(session, self.stdout)
        other = session.items_found - session.files_found - session.directories_found
        self.stdout.write(
            f"session {session.pk} {session.status}: {session.items_found:,} items "
            f"({session.files_found:,} files, {session.directories_found:,} directories, "
            f"{other:,} other: symlinks, devices, sockets) "
            f"in {session.total_batches:,} directories listed (the target's included), "
            f"{session.failed_batches:,} failed"
        )
        if session.failure_reason:
            self.stdout.write(f"reason: {session.failure_reason}")
