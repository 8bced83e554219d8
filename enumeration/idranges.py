"""Record ids as inclusive ranges: how a CLASSIFICATION task names the files it covers.

A task of a thousand files whose ids were handed out together names them as ``[[first, last]]``
instead of a thousand integers (``record_id_ranges`` in its payload). Ranges are sorted, do not
overlap, and every id in them is a FILE record of the task's session.
"""

from collections.abc import Iterable, Iterator

IdRange = list[int]  # [first, last], both included: a JSON array as it is stored


def id_ranges(ids: Iterable[int]) -> Iterator[IdRange]:
    """The runs of consecutive ids in ``ids`` (ascending), lazily."""
    current: IdRange | None = None
    for record_id in ids:
        if current is not None and record_id == current[1] + 1:
            current[1] = record_id
            continue
        if current is not None:
            yield current
        current = [record_id, record_id]
    if current is not None:
        yield current


def leading_ranges(block_starts: Iterable[int], block_size: int, count: int) -> list[IdRange]:
    """The first ``count`` ids of consecutive blocks of ``block_size`` ids, as ranges (blocks
    that follow one another merge into one range)."""
    ranges: list[IdRange] = []
    for start in block_starts:
        if count <= 0:
            break
        taken = min(count, block_size)
        count -= taken
        if ranges and ranges[-1][1] + 1 == start:
            ranges[-1][1] = start + taken - 1
        else:
            ranges.append([start, start + taken - 1])
    if count > 0:
        raise ValueError(f"{count} ids more than the blocks hold")
    return ranges


def ranges_grouped(ranges: Iterable[IdRange], size: int) -> Iterator[list[IdRange]]:
    """Groups of ranges holding ``size`` ids each (the last may hold fewer); a range that does not
    fit is split between two groups."""
    if size < 1:
        raise ValueError("a group holds at least one id")
    group: list[IdRange] = []
    room = size
    for first, last in ranges:
        while first <= last:
            taken = min(room, last - first + 1)
            group.append([first, first + taken - 1])
            first += taken
            room -= taken
            if room == 0:
                yield group
                group, room = [], size
    if group:
        yield group


def ranges_count(ranges: Iterable[IdRange]) -> int:
    """How many ids the ranges hold."""
    return sum(last - first + 1 for first, last in ranges)


def ranges_ids(ranges: Iterable[IdRange]) -> Iterator[int]:
    """Every id in the ranges, in order."""
    for first, last in ranges:
        yield from range(first, last + 1)
