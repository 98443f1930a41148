"""lettachat settings, read from the environment.

With nothing configured, lettachat runs on SQLite with the in-memory channel layer, which is all a
single-process local run needs. Production switches by variables alone:

- ``DATABASE_URL`` (e.g. ``postgres://user:pass@host:5432/lettachat``)
- ``REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/0``): the channel layer, needed with more than one
  server process
- ``SECRET_KEY``, ``DEBUG``, ``ALLOWED_HOSTS``, ``CSRF_TRUSTED_ORIGINS``, ``SECURE_COOKIES``
- ``LETTA_BASE_URL``, ``LETTA_API_KEY``: the Letta server (Letta Cloud or your own)
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

# Generic admin and model classes (``admin.ModelAdmin[Agent]``) at run time, as the types say.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("LETTACHAT_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()


def _local_secret_key() -> str:
    """A per-installation key kept in ``var/``, so a self-hosted run needs no configuration."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=LOOPBACK_HOSTS)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG and set(ALLOWED_HOSTS) - {*LOOPBACK_HOSTS, "::1"}:
        # Served to other machines (ALLOWED_HOSTS beyond this one) with DEBUG off: production.
        # A key generated into var/ would differ per server and vanish with the disk.
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. In production (DEBUG off, ALLOWED_HOSTS beyond "
            "localhost) set it to a long random value, the same on every server process, e.g. "
            "SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(50))'). "
            "See .env.example."
        )
    SECRET_KEY = _local_secret_key()
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "channels",
    "conversations",  # the domain: models, services, selectors, actions, the reply relay
    "chat",  # the web: views, the websocket consumer, fragments, templates
    "staff",  # the staff console in the Django admin
]

MIDDLEWARE = [
    "lettachat.request_log.RequestLogMiddleware",  # a request id and one log line per request
    "lettachat.health.ProbeMiddleware",  # /healthz and /readyz: before host and https checks
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "chat.middleware.htmx_login_redirect",  # htmx asks while signed out: the whole page logs in
    "chat.middleware.private_pages",  # Cache-Control: private, no-store for logged-in people
]

ROOT_URLCONF = "lettachat.urls"
ASGI_APPLICATION = "lettachat.asgi.application"

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
                "staff.context_processors.staff_notice",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # An on-disk test database: the browser tests' server runs in another process.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20}
    )
else:
    DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="test_lettachat")}
    if env.bool("DATABASE_POOL", default=True):
        # Connections from a pool (psycopg-pool), checked before each use. Without it every
        # request and every database call of a websocket opens a connection of its own, which
        # under load costs more than the query (bench/RESULTS.md). One pool per server process:
        # PostgreSQL's max_connections must cover DATABASE_POOL_MAX_SIZE x processes.
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
            # The websocket side's LETTACHAT_DB_THREADS, views' and sign-in's one thread, spare.
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=12),
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # with the pool: checked when taken out
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
FRAGMENTS_LAYER = "fragments"  # lettachat/layers.py
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, which breaks the 5 s
                # blocking pops channels_redis waits on (django/channels_redis#422); and it caps
                # a pool at 100 connections, past which a command fails at once ("Too many
                # connections"). channels_redis opens one per command in flight, and under load
                # one more per received message (its backup-queue cleaners): 2,000 still ran out
                # with 200 replies streaming in one process (bench/RESULTS.md).
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 15,
                        "max_connections": env.int("REDIS_MAX_CONNECTIONS", default=10_000),
                    }
                ],
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default="lettachat"),
                "capacity": 5000,
            },
        },
    }
    # A conversation's page fragments (lettachat/layers.py) over Redis pub/sub: one PUBLISH per
    # fragment whoever listens, pushed to each process. channels_redis's list layer above costs
    # round trips per message on both sides, which made a process fall seconds behind with 20 to
    # 50 replies streaming (bench/RESULTS.md). What must not be lost (a relay's stop, retry and
    # snapshot requests, snapshots, session ends) stays on the list layer. A fragment published
    # while a page is not subscribed is not a reply lost: the page catches up from a snapshot.
    # The fault soak over two processes holds with it (bench/RESULTS.md); false: the list layer.
    if env.bool("LETTACHAT_FRAGMENTS_PUBSUB", default=True):
        CHANNEL_LAYERS[FRAGMENTS_LAYER] = {
            "BACKEND": "lettachat.layers.PubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default="lettachat") + ".fragments.",
            },
        }
else:
    # One process only. The default capacity (100) drops group messages under load; channels'
    # own layer sweeps every channel on every send (lettachat/layers.py).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "lettachat.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 5000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the finders when nothing was collected (tests, a first local run).
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)

