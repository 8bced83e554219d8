from django.core.management.base import BaseCommand

from config.periodic import periodic_jobs_install


class Command(BaseCommand):
    help = "Write Census's periodic jobs into django-celery-beat's tables (migrate does it too)."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"{periodic_jobs_install()} periodic jobs installed")
