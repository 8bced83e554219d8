"""How the benchmark scripts print: a figure per line, the load average beside it, PASS/FAIL."""

import os


def say(message: str) -> None:
    print(message, flush=True)


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
