"""The compiled listing and row encoding (``enumeration/connectors/_scan.c``) against their
pure-Python twins: the same batches of the same records, the same COPY bytes, the same errors.

The rest of the suite runs on whichever is built and switched on; CI builds it, and a test here
fails there if it was not.
"""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core.checks import run_checks
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from enumeration.choices import RecordType
from enumeration.connectors import Entry, UnitVanished
from enumeration.connectors.base import MTIME_MAX_NS, MTIME_MIN_NS
from enumeration.connectors.compiled import BUILT, compiled
from enumeration.connectors.filesystem import FilesystemConnector, _entry_at
from enumeration.connectors.keys import key_digest
from enumeration.services import engine
from tests.fixtures.workers import drop_file_privileges_prefix

needs_build = pytest.mark.skipif(not BUILT, reason="the compiled listing is not built")


@pytest.fixture
def use_compiled(settings):
    """Switch the compiled code on or off for the code under test (``engine._binary_rows``)."""

    def use(on: bool) -> None:
        settings.CENSUS = {**settings.CENSUS, "COMPILED_LISTING": on}

    return use


def test_the_compiled_listing_is_built_where_ci_runs():
    # CI must test the compiled code: without this a failed build would only skip its tests
    if os.environ.get("CI") != "true":
        pytest.skip("not CI")
    assert BUILT, "CI=true but enumeration/connectors/_scan.c was not built (make venv)"


def test_without_the_build_manage_py_check_says_so(settings, monkeypatch):
    from enumeration.connectors import compiled as compiled_module

    monkeypatch.setattr(compiled_module, "BUILT", False)
    assert [m.id for m in run_checks()] == ["census.W001"]
    # And switching it off says it is meant
    settings.CENSUS = {**settings.CENSUS, "COMPILED_LISTING": False}
    assert "census.W001" not in [m.id for m in run_checks()]


@needs_build
def test_switched_off_the_pure_python_code_runs(use_compiled):
    use_compiled(False)
    assert compiled() is None
    with pytest.raises(RuntimeError, match="not built or is switched off"):
        FilesystemConnector(compiled_listing=True)
    use_compiled(True)
    assert compiled() is not None


def _awkward_directory(root) -> bytes:
    """One directory of every kind of entry the listing meets, and one level below it."""
    root = os.fsencode(root)
    for i in range(40):
        with open(os.path.join(root, b"f%02d" % i), "wb") as f:
            f.write(b"x" * i)
    for name in (
        "ünïcödé näme",
        "with spaces and\ttab",
        "base64:looks-encoded",
        "日本語のファイル",
        ".hidden",
        "..dots",
    ):
        open(os.path.join(root, os.fsencode(name)), "wb").close()
    open(os.path.join(root, b"not-utf8-\xff\xfe"), "wb").close()
    os.mkdir(os.path.join(root, b"subdir"))
    os.mkdir(os.path.join(root, b"dir-\xc3\x28-bad"))
    open(os.path.join(root, b"subdir", b"inner"), "wb").close()
    os.symlink(root, os.path.join(root, b"loop"))
    os.symlink(b"/does/not/exist", os.path.join(root, b"dangling"))
    os.symlink(b"target-\xff", os.path.join(root, b"link-to-bytes"))
    os.mkfifo(os.path.join(root, b"fifo"))
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(root, b"sock"))
    listener.close()
    past = os.path.join(root, b"before-1970")
    open(past, "wb").close()
    os.utime(past, ns=(0, -1_234_567_891_234))  # a negative time with a fraction
    return root


def _listing(unit: bytes, *, compiled_listing: bool, batch_size: int, exclude=None):
    connector = FilesystemConnector(compiled_listing=compiled_listing)
    return list(connector.list_unit(unit, exclude=exclude, batch_size=batch_size))


