"""Steward settings: one module, driven by environment variables only.

With nothing set Steward runs embedded: SQLite in WAL mode, the in-memory channel layer, and the
worker inside the web process. `DATABASE_URL` switches to PostgreSQL and `REDIS_URL` to the Redis
channel layer (the production layout of docs/deploy.md).
"""

import contextlib
import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.utils.csp import CSP

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
# Off unless asked for (`make dev` or DEBUG=true): a newcomer running `make up` must never see
# Django's debug page, which lists every URL pattern and setting.
DEBUG = env_bool("DEBUG", False)
PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://127.0.0.1:8000")
_public = urlparse(PUBLIC_URL)
_local_hosts = ["127.0.0.1", "localhost", "[::1]", "testserver"]
# The host of PUBLIC_URL is always allowed, so setting PUBLIC_URL alone is enough behind a proxy;
# so is the address `make up HOST=…` binds to, unless it is a wildcard.
_bound = os.environ.get("HOST", "")
ALLOWED_HOSTS = list(
    dict.fromkeys(
        env_list("ALLOWED_HOSTS", _local_hosts)
        + [_public.hostname or "localhost"]
        + ([_bound] if _bound and _bound not in {"0.0.0.0", "::"} else [])
    )
)
CSRF_TRUSTED_ORIGINS = list(
    dict.fromkeys(
        env_list("CSRF_TRUSTED_ORIGINS", [])
        + ([f"{_public.scheme}://{_public.netloc}"] if _public.scheme and _public.netloc else [])
    )
)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # ServeStatic's system checks of its settings (daphne's runserver stays: it comes first).
    "servestatic",
    "django.contrib.humanize",
    "axes",
    "ninja",  # Swagger UI's files for /api/v1/docs, served from our own static files
    "channels",
    "django_htmx",
    "django_tasks_db",
    "executions",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files first: they need no session, CSP nonce or rate limit. ServeStatic's middleware
    # is async: under ASGI it reads and sends the file on the event loop.
    "servestatic.middleware.ServeStaticMiddleware",
    # Before sessions and auth: a throttled API call costs one counter hit and nothing else.
    "executions.ratelimit.RateLimitMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "executions.middleware.WorkspaceMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
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
                "django.template.context_processors.csp",
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
            # channels-redis's pub/sub layer; its receive loop logs a Redis outage once each
            # way and re-syncs the pages when Redis returns (executions/live/layer.py).
            "BACKEND": "executions.live.layer.PubSubLayer"
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
# The longest an approval long poll (GET /approvals/{id}/wait) holds a request, whatever the
# caller asks: keep it below the idle timeout of any proxy in front.
APPROVAL_WAIT_MAX_SECONDS = env_float("APPROVAL_WAIT_MAX_SECONDS", 300.0)
STREAM_REPLAY_SECONDS = env_int("STREAM_REPLAY_SECONDS", 3600)
DEFAULT_RETENTION_DAYS = env_int("DEFAULT_RETENTION_DAYS", 30)
STEWARD_AGENT_MODULES = env_list("STEWARD_AGENT_MODULES", ["executions.demo_agents"])
HTTP_TOOL_ALLOWLIST = env_list("HTTP_TOOL_ALLOWLIST", ["127.0.0.1", "localhost"])
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
ANTHROPIC_BASE_URL = os.environ.get("ANTHROPIC_BASE_URL", "")
ANTHROPIC_API_KEY = os.environ.get("ANTHROPIC_API_KEY", "")

