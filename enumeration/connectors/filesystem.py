"""Single-level, non-recursive listing of a local directory with ``os.scandir``.

Where the compiled listing is built (``compiled.py``), it does the same per entry in C: the
records of directories, files and other entries, and their digests. What it hands back (a
symlink, an entry whose ``lstat`` failed) gets its record from ``_entry_at`` here, as in the
pure-Python listing.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import blake2b as _blake2b
from itertools import islice
from stat import S_ISDIR, S_ISLNK, S_ISREG

from enumeration.choices import RecordType
from enumeration.connectors.base import (
    MTIME_MAX_NS,
    MTIME_MIN_NS,
    Entry,
    Exclusion,
    UnitUnreadable,
    UnitVanished,
    mtime_out_of_range,
)
from enumeration.connectors.compiled import compiled
from enumeration.connectors.keys import encode_key

_FILE = RecordType.FILE
_DIRECTORY = RecordType.DIRECTORY
_OTHER = RecordType.OTHER


@contextmanager
def _unit_errors(unit: bytes, *, opening: bool):
    """A listing's OSError as the connector's: a unit that is gone, or one that cannot be read."""
    try:
        yield
    except (FileNotFoundError, NotADirectoryError) as exc:
        if not opening:
            raise UnitUnreadable(f"{exc.strerror or exc}: {encode_key(unit)}") from exc
        raise UnitVanished(f"{exc.strerror or exc}: {encode_key(unit)}") from exc
    except OSError as exc:
        raise UnitUnreadable(f"{exc.strerror or exc}: {encode_key(unit)}") from exc


class FilesystemConnector:
    def __init__(self, *, compiled_listing: bool | None = None) -> None:
        """``compiled_listing``: the compiled listing or not; by default, where it is built and
        switched on (``CENSUS_COMPILED_LISTING``)."""
        self._scan = compiled() if compiled_listing is not False else None
        if compiled_listing and self._scan is None:
            raise RuntimeError("the compiled listing is not built or is switched off")

    def list_unit(
        self, unit: bytes, *, exclude: Exclusion | None = None, batch_size: int
    ) -> Iterator[list[Entry]]:
        if self._scan is not None:
            return self._list_compiled(unit, exclude, batch_size)
        return self._list(unit, exclude, batch_size)

    def _list(
        self, unit: bytes, exclude: Exclusion | None, batch_size: int
    ) -> Iterator[list[Entry]]:
        with _unit_errors(unit, opening=True):
            iterator = os.scandir(unit)
        with iterator:
            while True:
                with _unit_errors(unit, opening=False):
                    listed = list(islice(iterator, batch_size))
                if not listed:
                    return
                digests = [_blake2b(d.path, digest_size=16).digest() for d in listed]  # key_digest
                skip = exclude.among(digests) if exclude is not None else ()
                batch: list[Entry] = []
                for dir_entry, digest in zip(listed, digests, strict=True):
                    if skip and digest in skip:
                        continue
                    entry = _entry(dir_entry, digest)
                    if entry is not None:
                        batch.append(entry)
                # Even empty (every entry excluded, or removed): the caller renews its lease.
                yield batch

    def _list_compiled(
        self, unit: bytes, exclude: Exclusion | None, batch_size: int
    ) -> Iterator[list[Entry]]:
        with _unit_errors(unit, opening=True):
            scanner = self._scan.Scanner(unit)
        with scanner:
            while True:
                with _unit_errors(unit, opening=False):
                    listed = scanner.next_batch(batch_size)
                if listed is None:
                    return
                batch, handed_back = listed
                if handed_back:
                    for at, path, name, digest in handed_back:
                        batch[at] = _entry_at(path, name, digest)
                    batch = [e for e in batch if e is not None]
                if exclude is not None and batch:
                    skip = exclude.among([e.digest for e in batch])
                    if skip:
                        batch = [e for e in batch if e.digest not in skip]
                yield batch


def _entry(dir_entry: os.DirEntry, digest: bytes) -> Entry | None:
    """The record of one listed entry; None when it was removed after the listing."""
    # Runs once per entry: a directory costs no system call, anything else one lstat.
    try:
        is_directory = dir_entry.is_dir(follow_symlinks=False)
    except OSError:
        is_directory = False  # its lstat failed: _entry_at records why
    if is_directory:
        return Entry(_DIRECTORY, dir_entry.path, digest, dir_entry.name)
    return _entry_at(dir_entry.path, dir_entry.name, digest)


def _entry_at(path: bytes, name: bytes, digest: bytes) -> Entry | None:
    """The record of the entry at ``path``, by its lstat; None when it is not there any more."""
    try:
        st = os.lstat(path)
        if S_ISDIR(st.st_mode):
            return Entry(_DIRECTORY, path, digest, name)
        if S_ISLNK(st.st_mode):
            # Recorded, never followed: a symlink loop cannot hang a run.
            target = encode_key(os.readlink(path))
            return Entry(RecordType.SYMLINK, path, digest, name, metadata={"target": target})
    except FileNotFoundError:
        return None  # removed between the listing and the lstat: not there any more
    except OSError as exc:
        return Entry(_OTHER, path, digest, name, metadata={"error": str(exc)})
    record_type = _FILE if S_ISREG(st.st_mode) else _OTHER
    mtime = st.st_mtime_ns
    if MTIME_MIN_NS <= mtime <= MTIME_MAX_NS:
        return Entry(record_type, path, digest, name, st.st_size, mtime)
    return Entry(record_type, path, digest, name, st.st_size, None, mtime_out_of_range(mtime))