@needs_build
@pytest.mark.parametrize("batch_size", [1, 3, 500])
def test_the_compiled_listing_gives_the_pure_python_listings_batches(tmp_path, batch_size):
    # Given a directory of every kind of entry
    root = _awkward_directory(tmp_path)
    # When both listings list it, and the level below it
    for unit in (root, os.path.join(root, b"subdir"), root + b"/"):
        python = _listing(unit, compiled_listing=False, batch_size=batch_size)
        native = _listing(unit, compiled_listing=True, batch_size=batch_size)
        # Then they give the same batches of the same records, in the same order
        assert native == python
        assert all(type(e) is Entry for batch in native for e in batch)
    entries = {e.name: e for batch in native for e in batch}
    assert len(entries) == 40 + 6 + 1 + 2 + 3 + 3
    # And each record is what the entry is: nothing followed, every name kept as its bytes
    assert entries[b"loop"].record_type == RecordType.SYMLINK
    assert entries[b"loop"].metadata == {"target": os.fsdecode(root)}
    assert entries[b"link-to-bytes"].metadata == {"target": "base64:dGFyZ2V0Lf8="}
    assert entries[b"subdir"].record_type == RecordType.DIRECTORY
    assert entries[b"subdir"].size is None
    assert entries[b"fifo"].record_type == RecordType.OTHER
    assert entries[b"sock"].record_type == RecordType.OTHER
    assert entries[b"f07"].size == 7
    assert entries[b"not-utf8-\xff\xfe"].key == root + b"/not-utf8-\xff\xfe"
    assert entries[b"before-1970"].mtime_ns == -1_234_567_891_234
    assert all(e.digest == key_digest(e.key) for e in entries.values())


@needs_build
def test_times_past_64_bits_of_nanoseconds_are_judged_as_in_python(tmpfs_path):
    # Given files whose times are near, inside and past the range a record holds
    times = {
        b"late": 10**19,  # past 2**63 ns: the compiled listing hands it back
        b"far-future": MTIME_MAX_NS + 10**9,
        b"far-past": MTIME_MIN_NS - 10**9,
        b"last": MTIME_MAX_NS - MTIME_MAX_NS % 10**9,
    }
    for name, ns in times.items():
        path = os.path.join(os.fsencode(tmpfs_path), name)
        open(path, "wb").close()
        os.utime(path, ns=(ns, ns))
    unit = os.fsencode(tmpfs_path)
    # Then both listings give the same records
    native = _listing(unit, compiled_listing=True, batch_size=10)
    assert native == _listing(unit, compiled_listing=False, batch_size=10)
    entries = {e.name: e for e in native[0]}
    assert entries[b"late"].mtime_ns == 10**19 and entries[b"late"].metadata is None
    assert entries[b"last"].mtime_ns == times[b"last"]
    assert entries[b"far-future"].mtime_ns is None
    assert entries[b"far-future"].metadata["mtime_ns"] == times[b"far-future"]
    assert entries[b"far-past"].metadata["mtime_ns"] == times[b"far-past"]


@needs_build
def test_an_exclusion_skips_the_same_entries_and_still_yields_a_batch_for_each(tmp_path):
    # Given a directory of 25 files, 12 of them staged by an earlier attempt
    unit = os.fsencode(tmp_path)
    for i in range(25):
        (tmp_path / f"f{i:02d}").write_text("x")
    staged = {key_digest(os.path.join(unit, b"f%02d" % i)) for i in range(12)}
    asked = []

    class Staged:
        def among(self, digests):
            asked.append(len(digests))
            return staged & set(digests)

    # When both listings resume it
    native = _listing(unit, compiled_listing=True, batch_size=5, exclude=Staged())
    python = _listing(unit, compiled_listing=False, batch_size=5, exclude=Staged())
    # Then each yields a batch per five entries listed, without the staged ones
    assert [len(b) for b in native] == [len(b) for b in python]
    assert sorted(e.name for b in native for e in b) == sorted(e.name for b in python for e in b)
    assert len(native) == 5 and sum(map(len, native)) == 13
    assert asked == [5] * 10


