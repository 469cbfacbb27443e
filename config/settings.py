"""Steward settings: one module, driven by environment variables only.

With nothing set Steward runs embedded: SQLite in WAL mode, the in-memory channel layer, and the
worker inside the web process. `DATABASE_URL` switches to PostgreSQL and `REDIS_URL` to the Redis
channel layer (the production layout of docs/deploy.md).
"""

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in a git-ignored file."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = BASE_DIR / ".secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(50)
        # O_EXCL: two processes starting at once must agree on one key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key


def _database(url: str | None) -> dict:
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "steward.sqlite3")),
            "OPTIONS": {
                # WAL + a busy timeout let the web process and a worker write at once;
                # IMMEDIATE transactions take the write lock up front instead of failing
                # half-way through with "database is locked".
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": (
                    "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;"
                    "PRAGMA busy_timeout=20000;PRAGMA foreign_keys=ON;"
                ),
            },
            "TEST": {"NAME": os.environ.get("SQLITE_TEST_PATH") or None},
        }
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ValueError(f"DATABASE_URL: unsupported scheme {parsed.scheme!r}; use postgres://")
    options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "steward",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        # Under ASGI every worker thread would keep its own persistent connection; a psycopg
        # pool per process bounds the connections (DB_POOL_MAX each) and reuses them.
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            "pool": {
                "min_size": env_int("DB_POOL_MIN", 2),
                "max_size": env_int("DB_POOL_MAX", 16),
                "timeout": env_float("DB_POOL_TIMEOUT", 10.0),
            },
            **options,
        }
        if env_bool("DB_POOL", True)
        else options,
        "TEST": {"NAME": os.environ.get("DATABASE_TEST_NAME") or None},
    }


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", True)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "django_tasks_db",
    "executions",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "executions.middleware.WorkspaceMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "executions.context_processors.workspace",
            ],
        },
    }
]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
DATABASES = {"default": _database(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# `pubsub` (default): a group message is one Redis PUBLISH that each process receives once and
# hands to its own sockets, so fanning out to 1,000 websockets costs no Redis round trip per
# socket; at most once, like the live updates it carries (pages re-sync on reconnect).
# `core`: channels-redis's list-based layer (per-channel queues with capacity and expiry).
CHANNEL_LAYER = os.environ.get("CHANNEL_LAYER", "pubsub")
if CHANNEL_LAYER not in {"pubsub", "core"}:
    raise ValueError(f"CHANNEL_LAYER={CHANNEL_LAYER!r}: use pubsub or core")
if REDIS_URL:
    _redis_host = {
        "address": REDIS_URL,
        # redis-py 8 reads with a 5 s socket timeout by default, the same as the core layer's
        # blocking BZPOPMIN: idle websockets then died after ~5 s (django/channels_redis#422).
        # Options in the URL itself still win.
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "health_check_interval": 15,
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"
            if CHANNEL_LAYER == "pubsub"
            else "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [_redis_host],
                "prefix": os.environ.get("CHANNEL_PREFIX", "steward"),
                **({"capacity": 1000, "expiry": 30} if CHANNEL_LAYER == "core" else {}),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default", "executions", "webhooks"],
    }
}

# The embedded default runs the worker inside the web process (DESIGN.md §2).
# Production sets EMBEDDED_WORKER=false and runs `manage.py worker` processes.
EMBEDDED_WORKER = env_bool("EMBEDDED_WORKER", not DATABASE_URL)
WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", 8)
LEASE_SECONDS = env_float("LEASE_SECONDS", 30.0)
REAPER_INTERVAL_SECONDS = env_float("REAPER_INTERVAL_SECONDS", 5.0)
SYNC_EXECUTE_TIMEOUT_SECONDS = env_float("SYNC_EXECUTE_TIMEOUT_SECONDS", 30.0)
STREAM_REPLAY_SECONDS = env_int("STREAM_REPLAY_SECONDS", 3600)
DEFAULT_RETENTION_DAYS = env_int("DEFAULT_RETENTION_DAYS", 30)
STEWARD_AGENT_MODULES = env_list("STEWARD_AGENT_MODULES", ["executions.demo_agents"])
HTTP_TOOL_ALLOWLIST = env_list("HTTP_TOOL_ALLOWLIST", ["127.0.0.1", "localhost"])
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
ANTHROPIC_BASE_URL = os.environ.get("ANTHROPIC_BASE_URL", "")
ANTHROPIC_API_KEY = os.environ.get("ANTHROPIC_API_KEY", "")
PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://127.0.0.1:8000")

# Request bodies over this are refused with 413 before they are parsed.
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# Django 6.1 mailers. Console output in development; SMTP when EMAIL_HOST is set.
if os.environ.get("EMAIL_HOST"):
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": os.environ["EMAIL_HOST"],
                "port": env_int("EMAIL_PORT", 25),
                "username": os.environ.get("EMAIL_USER", ""),
                "password": os.environ.get("EMAIL_PASSWORD", ""),
                "use_tls": env_bool("EMAIL_USE_TLS", False),
            },
        }
    }
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "steward@localhost")

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads it from the cookie-less meta tag; kept default-safe
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "steward": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
        "django.request": {"handlers": ["console"], "level": "ERROR"},
    },
}