# Security headers. Behind TLS set SECURE_COOKIES=true (and SECURE_SSL_REDIRECT if you like).
SECURE_COOKIES = env.bool("SECURE_COOKIES", default=False)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Proxies in front of lettachat whose X-Forwarded-For entries are believed (0: none, the client
# is REMOTE_ADDR). Used for the address in the audit log and the request log.
LETTACHAT_TRUSTED_PROXIES = env.int("LETTACHAT_TRUSTED_PROXIES", default=0)

# Logs go to stdout, one line per request (lettachat/request_log.py), each line with the
# request's id. Django's own 4xx warnings are left out (the request line says it); errors stay.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "lettachat.request_log.RequestIdFilter"}},
    "formatters": {
        "line": {
            "format": "%(asctime)s %(levelname)s %(name)s pid=%(process)d "
            "rid=%(request_id)s %(message)s"
        }
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "line",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "ERROR"},
        # Every call to Letta is an INFO line of httpx's: the request line is enough.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# --- Letta ---------------------------------------------------------------------------------------
# Unset LETTA_BASE_URL means: the local Letta server that `bin/run` starts (see README). It runs
# in Letta's secure mode with a key of its own (devtools/local_letta), used here unless
# LETTA_API_KEY says otherwise.
from devtools.local_letta import harness as _local_letta  # noqa: E402

LETTA_BASE_URL = env.str("LETTA_BASE_URL", default=_local_letta.base_url())
LETTA_API_KEY = env.str("LETTA_API_KEY", default="")
if not LETTA_API_KEY and LETTA_BASE_URL.rstrip("/") == _local_letta.base_url():
    LETTA_API_KEY = _local_letta.existing_api_key()
# Seconds to wait for Letta on reads and on the first byte of a reply.
LETTA_TIMEOUT = env.float("LETTA_TIMEOUT", default=30.0)
# Connections each process may hold open to Letta at once. A streaming reply holds one for as
# long as it streams, so this caps the replies in flight per process: the SDK's own default (100)
# made the 101st reply wait for another to end.
LETTA_MAX_CONNECTIONS = env.int("LETTA_MAX_CONNECTIONS", default=1000)
# Seconds each check of /readyz may take (database, channel layer, Letta) before it is "down".
LETTACHAT_PROBE_TIMEOUT = env.float("LETTACHAT_PROBE_TIMEOUT", default=2.0)
# The gateway to use (tests swap in a scripted fake).
LETTA_GATEWAY = env.str("LETTA_GATEWAY", default="letta_gateway.client.LettaGateway")

# --- Chat -----------------------------------------------------------------------------------------
LETTACHAT_MAX_MESSAGE_CHARS = env.int("LETTACHAT_MAX_MESSAGE_CHARS", default=16_000)
# A reply with no event at all (not even a keep-alive ping) for this long is shown as stalled.
LETTACHAT_STALL_SECONDS = env.float("LETTACHAT_STALL_SECONDS", default=30.0)
# How long a relay keeps trying to resume a broken stream from Letta before giving up.
LETTACHAT_RESUME_SECONDS = env.float("LETTACHAT_RESUME_SECONDS", default=120.0)
LETTACHAT_RESUME_BACKOFF = env.float("LETTACHAT_RESUME_BACKOFF", default=1.0)
# Threads for the database calls of sockets and replies (lettachat/aio.py); with PostgreSQL
# each holds one pooled connection while it works (DATABASE_POOL_MAX_SIZE must be larger).
LETTACHAT_DB_THREADS = env.int("LETTACHAT_DB_THREADS", default=8)
# Never stuck (conversations/relay/loop.py): how often a silent run's state is asked of Letta;
# how long a run that says nothing at all is given before it is stopped; how long a stopped run
# is followed until Letta confirms; how often a relay says it is alive, and after how long
# without that another process takes its run over (conversations/relay/reaper.py).
LETTACHAT_RUN_CHECK_SECONDS = env.float("LETTACHAT_RUN_CHECK_SECONDS", default=10.0)
LETTACHAT_GIVE_UP_SECONDS = env.float("LETTACHAT_GIVE_UP_SECONDS", default=300.0)
LETTACHAT_SETTLE_SECONDS = env.float("LETTACHAT_SETTLE_SECONDS", default=120.0)
LETTACHAT_RELAY_HEARTBEAT_SECONDS = env.float("LETTACHAT_RELAY_HEARTBEAT_SECONDS", default=5.0)
LETTACHAT_REAP_AFTER_SECONDS = env.float("LETTACHAT_REAP_AFTER_SECONDS", default=20.0)
LETTACHAT_REAPER = env.bool("LETTACHAT_REAPER", default=True)
# On SIGTERM: sockets closed ("server restarting"), replies handed over, and the process gone
# within this many seconds whatever is still running (lettachat/shutdown.py).
LETTACHAT_SHUTDOWN_SECONDS = env.float("LETTACHAT_SHUTDOWN_SECONDS", default=10.0)
# How long a reconnecting page waits for the relay of a running reply before taking it over.
LETTACHAT_RELAY_ANSWER_SECONDS = env.float("LETTACHAT_RELAY_ANSWER_SECONDS", default=3.0)

# "Delete my data" in the page works in slices of this many seconds; the next press goes on.
LETTACHAT_ERASE_SLICE_SECONDS = env.float("LETTACHAT_ERASE_SLICE_SECONDS", default=20.0)

# --- Staff and operators -----------------------------------------------------------------------
# Daily quotas per person (0: none). A send over either is refused before it reaches Letta.
LETTACHAT_QUOTA_MESSAGES_PER_DAY = env.int("LETTACHAT_QUOTA_MESSAGES_PER_DAY", default=0)
LETTACHAT_QUOTA_TOKENS_PER_DAY = env.int("LETTACHAT_QUOTA_TOKENS_PER_DAY", default=0)
# Shown in every page's footer, so people know staff may read conversations ("" hides it).
LETTACHAT_STAFF_NOTICE = env.str(
    "LETTACHAT_STAFF_NOTICE",
    default="The staff of this service can read conversations, for support and safety.",
)

# --- Security ------------------------------------------------------------------------------------
# (Owned by the abuse-and-bad-input work: see README "Guarantees" and tests/test_security_*.py.)
# A Content-Security-Policy that lets no inline script or style run: every script is a file from
# our own origin (htmx, its ws extension, chat.js), htmx is told not to inject its indicator style
# (base.html's htmx-config), and markdown allows no images, so 'self' is all a page loads.
# 'self' in connect-src also covers ws:/wss: to the same host and port (CSP Level 3).
from csp.constants import NONE, SELF  # noqa: E402

INSTALLED_APPS += ["csp"]
MIDDLEWARE += ["csp.middleware.CSPMiddleware"]
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
# HSTS for subdomains and the preload list are the deployer's call (they bind every subdomain).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)

# Flood limits for the conversation websocket (chat/limits.py).
# At most N frames per M seconds on one socket ("N/M"); more get an error and reach nothing.
LETTACHAT_SEND_RATE = env.str("LETTACHAT_SEND_RATE", default="20/60")
# Open sockets one person may hold in one server process; more are closed with code 4429.
LETTACHAT_MAX_SOCKETS_PER_USER = env.int("LETTACHAT_MAX_SOCKETS_PER_USER", default=50)
# Per-person limits (conversations/quotas.py): new conversations (forks too) in any M seconds
# ("N/M"), and replies running at once across a person's conversations.
LETTACHAT_NEW_CONVERSATION_RATE = env.str("LETTACHAT_NEW_CONVERSATION_RATE", default="10/60")
LETTACHAT_MAX_RUNNING_REPLIES = env.int("LETTACHAT_MAX_RUNNING_REPLIES", default=3)
# The largest websocket frame lettachat reads; larger ones get an error and the socket goes on.
# Below the server's own cap (daphne: 1 MiB, past which it drops the connection), so an
# oversized frame is always answered; the page checks it before sending, too.
SERVER_MAX_FRAME_BYTES = 1024 * 1024
LETTACHAT_MAX_FRAME_BYTES = env.int("LETTACHAT_MAX_FRAME_BYTES", default=256 * 1024)
if not 0 < LETTACHAT_MAX_FRAME_BYTES < SERVER_MAX_FRAME_BYTES:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"LETTACHAT_MAX_FRAME_BYTES must be above 0 and below the server's cap "
        f"({SERVER_MAX_FRAME_BYTES:,} bytes), not {LETTACHAT_MAX_FRAME_BYTES:,}"
    )
# Login throttling (django-axes), on the site's login and the admin's: after
# LETTACHAT_LOGIN_FAILURES wrong passwords for one username from one address, that pair is
# refused (429, registration/locked_out.html) for LETTACHAT_LOGIN_LOCKOUT_MINUTES, counted from
# the last failure. By username *and* address, so no one elsewhere can lock a person out, and
# never for ever. Unlock early: manage.py axes_reset_username NAME (or axes_reset_ip, axes_reset).
# The address is the one the audit log records (lettachat/request_log.py): REMOTE_ADDR, or
# behind LETTACHAT_TRUSTED_PROXIES proxies what the nearest of them saw in X-Forwarded-For.
INSTALLED_APPS += ["axes"]
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LETTACHAT_LOGIN_FAILURES", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LETTACHAT_LOGIN_LOCKOUT_MINUTES", default=15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "lettachat.request_log.client_ip"

# Sockets end with their session (chat/sessions.py): besides the events that logout,
# deactivation and password changes send, each socket re-checks its session this often.
LETTACHAT_SESSION_CHECK_SECONDS = env.float("LETTACHAT_SESSION_CHECK_SECONDS", default=5.0)
# --- end Security --------------------------------------------------------------------------------
