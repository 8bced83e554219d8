"""How the benchmark scripts print: a figure per line, the load average beside it, PASS/FAIL, and
how fast this machine's CPU is at the moment (shared machines vary several-fold from hour to hour,
and the load average does not show it)."""

import os
import time

# sum(range(10**7)) takes CPython 3.11 about 0.2 s on a typical unloaded x86 core; a figure far
# above that means the other figures of the run are slowed about as much.
CPU_PROBE_ITERATIONS = 10**7


def say(message: str) -> None:
    print(message, flush=True)


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def cpu_probe() -> float:
    """Seconds of process time for a fixed pure-Python loop: this machine's speed right now."""
    started = time.process_time()
    sum(range(CPU_PROBE_ITERATIONS))
    return time.process_time() - started


def cpu_times() -> list[int]:
    """The machine's CPU time so far, in clock ticks, as /proc/stat's ``cpu`` line counts it
    (user, nice, system, idle, iowait, irq, softirq, steal, ...); empty where there is none."""
    try:
        with open("/proc/stat") as stat:
            return [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return []


def steal_share(before: list[int], after: list[int]) -> float | None:
    """The share of CPU time between two ``cpu_times()`` readings that the hypervisor gave to
    other machines ("steal"): a figure measured while it is high is slowed by about as much."""
    if len(before) < 8 or len(after) < 8:
        return None
    total = sum(after[:8]) - sum(before[:8])
    return (after[7] - before[7]) / total if total else None


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
