"""Single-level, non-recursive listing of a local directory with ``os.scandir``."""

import os
from collections.abc import Collection, Iterator
from hashlib import blake2b as _blake2b
from stat import S_ISREG

from enumeration.choices import RecordType
from enumeration.connectors.base import (
    MTIME_MAX_NS,
    MTIME_MIN_NS,
    Entry,
    UnitUnreadable,
    UnitVanished,
    mtime_out_of_range,
)
from enumeration.connectors.keys import encode_key

_FILE = RecordType.FILE
_OTHER = RecordType.OTHER


class FilesystemConnector:
    def list_unit(
        self, unit: bytes, *, exclude: Collection[str], batch_size: int
    ) -> Iterator[list[Entry]]:
        try:
            iterator = os.scandir(unit)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise UnitVanished(f"{exc.strerror or exc}: {encode_key(unit)}") from exc
        except OSError as exc:
            raise UnitUnreadable(f"{exc.strerror or exc}: {encode_key(unit)}") from exc
        batch: list[Entry] = []
        skipped = 0
        with iterator:
            while True:
                try:
                    dir_entry = next(iterator)
                except StopIteration:
                    break
                except OSError as exc:
                    raise UnitUnreadable(f"{exc.strerror or exc}: {encode_key(unit)}") from exc
                path = dir_entry.path
                digest = _blake2b(path, digest_size=16).digest()  # keys.key_digest, inlined
                if exclude and digest.hex() in exclude:
                    skipped += 1
                    if skipped == batch_size:
                        # A long run of excluded entries yields what it has, even nothing,
                        # so that the caller keeps its lease while it goes by.
                        skipped = 0
                        yield batch
                        batch = []
                    continue
                # Runs once per entry: a regular file, the common case, costs one lstat here.
                try:
                    if dir_entry.is_dir(follow_symlinks=False):
                        entry = Entry(RecordType.DIRECTORY, path, digest, dir_entry.name)
                    elif dir_entry.is_symlink():
                        entry = _symlink(dir_entry, path, digest)
                    else:
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
                except FileNotFoundError:
                    continue  # removed between the listing and the stat: not there any more
                except OSError as exc:
                    entry = Entry(
                        _OTHER, path, digest, dir_entry.name, metadata={"error": str(exc)}
                    )
                batch.append(entry)
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch


def _symlink(dir_entry: os.DirEntry, path: bytes, digest: bytes) -> Entry:
    # Recorded, never followed: a symlink loop cannot hang a run.
    target = os.readlink(path)
    return Entry(
        RecordType.SYMLINK, path, digest, dir_entry.name, metadata={"target": encode_key(target)}
    )
