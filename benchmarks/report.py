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


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