@pytest.mark.parametrize("compiled_listing", [True, False], ids=["compiled", "python"])
def test_a_unit_that_is_gone_or_not_a_directory_is_vanished(tmp_path, compiled_listing):
    if compiled_listing and not BUILT:
        pytest.skip("the compiled listing is not built")
    (tmp_path / "file").write_text("x")
    for path, message in ((b"missing", "No such file or directory"), (b"file", "Not a directory")):
        unit = os.path.join(os.fsencode(tmp_path), path)
        with pytest.raises(UnitVanished, match=f"{message}: {tmp_path}/{os.fsdecode(path)}$"):
            _listing(unit, compiled_listing=compiled_listing, batch_size=10)
    with pytest.raises(ValueError, match="embedded null"):
        _listing(b"/tmp/a\x00b", compiled_listing=compiled_listing, batch_size=10)


@needs_build
def _in_a_process(
    script: str, *, prefix: Sequence[str] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``script`` with Django set up in a new Python process (started through ``prefix``,
    with ``env`` added to this one's environment), from the repository's root."""
    return subprocess.run(
        [*prefix, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **(env or {})},
        cwd=Path(__file__).parent.parent,
    )


def test_an_unreadable_unit_is_unreadable_in_both_listings(tmp_path):
    # Given a directory only its owner may list, and a process that is not its owner
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "secret").write_text("x")
    locked.chmod(0o000)
    script = f"""
import django; django.setup()
from enumeration.connectors.filesystem import FilesystemConnector
for compiled in (True, False):
    connector = FilesystemConnector(compiled_listing=compiled)
    try:
        list(connector.list_unit({bytes(locked)!r}, batch_size=5))
    except Exception as exc:
        print(type(exc).__name__, exc)
"""
    try:
        out = _in_a_process(script, prefix=drop_file_privileges_prefix())
    finally:
        locked.chmod(0o755)
    # Then both say so, the same way
    expected = f"UnitUnreadable Permission denied: {locked}"
    assert out.stdout.splitlines() == [expected, expected], out.stderr


def test_an_entry_gone_before_its_lstat_has_no_record(tmp_path):
    assert _entry_at(os.fsencode(tmp_path / "gone"), b"gone", b"\0" * 16) is None


# --- binary COPY rows ---------------------------------------------------------------------------


def _rows(use_compiled, on: bool, groups, ids):
    use_compiled(on)
    task = SimpleNamespace(session_id=uuid.UUID(int=1), pk=uuid.UUID(int=2))
    return engine._binary_rows(task, groups, None if ids is None else iter(ids))


@needs_build
@pytest.mark.parametrize("with_ids", [True, False])
def test_the_compiled_rows_are_the_pure_python_rows_byte_for_byte(tmp_path, use_compiled, with_ids):
    # Given what the listing made of an awkward directory, and entries it does not make
    root = _awkward_directory(tmp_path)
    entries = [e for b in _listing(root, compiled_listing=False, batch_size=500) for e in b]
    entries += [
        Entry(RecordType.FILE, b"/k", key_digest(b"/k"), b"k", 2**63 - 1, -(2**63)),
        Entry(RecordType.FILE, b"/m", key_digest(b"/m"), b"m", 1, None, {"error": "x"}),
        Entry(RecordType.OTHER, b"/n", key_digest(b"/n"), b"n", None, 5, {"a": [1, "ü"]}),
        Entry(RecordType.FILE, b"/big", key_digest(b"/big"), b"big", 1, 10**20),
    ]
    groups = [
        engine._RowGroup("/ünï", uuid.uuid4(), entries[:30]),
        engine._RowGroup("/b", "ab" * 16, entries[30:]),
    ]
    ids = range(10**12, 10**12 + len(entries)) if with_ids else None
    # Then both encoders write the same bytes
    assert _rows(use_compiled, True, groups, ids) == _rows(use_compiled, False, groups, ids)


@needs_build
@hypothesis_settings(max_examples=500, deadline=None)
@given(
    key=st.one_of(
        st.binary(max_size=600),
        st.sampled_from([b"", b"x" * 127, b"x" * 128, b"x" * 129, b"x" * 256]),
    )
)
def test_the_compiled_digest_is_blake2b(key):
    # The compiled listing hashes keys with its own BLAKE2b (RFC 7693): one block, several,
    # and a last block full or partial
    assert compiled().key_digest(key) == key_digest(key)


_keys = st.binary(min_size=1, max_size=40).map(lambda b: b"/" + b.replace(b"\0", b"_"))
_entries = st.builds(
    Entry,
    record_type=st.sampled_from(RecordType.values),
    key=_keys,
    digest=st.binary(min_size=16, max_size=16),
    name=st.one_of(st.binary(max_size=20), st.just(b"base64:x")),
    size=st.one_of(st.none(), st.integers(0, 2**63 - 1)),
    mtime_ns=st.one_of(st.none(), st.integers(MTIME_MIN_NS, MTIME_MAX_NS)),
    metadata=st.one_of(st.none(), st.just({}), st.dictionaries(st.text(max_size=5), st.integers())),
)


@needs_build
@hypothesis_settings(max_examples=300, deadline=None)
@given(entries=st.lists(_entries, max_size=20), with_ids=st.booleans())
def test_any_entries_encode_the_same_in_both(entries, with_ids):
    # Any key bytes, sizes and times (negative, past 64 bits of nanoseconds), any metadata
    from django.conf import settings

    task = SimpleNamespace(session_id=uuid.UUID(int=1), pk=uuid.UUID(int=2))
    groups = [engine._RowGroup("/c", uuid.UUID(int=3), entries)]
    out = []
    saved = settings.CENSUS
    try:
        for on in (True, False):
            settings.CENSUS = {**saved, "COMPILED_LISTING": on}
            ids = iter(range(len(entries))) if with_ids else None
            out.append(engine._binary_rows(task, groups, ids))
    finally:
        settings.CENSUS = saved
    assert out[0] == out[1]


@needs_build
@hypothesis_settings(max_examples=200, deadline=None)
@given(entries=st.lists(_entries, max_size=120, unique_by=lambda e: e.digest))
def test_any_entries_sort_by_digest_the_same_in_both(entries):
    # A commit writes each unit's rows by digest (engine._in_digest_order): the compiled sort
    # gives the pure-Python sort's order, in a new list, the listed one left as it was
    from django.conf import settings

    listed = list(entries)
    out = []
    saved = settings.CENSUS
    try:
        for on in (True, False):
            settings.CENSUS = {**saved, "COMPILED_LISTING": on}
            out.append(engine._in_digest_order(entries))
    finally:
        settings.CENSUS = saved
    assert out[0] == out[1] == sorted(entries, key=lambda e: e.digest)
    assert out[0] is not entries and entries == listed


@needs_build
def test_the_compiled_sort_refuses_what_it_cannot_sort():
    scan = compiled()
    entry = Entry(RecordType.FILE, b"/a", key_digest(b"/a"), b"a", 1, 1)
    with pytest.raises(TypeError, match="expected a list"):
        scan.sort_by_digest((entry, entry))
    for bad in ("FILE", (RecordType.FILE, b"/a"), entry._replace(digest=b"short")):
        with pytest.raises(TypeError, match="item 1 is not an entry with a 16-byte digest"):
            scan.sort_by_digest([entry, bad])
    with pytest.raises(TypeError, match="item 0 is not an entry"):
        scan.sort_by_digest([entry._replace(digest=key_digest(b"/a").hex())])


@needs_build
def test_the_compiled_encoder_refuses_what_it_cannot_encode(use_compiled):
    use_compiled(True)
    task = SimpleNamespace(session_id=uuid.UUID(int=1), pk=uuid.UUID(int=2))
    entry = Entry(RecordType.FILE, b"/a", key_digest(b"/a"), b"a", 1, 1)
    group = [engine._RowGroup("/c", uuid.UUID(int=3), [entry, entry])]
    with pytest.raises(ValueError, match="fewer ids than entries"):
        engine._binary_rows(task, group, iter([1]))
    with pytest.raises(OverflowError, match="an id past 64 bits"):
        engine._binary_rows(task, group, iter([2**64, 1]))
    bad = [engine._RowGroup("/c", uuid.UUID(int=3), [("FILE", b"/a")])]
    with pytest.raises(TypeError, match="an entry must be an Entry"):
        engine._binary_rows(task, bad, None)
    not_bytes = [engine._RowGroup("/c", uuid.UUID(int=3), [entry._replace(key="/a")])]
    with pytest.raises(TypeError, match="a key must be bytes"):
        engine._binary_rows(task, not_bytes, None)


@needs_build
def test_the_compiled_encoder_survives_a_callable_that_empties_its_entries():
    # Given entries whose keys are not ASCII (so the encoder calls encode_key for each), and an
    # encode_key that empties the list being encoded and collects what that freed
    script = """
import gc, uuid
import django; django.setup()
from enumeration.choices import RecordType
from enumeration.connectors import Entry
from enumeration.connectors.compiled import compiled
from enumeration.connectors.keys import encode_key, key_digest
from enumeration.services import engine

entries = [
    Entry(RecordType.FILE, k, key_digest(k), k[1:], 1, 1)
    for k in (("/ü%d" % i).encode() for i in range(50))
]
def emptying(raw):
    entries.clear()
    gc.collect()
    return encode_key(raw)
out = bytearray()
heads = {t: b"h" for t in RecordType.values}
compiled().encode_rows(out, entries, heads, b"t", b"s", None, 9, emptying,
                       engine._entry_fields, engine._metadata_field)
print(len(out), bytes(out[:1]), bytes(out[-1:]))
"""
    # When it encodes them (in a process of its own: a freed entry read would crash it)
    result = _in_a_process(script)

    # Then it encodes the entry it held when the list was emptied, and stops there
    assert result.stdout.split()[1:] == ["b'h'", "b't'"], result.stderr


@needs_build
def test_listing_and_encoding_again_and_again_keeps_no_object(tmp_path, use_compiled):
    # Given a directory of 2,000 entries, a symlink among them (handed back to Python)
    import gc
    import tracemalloc

    unit = os.fsencode(tmp_path)
    for i in range(2000):
        (tmp_path / f"file-{i:04d}").write_text("x")
    os.symlink(b"elsewhere", os.path.join(unit, b"link"))
    use_compiled(True)
    task = SimpleNamespace(session_id=uuid.UUID(int=1), pk=uuid.UUID(int=2))

    def once() -> None:
        batches = _listing(unit, compiled_listing=True, batch_size=300)
        groups = [engine._RowGroup("/c", uuid.UUID(int=3), b) for b in batches]
        engine._binary_rows(task, groups, iter(range(2001)))

    once()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            once()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Then nothing is left behind: one leaked object per entry would be 20 x 2,000 of them
    assert grown < 20_000, f"{grown:,} bytes still held after 20 listings"


# --- what readdir and lstat may say: an LD_PRELOAD shim (tests/fixtures/listing_faults.c) -------

SHIM_SOURCE = Path(__file__).parent / "fixtures" / "listing_faults.c"

LIST_BOTH = """
import json, django; django.setup()
from enumeration.connectors.filesystem import FilesystemConnector
for compiled in (True, False):
    connector = FilesystemConnector(compiled_listing=compiled)
    found = [
        [e.record_type, e.name.decode(), e.size]
        for batch in connector.list_unit({unit!r}, batch_size=3)
        for e in batch
    ]
    print(json.dumps(sorted(found)))
"""


@pytest.fixture(scope="module")
def listing_faults(tmp_path_factory) -> Path:
    """The shim, built with the C compiler the compiled listing is built with."""
    compiler = shutil.which(sysconfig.get_config_var("CC").split()[0]) or shutil.which("cc")
    if compiler is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but there is no C compiler to build the fault shim")
        pytest.skip("no C compiler")
    shim = tmp_path_factory.mktemp("shim") / "listing_faults.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", shim, SHIM_SOURCE, "-ldl"],
        check=True,
    )
    return shim


def _listed_under_faults(shim: Path, unit: Path, **faults: str) -> tuple[list, list]:
    """The compiled and the pure-Python listing of ``unit`` in a process where ``faults``
    (CENSUS_FAULT_*) change what readdir and fstatat say."""
    out = _in_a_process(
        LIST_BOTH.format(unit=bytes(unit)),
        env={
            "LD_PRELOAD": str(shim),
            **{f"CENSUS_FAULT_{k.upper()}": v for k, v in faults.items()},
        },
    )
    compiled_found, python_found = (json.loads(line) for line in out.stdout.splitlines())
    return compiled_found, python_found


@pytest.fixture
def mixed_directory(tmp_path) -> Path:
    unit = tmp_path / "mixed"
    (unit / "sub").mkdir(parents=True)
    (unit / "a").write_bytes(b"aa")
    (unit / "b").write_bytes(b"b")
    (unit / "link").symlink_to("a")
    os.mkfifo(unit / "fifo")
    return unit


EVERYTHING = [
    ["DIRECTORY", "sub", None],
    ["FILE", "a", 2],
    ["FILE", "b", 1],
    ["OTHER", "fifo", 0],
    ["SYMLINK", "link", None],
]


@needs_build
@pytest.mark.parametrize(
    "faults",
    [
        {},
        # a filesystem that gives no d_type: every entry is what lstat says
        {"dtype": "unknown"},
        # a d_type that lies (an entry replaced between readdir and lstat): lstat wins, and the
        # directory is still a directory, not a file whose subtree is lost
        {"dtype": "file"},
        # an lstat that fails (a failing disk): the entry goes to Python, which records it
        {"stat_name": "a", "stat_errno": str(errno.EIO)},
        {"stat_name": "sub", "stat_errno": str(errno.EIO), "dtype": "unknown"},
    ],
    ids=["plain", "no-d_type", "lying-d_type", "lstat-EIO", "no-d_type-lstat-EIO"],
)
def test_what_readdir_and_lstat_say_changes_no_record(listing_faults, mixed_directory, faults):
    compiled_found, python_found = _listed_under_faults(listing_faults, mixed_directory, **faults)
    assert compiled_found == python_found == EVERYTHING


@needs_build
def test_an_entry_removed_between_readdir_and_lstat_has_no_record(listing_faults, mixed_directory):
    # Given an lstat that says ENOENT for "a" (removed since readdir named it), and readdir saying
    # "sub" is a file, so that the compiled listing asks lstat about it too, which also says ENOENT
    compiled_found, _ = _listed_under_faults(
        listing_faults, mixed_directory, stat_name="a", stat_errno=str(errno.ENOENT)
    )
    # Then the compiled listing has no record of "a", as the pure-Python one has none of an entry
    # gone before its lstat (test_an_entry_gone_before_its_lstat_has_no_record)
    assert compiled_found == [e for e in EVERYTHING if e[1] != "a"]
    compiled_found, _ = _listed_under_faults(
        listing_faults, mixed_directory, stat_name="sub", stat_errno=str(errno.ENOENT), dtype="file"
    )
    # And the shim reached both of the module's calls: the lying d_type made it stat "sub"
    assert compiled_found == [e for e in EVERYTHING if e[1] != "sub"]
