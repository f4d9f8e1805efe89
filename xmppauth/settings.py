"""Django settings for xmppauth.

Everything an operator sets lives in the TOML file (``XMPPAUTH_CONFIG``) or in the environment:
``DATABASE_URL`` (default SQLite under ``var/``), ``REDIS_URL`` (unset: in-memory channel layer and
in-process jobs), ``XMPPAUTH_SECRET_KEY`` and ``XMPPAUTH_KEY_ENCRYPTION_KEY`` (generated under ``var/``
for the embedded default when unset).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url

from xmppauth.config import ConfigError, load_config
from xmppauth.secrets import make_private, private_directory, read_or_create_secret

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("XMPPAUTH_VAR_DIR", BASE_DIR / "var"))

XMPPAUTH_CONFIG_PATH = Path(os.environ.get("XMPPAUTH_CONFIG", BASE_DIR / "xmppauth.toml"))
try:
    XMPP = load_config(XMPPAUTH_CONFIG_PATH)
except ConfigError as exc:
    # Exit with one line naming the key (stderr, status 1) instead of a 40-line traceback through Django's
    # lazy settings: ImproperlyConfigured raised here is not caught by manage.py, daphne or celery.
    raise SystemExit(f"xmppauth: configuration error: {exc}") from None

# Prometheus metrics (xmppauth.metrics): every process counts into files here and the endpoint sums them.
# Set before anything imports prometheus_client, which picks its storage at import. An operator's own
# PROMETHEUS_MULTIPROC_DIR wins; "" keeps the counters in memory, per process.
PROMETHEUS_MULTIPROC_DIR = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "metrics"))
if PROMETHEUS_MULTIPROC_DIR:
    private_directory(Path(PROMETHEUS_MULTIPROC_DIR))
else:
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

SECRET_KEY = read_or_create_secret("XMPPAUTH_SECRET_KEY", VAR_DIR / "django-secret-key")
# Key under which CA private keys are encrypted at rest (certauth.pki.keys).
KEY_ENCRYPTION_KEY = read_or_create_secret("XMPPAUTH_KEY_ENCRYPTION_KEY", VAR_DIR / "key-encryption-key")

DEBUG = os.environ.get("XMPPAUTH_DEBUG", "") == "1"


def _allowed_hosts() -> list[str]:
    """Host headers the HTTP listeners answer (Django's Host check, against DNS rebinding and poisoned links).

    The hosted XMPP domains, the loopback names, each listener's own address when it is not a wildcard, and
    the comma-separated ``XMPPAUTH_ALLOWED_HOSTS`` (e.g. the name in the server certificate when it is not
    a hosted domain). Never ``*``.
    """
    names = {"localhost", "127.0.0.1", "[::1]", *XMPP.hosts}
    for listener in XMPP.listen_http:
        if listener.ip_address not in ("0.0.0.0", "::"):
            names.add(f"[{listener.ip_address}]" if ":" in listener.ip_address else listener.ip_address)
    names.update(h.strip() for h in os.environ.get("XMPPAUTH_ALLOWED_HOSTS", "").split(",") if h.strip())
    return sorted(names)


ALLOWED_HOSTS = _allowed_hosts()
# The admin's cookies travel over TLS only (a TLS listener, or a TLS-terminating proxy in front of a plain
# one); HSTS tells browsers to keep it so (SecurityMiddleware sends it on requests that came over TLS).
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = int(os.environ.get("XMPPAUTH_HSTS_SECONDS", str(365 * 24 * 3600)))
SECURE_CONTENT_TYPE_NOSNIFF = True

INSTALLED_APPS = [
    "daphne",
    "xmppauth.apps.XmppauthAdminConfig",  # django.contrib.admin with our site (xmppauth.adminsite)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "accounts",
    "certauth",
    "transport",
    "channels",  # after transport: its `runworker` (one that outlives a Redis outage) overrides channels'
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "certauth.adminguard.AdminCertificateMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

# Failed admin logins are rate-limited by django-axes, per source address and per username separately:
# AXES_FAILURE_LIMIT failures lock that address (or that username, from anywhere) for AXES_COOLOFF_TIME.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("XMPPAUTH_ADMIN_LOGIN_FAILURES", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("XMPPAUTH_ADMIN_LOCKOUT_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

ROOT_URLCONF = "xmppauth.urls"
ASGI_APPLICATION = "xmppauth.asgi.application"

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
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'xmppauth.sqlite3'}",
        # 0: closed after each call. Listener processes keep theirs per thread (xmppauth.dbconn).
        conn_max_age=int(os.environ.get("XMPPAUTH_DB_CONN_MAX_AGE") or 0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # var/ holds the database, the secrets and the bootstrap keys: owner only (0700), the database 0600
    # (SQLite gives its -wal and -shm files the database file's mode).
    _sqlite_path = Path(DATABASES["default"]["NAME"])
    if _sqlite_path.parent == VAR_DIR:
        private_directory(VAR_DIR)
    if str(_sqlite_path) != ":memory:" and _sqlite_path.parent.is_dir():
        make_private(_sqlite_path)
    # Several threads and processes (listeners, jobs, the Celery worker, pki commands) share the file: wait
    # for locks instead of failing at once; write-ahead log so readers (the session watcher polls every
    # 200 ms) never block the writer; BEGIN IMMEDIATE so a transaction that reads then writes waits for the
    # write lock up front (a deferred one fails at once with "database is locked" when another process wrote
    # since its read: SQLite's busy timeout does not cover that case).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=20, init_command="PRAGMA journal_mode=WAL;", transaction_mode="IMMEDIATE"
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# Seconds a message may wait on a channel before the layer drops it, without a trace (channels' default: 60).
# A listener reads its channels as long as it lives, and a dead one's are swept (transport.im.liveness), so
# age is no reason to drop a stanza: one that waited a minute behind a storm (bench.load_mixed saw 70 s) must
# still be delivered (RFC 6120 §8.3: delivered, stored or bounced, never dropped). `capacity` bounds a
# channel, and a full one is refused, which bounces the stanza to its sender.
CHANNEL_EXPIRY_SECONDS = 86400
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Its pool waits for a free connection instead of failing past 100 (xmppauth/redis_layer.py).
            "BACKEND": "xmppauth.redis_layer.BlockingPoolRedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # redis-py 8 reads with a 5 s socket timeout, exactly channels-redis's blocking pop
                        # (5 s): an idle receive then fails with TimeoutError and kills runworker.
                        "socket_timeout": 30,
                        "max_connections": 100,  # per process (event loop); a burst waits for one
                        "timeout": 30,  # seconds a command waits for a connection before failing
                    }
                ],
                "capacity": 1000,
                "expiry": CHANNEL_EXPIRY_SECONDS,
            },
        }
    }
else:
    # Our subclass: a receive expires only its own channel (the stock one walks all channels each time).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "xmppauth.channel_layer.LazyExpiryInMemoryChannelLayer",
            "CONFIG": {"expiry": CHANNEL_EXPIRY_SECONDS},
        }
    }

# Celery (xmppauth/celery.py): with no REDIS_URL, jobs run in-process (runxmpp's scheduler).
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
# `celery -B` keeps its schedule state under var/, not in the working directory (the repository root).
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# Mail to the operators (certificate expiry warnings, certauth.tasks): Django's ADMINS and SMTP settings from
# the environment. XMPPAUTH_ADMINS: comma-separated addresses ("Ops <ops@example.org>, b@example.org"); unset,
# nothing is mailed and the warnings go to the log and the dashboard only.
ADMINS = [
    (address.split("<", 1)[0].strip() or address.strip(), address.strip())
    for address in os.environ.get("XMPPAUTH_ADMINS", "").split(",")
    if address.strip()
]
EMAIL_HOST = os.environ.get("XMPPAUTH_EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("XMPPAUTH_EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("XMPPAUTH_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("XMPPAUTH_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = os.environ.get("XMPPAUTH_EMAIL_STARTTLS", "") == "1"
SERVER_EMAIL = os.environ.get("XMPPAUTH_SERVER_EMAIL", "xmppauth@localhost")
EMAIL_SUBJECT_PREFIX = "[xmppauth] "

# Base URL under which our CRLs are published; certificates we issue name it as distribution point.
XMPPAUTH_PUBLIC_URL = os.environ.get("XMPPAUTH_PUBLIC_URL", "").rstrip("/")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Account passwords (method rdbms: admin "Set password", `manage.py account passwd`), issue 14.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("XMPPAUTH_LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}

CELERY_BEAT_SCHEDULE = {
    "republish-our-crls": {"task": "certauth.tasks.republish_our_crls", "schedule": 3600.0},
    "refresh-due-crl-sources": {"task": "certauth.tasks.refresh_due_crl_sources", "schedule": 60.0},
    "purge-auth-events": {"task": "certauth.tasks.purge_auth_events", "schedule": 3600.0},  # issue 16
    "warn-expiring-certificates": {"task": "certauth.tasks.warn_expiring_certificates", "schedule": 3600.0},
}