# Request bodies over this are refused with 413 before they are parsed.
MAX_REQUEST_BODY_BYTES = env_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024)
# Long-lived threads per web process serving sync API calls (executions/api/handler.py).
# Enough that a process rarely starts a thread for a request (a tenth of a read's CPU when
# 32 connections met 16 threads); the database pool (DB_POOL_MAX) still bounds the queries.
API_THREADS = env_int("API_THREADS", 64)
# Async connections per web process for the polled reads answered on the event loop, on
# PostgreSQL (executions/api/loopread.py); 0 turns that path off (the lanes serve them).
API_LOOP_CONNECTIONS = env_int("API_LOOP_CONNECTIONS", 8)
# The plain successful creates answered on the event loop too (executions/api/loopcreate.py),
# on those connections; false sends every create to a lane and ninja.
API_LOOP_CREATES = env_bool("API_LOOP_CREATES", True)
# INSERT statements in flight per web process for those creates: the creates arriving while
# they run are written together in the next one (executions/api/loopcreate.py StartBatches).
# One: bigger batches, so less CPU per create and fewer backends sharing the cores (wrk, 32
# connections, alternated: 2,340-2,520 vs 1,610-2,220 creates/s, 0.70-0.75 vs 0.80-0.99 ms).
API_LOOP_CREATE_STATEMENTS = env_int("API_LOOP_CREATE_STATEMENTS", 1)
# Web processes sharing a socket even out their keep-alive connections (a process holding
# more than its share closes the surplus after a response: executions/middleware.py).
WEB_BALANCE_CONNECTIONS = env_bool("WEB_BALANCE_CONNECTIONS", True)
# Freeze the objects made at start-up out of the garbage collector's view (config/asgi.py).
WEB_GC_FREEZE = env_bool("WEB_GC_FREEZE", True)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

AUTHENTICATION_BACKENDS = [
    # django-axes refuses a locked-out username or address before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
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
# ServeStatic serves the files straight from the finders, so `make up` needs no collectstatic;
# a deployment that runs collectstatic gets the same files (STATIC_ROOT is scanned too).
SERVESTATIC_USE_FINDERS = True
SERVESTATIC_USE_STATIC_ROOT = True
SERVESTATIC_AUTOREFRESH = DEBUG
# Our files carry their version in their name (steward-1.0.0.js), so they may be cached long;
# names with a content hash (a manifest storage's) are cached for ten years, as immutable.
SERVESTATIC_MAX_AGE = 0 if DEBUG else 3600
# ServeStatic warns at every start when STATIC_ROOT is missing, as it is until a collectstatic.
with contextlib.suppress(OSError):  # a read-only tree: then the warning is the truth
    STATIC_ROOT.mkdir(exist_ok=True)

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

# --- security (docs/deploy.md, "Security settings") -------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads it from the cookie-less meta tag; kept default-safe
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# HTTPS=true (or a https:// PUBLIC_URL) turns on the TLS settings together; each can still be
# set on its own.
HTTPS = env_bool("HTTPS", _public.scheme == "https")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Health checks come from the load balancer over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# Behind a TLS-terminating proxy: SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto:https. Only set it
# when the proxy always sets (and strips clients' own) header, or anyone could claim HTTPS.
if _proxy_header := os.environ.get("SECURE_PROXY_SSL_HEADER", ""):
    _name, _, _value = _proxy_header.partition(":")
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _name.strip().upper().replace("-", "_"),
        _value.strip() or "https",
    )

# Content-Security-Policy on every response (Django's ContentSecurityPolicyMiddleware). Scripts
# only from our origin or with the per-request nonce (htmx_script adds it); no CDN anywhere.
# Styles allow inline `style=` attributes, which nonces cannot cover; they cannot run code.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF],
    "connect-src": [CSP.SELF],  # includes ws(s):// to this host (the live dashboard)
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

# --- abuse ----------------------------------------------------------------------------------
# API rate limit per key (per address for calls without one), in the `limits` notation: the
# default, 500 per 10 seconds, sustains 50 req/s and lets a client burst. Counted in Redis when
# REDIS_URL is set (shared by every process), in memory otherwise. RATE_LIMIT=off disables it.
RATE_LIMIT = os.environ.get("RATE_LIMIT", "500/10 seconds")
RATE_LIMIT_STORAGE = os.environ.get("RATE_LIMIT_STORAGE", REDIS_URL or "memory://")

# Webhooks may only target public addresses (approvals/notifications/targets.py), checked on
# the resolved address at every delivery; true allows loopback/private receivers (and tests).
WEBHOOK_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", False)

# Login lockout (django-axes): after LOGIN_FAILURE_LIMIT failures for one username or from one
# address, further attempts are refused for LOGIN_LOCKOUT_MINUTES. Admins unlock from Settings →
# Members or with `manage.py axes_reset_username <name>` / `axes_reset_ip <address>`.
AXES_ENABLED = env_bool("LOGIN_LOCKOUT", True)
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("LOGIN_LOCKOUT_MINUTES", 15.0))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "executions.lockout.lockout_response"
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "executions.ratelimit.client_address"
# Behind N proxies that each append to X-Forwarded-For, the client is the Nth address from the
# right; without proxies the header is the client's own claim and is ignored.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

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
