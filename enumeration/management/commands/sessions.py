from django.core.management.base import BaseCommand

from enumeration.choices import SessionStatus
from enumeration.models import SessionState


class Command(BaseCommand):
    help = "List enumeration sessions with their status and counts."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--status", choices=SessionStatus.values)
        parser.add_argument("--limit", type=int, default=20)

    def handle(self, *args, status: str | None, limit: int, **options) -> None:
        sessions = SessionState.objects.select_related("target").order_by("-created_at")
        if status:
            sessions = sessions.filter(status=status)
        header = (
            f"{'session':36}  {'status':19}  {'dirs':>9}  {'files':>11}  {'failed':>6}  "
            f"{'created':19}  target"
        )
        self.stdout.write(header)
        for s in sessions[:limit]:
            self.stdout.write(
                f"{s.pk!s:36}  {s.status:19}  {s.total_batches:>9,}  {s.files_found:>11,}  "
                f"{s.failed_batches:>6,}  {s.created_at:%Y-%m-%d %H:%M:%S}  {s.target.location}"
            )
