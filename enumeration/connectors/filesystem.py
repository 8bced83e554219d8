"""Single-level, non-recursive listing of a local directory with ``os.scandir``."""

import os
from collections.abc import Iterator
from hashlib import blake2b as _blake2b
from itertools import islice
from stat import S_ISREG

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
from enumeration.connectors.keys import encode_key

_FILE = RecordType.FILE
_OTHER = RecordType.OTHER


class FilesystemConnector:
    def list_unit(
        self, unit: bytes, *, exclude: Exclusion | None = None, batch_size: int
    ) -> Iterator[list[Entry]]:
        try:
            iterator = os.scandir(unit)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise UnitVanished(f"{exc.strerror or exc}: {encode_key(unit)}") from exc
        except OSError as exc:
            raise UnitUnreadable(f"{exc.strerror or exc}: {encode_key(unit)}") from exc
        with iterator:
            while True:
                try:
                    listed = list(islice(iterator, batch_size))
                except OSError as exc:
                    raise UnitUnreadable(f"{exc.strerror or exc}: {encode_key(unit)}") from exc
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


def _entry(dir_entry: os.DirEntry, digest: bytes) -> Entry | None:
    """The record of one listed entry; None when it was removed after the listing."""
    # Runs once per entry: a regular file, the common case, costs one lstat here.
    path = dir_entry.path
    try:
        if dir_entry.is_dir(follow_symlinks=False):
            return Entry(RecordType.DIRECTORY, path, digest, dir_entry.name)
        if dir_entry.is_symlink():
            return _symlink(dir_entry, path, digest)
        st = dir_entry.stat(follow_symlinks=False)
        mtime = st.st_mtime_ns
        entry = Entry(
            _FILE if S_ISREG(st.st_mode) else _OTHER,
            path,
            digest,
            dir_entry.name,
            st.st_size,
            mtime,
        )
        if not MTIME_MIN_NS <= mtime <= MTIME_MAX_NS:
            entry.mtime_ns, entry.metadata = None, mtime_out_of_range(mtime)
        return entry
    except FileNotFoundError:
        return None  # removed between the listing and the stat: not there any more
    except OSError as exc:
        return Entry(_OTHER, path, digest, dir_entry.name, metadata={"error": str(exc)})


def _symlink(dir_entry: os.DirEntry, path: bytes, digest: bytes) -> Entry:
    # Recorded, never followed: a symlink loop cannot hang a run.
    target = os.readlink(path)
    return Entry(
        RecordType.SYMLINK, path, digest, dir_entry.name, metadata={"target": encode_key(target)}
    )
