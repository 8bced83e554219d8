"""Loaded as a pytest plugin (``-p tests.environment``) before Django reads its settings.

The suite runs on real PostgreSQL and Redis. Defaults below apply when a variable is not set, so
`pytest` alone runs against the local services. CENSUS_TEST_DATABASE_NAME and CENSUS_TEST_REDIS_DB
keep two runs on one machine apart.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/census")
os.environ.setdefault(
    "CELERY_BROKER_URL", f"redis://127.0.0.1:6379/{os.environ.get('CENSUS_TEST_REDIS_DB', '15')}"
)
os.environ.setdefault("SECRET_KEY", "census-tests-only-not-a-secret-0123456789abcdef")
os.environ.setdefault("LOG_FORMAT", "text")
