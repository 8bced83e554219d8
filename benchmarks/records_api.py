"""What a page of output records costs through the API, on a database that holds big sessions.

Run it on the database the enumeration benchmark leaves behind (``census_bench``: a session of
1,010,000 records), after a second, small session has been enumerated into it, so that there is
a newest session whose records come after a million older ones::

    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/census_bench SECRET_KEY=bench
    .venv/bin/python -m benchmarks.enumeration throughput             # leaves its session
    .venv/bin/python manage.py enumerate /tmp/small --wait            # any small tree
    .venv/bin/python -m benchmarks.records_api --repeat 3

Each request goes through Django's test client in this process (URL routing, authentication,
filters, pagination, serialisation; no network), timed from request to response; the figure is
the median of ``--repeat`` runs after one warm-up request. The target is the one a person at the
API would set: a page in well under a second (``--target-ms``, 100), whatever the session's size
or the page's depth. Orderings other than ``id`` sort what the filters leave and are printed
without a target.
"""

import argparse
import base64
import json
import os
import statistics
import time

import django


def _cursor(term: str, value: object, row_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([term, value, row_id]).encode()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--target-ms", type=float, default=100.0)
    parser.add_argument(
        "--offset",
        action="store_true",
        help="ask for deep pages by ?offset= (code before keyset pages, run from a worktree)",
    )
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from enumeration.models import SessionState, TaskOutputRecord

    sessions = list(SessionState.objects.order_by("created_at"))
    if len(sessions) < 2:
        raise SystemExit("needs two sessions: an old big one and a newer one (see the docstring)")
    old, new = sessions[0], sessions[-1]
    records = {s.pk: TaskOutputRecord.objects.filter(session=s).count() for s in (old, new)}
    deep = TaskOutputRecord.objects.filter(session=old).order_by("id").values_list("id", flat=True)
    deep_id = deep[int(records[old.pk] * 0.9)]
    user, _ = get_user_model().objects.get_or_create(
        username="records-api-bench", defaults={"is_staff": True}
    )
    host = next((h.lstrip(".") for h in settings.ALLOWED_HOSTS if h != "*"), "localhost")
    client = Client(HTTP_HOST=host)
    client.force_login(user)
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        print(cursor.fetchone()[0].split(",")[0], f"load {os.getloadavg()[0]:.2f}")
    print(
        f"old session {old.pk}: {records[old.pk]:,} records; "
        f"new session {new.pk}: {records[new.pk]:,} records"
    )

    url = "/api/output-records/"

    def deep_page(of_session: int) -> dict:
        if args.offset:
            return {"offset": int(of_session * 0.9)}
        return {"cursor": _cursor("id", deep_id, deep_id)}

    cases = [
        ("newest session, first page", {"session": new.pk}, True),
        ("oldest session, first page", {"session": old.pk}, True),
        ("oldest session, page at 90 %", {"session": old.pk, **deep_page(records[old.pk])}, True),
        ("no filter, first page", {}, True),
        ("no filter, page at 90 %", deep_page(sum(records.values())), True),
        ("oldest session by -size, first page", {"session": old.pk, "ordering": "-size"}, False),
        ("no filter, name contains 'f5'", {"name": "f5"}, False),
    ]
    client.get(url, {"session": new.pk})  # warm-up: the first request loads the URLconf
    failed = 0
    for label, params, has_target in cases:
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            response = client.get(url, params)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{label}: HTTP {response.status_code} {response.content[:200]}")
        median = statistics.median(times)
        verdict = ""
        if has_target:
            ok = median <= args.target_ms
            failed += not ok
            verdict = f"  (target <= {args.target_ms:.0f} ms: {'PASS' if ok else 'FAIL'})"
        shown = ", ".join(f"{t:.0f}" for t in times)
        print(f"  {label:<38} median {median:7.1f} ms  [{shown}]{verdict}")
    print("summary:", "PASS" if not failed else f"FAIL ({failed} over the target)")


if __name__ == "__main__":
    main()
