import os

from django.core.management.base import BaseCommand, CommandError

from enumeration.sampletree import sample_tree_create


class Command(BaseCommand):
    help = (
        "Generate a sample directory tree (unicode and space-laden names, a non-UTF-8 name, "
        "empty directories, a symlink loop) to enumerate."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("path")
        parser.add_argument("--directories", type=int, default=1000)
        parser.add_argument("--files", type=int, default=10000)
        parser.add_argument("--depth", type=int, default=8)
        parser.add_argument("--unreadable", action="store_true", help="add a chmod 000 directory")

    def handle(self, *args, path: str, directories: int, files: int, depth: int, **options):
        if os.path.exists(path):
            raise CommandError(f"{path!r} exists already; choose a new path.")
        if directories < depth or files < 1:
            raise CommandError("Need at least --depth directories and one file.")
        tree = sample_tree_create(
            path,
            directories=directories,
            files=files,
            depth=depth,
            unreadable=options["unreadable"],
        )
        self.stdout.write(
            f"created {tree.directories:,} directories and {tree.files:,} files in {path}"
        )
