"""Census settings. Every knob comes from the environment; the README has the table.

With neither DATABASE_URL nor CELERY_BROKER_URL set, Census runs on its embedded default: SQLite in
``var/`` and an in-process worker, so a fresh machine needs nothing else installed.
"""

import re
import shlex
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
VAR_DIR = Path(env.str("CENSUS_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DEBUG", default=False)
_INSECURE_KEY = "census-insecure-development-key-set-SECRET_KEY-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=_INSECURE_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS: on behind a TLS-terminating proxy (HTTPS=true); off for a laptop on plain HTTP.
HTTPS = env.bool("HTTPS", default=False)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Prometheus scrapes and load-balancer probes come over plain HTTP from inside.
    SECURE_REDIRECT_EXEMPT = [r"^metrics$"]
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "enumeration",
    "nms",
    "discovery",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
EMBEDDED_DATABASE = "DATABASE_URL" not in env
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'census.sqlite3'}"),
}
_db = DATABASES["default"]
if EMBEDDED_DATABASE:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Workers and the web process share one file: wait for locks instead of failing at once.
    _db.setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    _db["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", 10)
if "CENSUS_TEST_DATABASE_NAME" in env:
    _db["TEST"] = {"NAME": env.str("CENSUS_TEST_DATABASE_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if not DEBUG and SECRET_KEY == _INSECURE_KEY and not EMBEDDED_DATABASE:
    raise ImproperlyConfigured("SECRET_KEY must be set when Census runs on a real database.")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
# A deployment runs `collectstatic` (the Dockerfile does); the embedded default serves the apps'
# static files (the admin's, the API docs') straight from where they are installed.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=DEBUG or EMBEDDED_DATABASE)
if WHITENOISE_USE_FINDERS:
    # Serving from the finders needs no STATIC_ROOT: WhiteNoise's warning that it is missing
    # would only tell a new user to run a `collectstatic` they do not need.
    warnings.filterwarnings("ignore", message=f"No directory at: {re.escape(str(STATIC_ROOT))}")

# --- Celery ----------------------------------------------------------------------------------
# No broker configured means the embedded default: messages go to an in-memory transport and
# `manage.py enumerate --wait` drains the work in process. The database is the queue either way;
# a message is only a wake-up call carrying an id.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://localhost/")
CENSUS_IN_PROCESS_WORKER = CELERY_BROKER_URL.startswith("memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=3600)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=3300)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "enumeration.tasks.run_enumeration_task": {"queue": "enumerate"},
    "enumeration.tasks.run_classification_task": {"queue": "classify"},
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redelivery of an unacknowledged message is a safety net only: the Reaper's database lease is
# what brings back the work of a lost worker, long before this. It must outlast the longest task
# (the hard time limit), or Redis hands a message still being worked on to a second worker.
_visibility_timeout = env.int("CELERY_VISIBILITY_TIMEOUT", default=2 * CELERY_TASK_TIME_LIMIT)
if _visibility_timeout <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_VISIBILITY_TIMEOUT ({_visibility_timeout} s) must be longer than "
        f"CELERY_TASK_TIME_LIMIT ({CELERY_TASK_TIME_LIMIT} s): Redis would redeliver a message "
        "still being worked on"
    )
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": _visibility_timeout}
# Celery's Django fix-up closes every database connection before and after each task, whatever
# CONN_MAX_AGE says (celery#9824 reverted its support), so each task paid a new PostgreSQL
# backend and its cold caches. A reuse count no worker reaches turns that off; config/celery.py
# gives tasks Django's own request lifecycle instead (CONN_MAX_AGE and CONN_HEALTH_CHECKS).
CELERY_DB_REUSE_MAX = 2**62
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"


# --- Census enumeration engine ----------------------------------------------------------------
def _env_int_between(name: str, default: int, low: int, high: int | None = None) -> int:
    """An integer setting, refused at start-up outside [low, high] rather than misread later."""
    value = env.int(name, default=default)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ImproperlyConfigured(f"{name} ({value}) must be {bounds}")
    return value


# A worker process's cyclic garbage collector: its first generation is collected after this many
# new container objects instead of Python's 700, and what the process holds once it has started
# is frozen out of every later collection (gc.freeze). A listing makes tens of thousands of
# entries per commit; at 700 the collector walked them and the whole of Django a fifth of a
# worker's CPU (docs/benchmarks.md). 0 leaves the collector as Python sets it.
CENSUS_WORKER_GC_THRESHOLD = _env_int_between("CENSUS_WORKER_GC_THRESHOLD", 10_000, 0)

CENSUS = {
    # Entries a connector streams per batch (one staging insert each). Below 1 a listing would
    # end at once (every directory committed empty); above 10,000 a resumed listing's exclusion
    # query would pass SQLite's limit of bound parameters.
    "LISTING_BATCH_SIZE": _env_int_between("CENSUS_LISTING_BATCH_SIZE", 100, 1, 10_000),
    # Entries a unit's listing holds in memory before it stages them. A unit listed to its end
    # within this many is committed from memory; past it, every streamed batch but the last goes
    # to the staging table as it comes, and an interrupted listing resumes from what was staged.
    # Staged past one batch, a tree of 103-entry directories ran 2.8x slower (docs/benchmarks.md).
    "UNIT_MEMORY_ENTRIES": _env_int_between("CENSUS_UNIT_MEMORY_ENTRIES", 1000, 0, 1_000_000),
    # Small directories share a commit until it holds this many entries (each stays atomic).
    "GROUP_COMMIT_ENTRIES": env.int("CENSUS_GROUP_COMMIT_ENTRIES", default=25_000),
    # Subdirectories per new DISCOVERY_ENUMERATE task made by the Pipeliner. A task costs a few
    # milliseconds of claims, events and checks whatever its size: at 50, an eighth to a fifth of a
    # flat or a deep million-file run (docs/benchmarks.md). Other workers are not kept waiting by
    # a larger task: each of its commits hands on the subdirectories found so far.
    "PIPELINE_GROUP_SIZE": env.int("CENSUS_PIPELINE_GROUP_SIZE", default=200),
    # Files per CLASSIFICATION task made by the Pipeliner.
    "CLASSIFICATION_GROUP_SIZE": env.int("CENSUS_CLASSIFICATION_GROUP_SIZE", default=1000),
    "LEASE_SECONDS": env.int("CENSUS_LEASE_SECONDS", default=60),
    "MAX_ATTEMPTS": env.int("CENSUS_MAX_ATTEMPTS", default=3),
    # A PENDING task unclaimed this long has its message sent again (it may have died with
    # the broker).
    "RESEND_AFTER_SECONDS": env.int("CENSUS_RESEND_AFTER_SECONDS", default=120),
    # An IN_PROGRESS session with no progress this long is STALLED, and an alert is logged.
    "STALL_SECONDS": env.int("CENSUS_STALL_SECONDS", default=900),
    # Retention (beat, daily): finished sessions completed more than this many days ago are
    # deleted, each target's SESSION_RETENTION_KEEP newest kept whatever their age; 0 keeps
    # every session. RETENTION_CHUNK output records are deleted per transaction.
    # (A negative age would have made every session expired.)
    "SESSION_RETENTION_DAYS": _env_int_between("CENSUS_SESSION_RETENTION_DAYS", 0, 0),
    "SESSION_RETENTION_KEEP": _env_int_between("CENSUS_SESSION_RETENTION_KEEP", 1, 0),
    "RETENTION_CHUNK": _env_int_between("CENSUS_RETENTION_CHUNK", 10000, 1),
    # Outbox retention (beat, hourly): dispatched domain events are deleted this many days
    # after their dispatch, the window in which a consumer can replay them from the table;
    # 0 keeps every event. An event not yet dispatched is never deleted.
    "EVENT_RETENTION_DAYS": _env_int_between("CENSUS_EVENT_RETENTION_DAYS", 30, 0),
    # How long a dispatch holds the events it hands on: one that dies is redone after this.
    # Longer than the handlers take for DISPATCH_CHUNK (500) events, or they run twice.
    "EVENT_CLAIM_SECONDS": _env_int_between("CENSUS_EVENT_CLAIM_SECONDS", 300, 1),
    # The compiled listing and row encoding (enumeration/connectors/_scan.c), where built;
    # false runs their pure-Python twins.
    "COMPILED_LISTING": env.bool("CENSUS_COMPILED_LISTING", default=True),
    # Test hook: "<directory name>:<batches before pausing>:<seconds>" pauses one listing once.
    "TEST_PAUSE_LISTING": env.str("CENSUS_TEST_PAUSE_LISTING", default=""),
}

# --- API ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "config.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=1)),
    "AUTH_HEADER_TYPES": ("Bearer",),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Census API",
    "DESCRIPTION": "Census finds what an organisation has and keeps finding it.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed drf-spectacular-sidecar, not a CDN: /api/docs/ works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Logging and error reporting -------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"census_context": {"()": "config.logging.ContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(session_id)s %(task_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s "
            "[session=%(session_id)s task=%(task_id)s] %(message)s"
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["census_context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": LOG_LEVEL},
    },
}

SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        environment=env.str("SENTRY_ENVIRONMENT", default="production"),
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
        send_default_pii=False,
        integrations=[DjangoIntegration(), CeleryIntegration()],
    )

