"""A generated directory tree with the awkward cases a real share has, for demos, tests and
benchmarks: deep nesting, empty directories, unicode and space-laden names, a name that is not
UTF-8, a symlink loop, a dangling symlink, and (optionally) a directory nobody may read."""

import os
import random
from dataclasses import dataclass, field

_DIR_NAMES = ("d{i:05d}", "dossier é {i}", "space name {i}", "каталог_{i}", "目录{i}", "📁 {i}")
_FILE_NAMES = ("f{i:06d}.txt", "file with spaces {i}.dat", "fichier_é_{i}.csv", "データ{i}.bin")


@dataclass
class SampleTree:
    root: bytes
    directories: int = 0
    files: int = 0
    unreadable: list[bytes] = field(default_factory=list)
    symlinks: list[bytes] = field(default_factory=list)


def sample_tree_create(
    root: str | bytes,
    *,
    directories: int = 200,
    files: int = 2000,
    depth: int = 8,
    empty_share: float = 0.05,
    unreadable: bool = False,
    seed: int = 7,
) -> SampleTree:
    """Create the tree under ``root`` (which must not exist yet). Deterministic for a seed."""
    rng = random.Random(seed)  # noqa: S311  (a reproducible tree, not a secret)
    # Absolute: the symlink loop points at it, and a relative target would dangle.
    root_b = os.path.abspath(os.fsencode(root))
    os.makedirs(root_b)
    tree = SampleTree(root=root_b)
    # (path, depth); a chain first so the tree is exactly ``depth`` deep.
    dirs: list[tuple[bytes, int]] = [(root_b, 0)]
    parent = root_b
    for level in range(1, depth + 1):
        parent = os.path.join(parent, os.fsencode(f"level{level}"))
        os.mkdir(parent)
        dirs.append((parent, level))
    for i in range(len(dirs) - 1, directories):
        candidates = [d for d in dirs[-200:] if d[1] < depth] or [(root_b, 0)]
        base, level = rng.choice(candidates) if rng.random() < 0.7 else rng.choice(dirs[:50])
        if level >= depth:
            base, level = root_b, 0
        name = _DIR_NAMES[i % len(_DIR_NAMES)].format(i=i)
        path = os.path.join(base, os.fsencode(name))
        os.mkdir(path)
        dirs.append((path, level + 1))
    tree.directories = len(dirs) - 1  # the root is the target, not a found object

    empty = {d for d, _ in rng.sample(dirs[1:], max(1, int(len(dirs) * empty_share)))}
    holders = [d for d, _ in dirs if d not in empty]
    for i in range(files):
        base = holders[i % len(holders)] if i < len(holders) else rng.choice(holders)
        name = os.fsencode(_FILE_NAMES[i % len(_FILE_NAMES)].format(i=i))
        with open(os.path.join(base, name), "wb") as fh:
            fh.write(b"x" * (i % 7))
    tree.files = files

    # The awkward ones.
    bad = os.path.join(holders[1 % len(holders)], b"not-utf8-\xff\xfe.bin")
    with open(bad, "wb") as fh:
        fh.write(b"latin-1 name")
    tree.files += 1
    deep = dirs[depth][0]
    loop = os.path.join(deep, b"loop-to-root")
    os.symlink(root_b, loop)
    dangling = os.path.join(root_b, b"dangling-link")
    os.symlink(b"/nonexistent/census/target", dangling)
    tree.symlinks = [loop, dangling]
    if unreadable:
        locked = os.path.join(root_b, b"locked")
        os.mkdir(locked)
        for i in range(5):
            open(os.path.join(locked, f"secret{i}".encode()), "wb").close()
        os.mkdir(os.path.join(locked, b"inner"))
        os.chmod(locked, 0)
        tree.directories += 1
        tree.unreadable = [locked]
    return tree


def ground_truth(root: bytes, *, unreadable: list[bytes] = ()) -> set[bytes]:
    """Every object below ``root`` as ``os.walk`` sees it, without following symlinks, and without
    the contents of ``unreadable`` directories (which a worker without privileges cannot list)."""
    found: set[bytes] = set()
    skip = set(unreadable)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            found.add(os.path.join(dirpath, name))
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
    return found
