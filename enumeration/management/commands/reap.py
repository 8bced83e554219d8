from django.core.management.base import BaseCommand

from enumeration.services.sessions import tasks_reap


class Command(BaseCommand):
    help = "Run the Reaper once: requeue expired leases, fail tasks past their limit, re-send."

    def handle(self, *args, **options) -> None:
        result = tasks_reap()
        self.stdout.write(
            f"requeued {result.requeued}, failed {result.failed}, re-sent {result.resent}"
        )
