"""Re-encrypt every credential payload under the newest key (the first of CENSUS_ENCRYPTION_KEYS).

Rotating a key: put the new key first in CENSUS_ENCRYPTION_KEYS (keep the old ones after it),
restart, run this, then remove the old keys.
"""

from django.core.management.base import BaseCommand, CommandError

from nms.services.credentials import credentials_rotate


class Command(BaseCommand):
    help = "Re-encrypt every credential payload under the newest encryption key."

    def handle(self, *args: object, **options: object) -> None:
        result = credentials_rotate()
        self.stdout.write(f"{result.rotated} credential payload(s) re-encrypted.")
        if result.unreadable:
            ids = ", ".join(str(i) for i in result.unreadable)
            raise CommandError(
                f"{len(result.unreadable)} payload(s) cannot be decrypted with the configured "
                f"keys and were left as they are (credential profile ids: {ids})."
            )