# Domain event handlers (dotted paths), called once per event after its transaction commits.
CENSUS_EVENT_HANDLERS = env.list(
    "CENSUS_EVENT_HANDLERS", default=["enumeration.services.events.log_event"]
)

# Fernet keys for secrets at rest, newest first (see nms/crypto.py). Unset: derived from SECRET_KEY.
CENSUS_ENCRYPTION_KEYS = env.list("CENSUS_ENCRYPTION_KEYS", default=[])

CELERY_TASK_ROUTES.update({"nms.tasks.run_discovery": {"queue": "poll"}})

# --- Network monitoring (nms): scheduler tick, fping, poller, health monitor, metrics ----------
# Read by nms/fping.py and nms/services/{scheduler,poller,health,metrics}.py; docs/nms.md explains
# each. Poll tasks go to the `poll` queue (their own workers); the tick runs on `default`.
CENSUS_NMS = {
    # Most addresses one discovery profile may cover; counted before anything is expanded.
    "MAX_HOSTS": env.int("CENSUS_NMS_MAX_HOSTS", default=65_536),
    # Discovery: addresses per plugin run (one transaction of outcomes each), seconds one device
    # may take, seconds one plugin run may take before its process group is killed.
    "DISCOVERY_BATCH_SIZE": env.int("CENSUS_NMS_DISCOVERY_BATCH_SIZE", default=64),
    "DISCOVERY_DEVICE_TIMEOUT": env.float("CENSUS_NMS_DISCOVERY_DEVICE_TIMEOUT", default=10.0),
    "DISCOVERY_BATCH_TIMEOUT": env.float("CENSUS_NMS_DISCOVERY_BATCH_TIMEOUT", default=120.0),
    # The plugin command per protocol (argv, shell-quoted). Never carries a credential.
    "PLUGINS": {
        "winrm": shlex.split(
            env.str(
                "CENSUS_NMS_WINRM_PLUGIN",
                default=f"{shlex.quote(sys.executable)} -m nms.plugins.winrm",
            )
        ),
    },
    # Seconds between two scheduler ticks (the beat job; `manage.py nms_tick --loop` too).
    "TICK_SECONDS": env.int("CENSUS_NMS_TICK_SECONDS", default=5),
    # Most messages one tick sends: above this many poll batches, the batches travel in this many
    # messages to `default` workers, which publish them (one broker round trip each).
    "DISPATCH_MESSAGES": env.int("CENSUS_NMS_DISPATCH_MESSAGES", default=20),
    # fping: binary, initial per-target timeout (ms), retries, gap between packets (ms), backoff.
    "FPING_PATH": env.str("CENSUS_NMS_FPING_PATH", default="fping"),
    "FPING_TIMEOUT_MS": env.int("CENSUS_NMS_FPING_TIMEOUT_MS", default=500),
    "FPING_RETRIES": env.int("CENSUS_NMS_FPING_RETRIES", default=1),
    "FPING_INTERVAL_MS": env.float("CENSUS_NMS_FPING_INTERVAL_MS", default=1.0),
    "FPING_BACKOFF": env.float("CENSUS_NMS_FPING_BACKOFF", default=1.5),
    # Health monitor: THRESHOLD failures, each within WINDOW seconds of the previous one,
    # deactivate a device.
    "FAILURE_WINDOW_SECONDS": env.int("CENSUS_NMS_FAILURE_WINDOW_SECONDS", default=300),
    "FAILURE_THRESHOLD": env.int("CENSUS_NMS_FAILURE_THRESHOLD", default=3),
    # Poller: devices per poll task (one plugin run each), seconds per device, seconds per batch
    # (0: derived from the other two and PLUGIN_WORKERS), threads inside the WinRM plugin.
    "POLL_BATCH_SIZE": env.int("CENSUS_NMS_POLL_BATCH_SIZE", default=100),
    "POLL_DEVICE_TIMEOUT": env.float("CENSUS_NMS_POLL_DEVICE_TIMEOUT", default=20.0),
    "POLL_BATCH_TIMEOUT": env.float("CENSUS_NMS_POLL_BATCH_TIMEOUT", default=0.0),
    "PLUGIN_WORKERS": env.int("CENSUS_NMS_PLUGIN_WORKERS", default=16),
    # Metrics: samples older than this many days are deleted by the retention job (beat, hourly),
    # at most RETENTION_CHUNK rows per statement.
    "METRICS_RETENTION_DAYS": env.int("CENSUS_NMS_METRICS_RETENTION_DAYS", default=30),
    "RETENTION_CHUNK": env.int("CENSUS_NMS_RETENTION_CHUNK", default=10000),
}
CELERY_TASK_ROUTES.update({"nms.tasks_monitoring.poll_devices": {"queue": "poll"}})
