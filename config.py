"""Configuration: read from the environment with sane defaults, nothing hard-coded."""

from __future__ import annotations

import os


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def _float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


class Config:
    """Settings for a running Relay; every value can be set in the environment."""

    SECRET_KEY = _env("SECRET_KEY")  # generated into the instance folder when unset
    DATABASE_URL = _env("DATABASE_URL")  # default: SQLite in the instance folder
    REDIS_URL = _env("REDIS_URL")
    # The origin absolute links (share links) are built from, e.g. https://relay.example.com;
    # unset, the host a trusted proxy names, else the address gunicorn listens on (never the
    # Host header a client chose).
    PUBLIC_URL = _env("PUBLIC_URL")
    # How many proxies (nginx, a load balancer) stand in front and set X-Forwarded-For,
    # -Proto and -Host: their values are believed only then (werkzeug's ProxyFix).
    TRUSTED_PROXIES = _int("TRUSTED_PROXIES", 0)
    # /healthz also counts the worker's greenlets (a scan of the heap: for soak runs and
    # debugging leaks, not for a monitor polling every second).
    HEALTH_DIAGNOSTICS = _env("HEALTH_DIAGNOSTICS", "") not in ("", "0", "false", "no")
    # SQLite waits this long for a lock, blocking its worker's event loop meanwhile.
    SQLITE_BUSY_TIMEOUT_MS = _int("SQLITE_BUSY_TIMEOUT_MS", 5000)

    CHAT_PROVIDER = _env("CHAT_PROVIDER")  # "openai" | "demo"; default decided by the keys below
    OPENAI_API_KEY = _env("OPENAI_API_KEY")
    OPENAI_BASE_URL = _env("OPENAI_BASE_URL")
    CHAT_MODEL = _env("CHAT_MODEL")
    SYSTEM_PROMPT = _env("SYSTEM_PROMPT", "You are a helpful assistant. Answer in Markdown.")
    OPENAI_CONNECT_TIMEOUT_S = _float("OPENAI_CONNECT_TIMEOUT_S", 10.0)
    OPENAI_READ_TIMEOUT_S = _float("OPENAI_READ_TIMEOUT_S", 60.0)
    DEMO_TOKEN_DELAY_MS = _int("DEMO_TOKEN_DELAY_MS", 35)
    # Several models at once, offered in the composer: "provider:model[=Label]", comma
    # separated, the first the default (llm/catalog.py). Unset: the one model above.
    CHAT_MODELS = _env("CHAT_MODELS")
    # What replies cost: '{"model-id": {"input": USD/M tokens, "output": USD/M tokens}}'
    # (llm/pricing.py); a model without a price shows no cost. Bad JSON stops the start.
    MODEL_PRICES = _env("MODEL_PRICES")
    ANTHROPIC_API_KEY = _env("ANTHROPIC_API_KEY")
    ANTHROPIC_BASE_URL = _env("ANTHROPIC_BASE_URL")
    ANTHROPIC_MAX_TOKENS = _int("ANTHROPIC_MAX_TOKENS", 4096)
    AZURE_OPENAI_ENDPOINT = _env("AZURE_OPENAI_ENDPOINT")
    AZURE_OPENAI_API_KEY = _env("AZURE_OPENAI_API_KEY")
    AZURE_OPENAI_API_VERSION = _env("AZURE_OPENAI_API_VERSION", "2024-10-21")
    # `openai:*` in CHAT_MODELS: the server's own list is reused this long, and asked for
    # with this timeout (in the background: no page waits for it).
    MODEL_LIST_TTL_S = _float("MODEL_LIST_TTL_S", 300.0)
    MODEL_LIST_TIMEOUT_S = _float("MODEL_LIST_TIMEOUT_S", 2.0)
    # The model's health (shown before a prompt is sent): how long an answer is reused, and
    # how long the cheap probe (GET <base>/models) may take.
    MODEL_HEALTH_TTL_S = _float("MODEL_HEALTH_TTL_S", 5.0)
    MODEL_HEALTH_TIMEOUT_S = _float("MODEL_HEALTH_TIMEOUT_S", 2.0)

    STREAM_CHUNKING = _env("STREAM_CHUNKING", "word")
    STREAM_THROTTLE_MS = _int("STREAM_THROTTLE_MS", 100)
    STREAM_MAX_LAG_MS = _int("STREAM_MAX_LAG_MS", 1000)
    # Adaptive throttle: a reply is flushed every STREAM_THROTTLE_MS x (1 + its length /
    # STREAM_THROTTLE_GROW_CHARS), at most every STREAM_THROTTLE_MAX_MS (off when not above
    # STREAM_THROTTLE_MS).
    STREAM_THROTTLE_MAX_MS = _int("STREAM_THROTTLE_MAX_MS", 0)
    STREAM_THROTTLE_GROW_CHARS = _int("STREAM_THROTTLE_GROW_CHARS", 2000)
    DRIVER_GRACE_MS = _int("DRIVER_GRACE_MS", 2000)
    HEARTBEAT_S = _float("HEARTBEAT_S", 5.0)
    STALE_AFTER_S = _float("STALE_AFTER_S", 30.0)
    SWEEP_INTERVAL_S = _float("SWEEP_INTERVAL_S", 0.0)  # 0: min(5 s, STALE_AFTER_S / 3)
    MODEL_RETRIES = _int("MODEL_RETRIES", 2)  # only while no token has been shown
    MODEL_RETRY_MAX_WAIT_S = _float("MODEL_RETRY_MAX_WAIT_S", 10.0)
    POLL_INTERVAL_MS = _int("POLL_INTERVAL_MS", 1000)
    # auto: SSE for the owner's tabs, the websocket for share viewers | ws | poll
    FOLLOW_MODE = _env("FOLLOW_MODE", "auto")
    WS_PING_INTERVAL_S = _float("WS_PING_INTERVAL_S", 25.0)
    SSE_KEEPALIVE_S = _float("SSE_KEEPALIVE_S", 15.0)
    SSE_RETRY_MS = _int("SSE_RETRY_MS", 1000)
    # A follower that cannot see the live generation re-reads the database at least this often.
    RESUME_POLL_S = _float("RESUME_POLL_S", 1.0)
    # Fan-out between workers: auto = Redis when REDIS_URL is set, else PostgreSQL
    # LISTEN/NOTIFY on PostgreSQL, else in-process plus the database watcher (SQLite).
    HUB_BACKEND = _env("HUB_BACKEND", "auto")  # auto | redis | postgres | local
    HUB_PREFIX = _env("HUB_PREFIX", "relay:")  # channel prefix: deployments sharing a broker
    # How often each worker's database watcher looks for changes from other workers (SQLite,
    # or while the broker is away).
    WATCH_INTERVAL_MS = _int("WATCH_INTERVAL_MS", 100)
    WS_QUEUE_FRAMES = _int("WS_QUEUE_FRAMES", 64)  # a websocket this far behind is dropped
    # PostgreSQL connections per worker: DB_POOL_SIZE + DB_MAX_OVERFLOW for requests, plus
    # 2 for the writer and sweeper and 2 for the hub (docs/scaling.md sizes them).
    DB_POOL_SIZE = _int("DB_POOL_SIZE", 5)
    DB_MAX_OVERFLOW = _int("DB_MAX_OVERFLOW", 5)
    DB_POOL_TIMEOUT_S = _float("DB_POOL_TIMEOUT_S", 30.0)  # a burst queues, then 503
    # Behind PgBouncer in transaction mode: no server-side prepared statements, and the
    # hub's LISTEN connection goes straight to PostgreSQL (or use Redis).
    DB_PREPARED_STATEMENTS = _env("DB_PREPARED_STATEMENTS", "on") != "off"
    HUB_DATABASE_URL = _env("HUB_DATABASE_URL")  # default: DATABASE_URL

    # Capacity of a worker: past MAX_GENERATIONS replies at once (0: no limit), or while its
    # event loop wakes more than MAX_LOOP_LAG_MS late (0: ignored), new replies wait in a
    # queue (their tab shows how many are ahead); past MAX_QUEUED waiting, new prompts get
    # a 503 with Retry-After.
    MAX_GENERATIONS = _int("MAX_GENERATIONS", 200)
    MAX_LOOP_LAG_MS = _int("MAX_LOOP_LAG_MS", 100)
    MAX_QUEUED = _int("MAX_QUEUED", 200)

    CANCEL_WAIT_S = _float("CANCEL_WAIT_S", 2.0)
    MAX_PROMPT_CHARS = _int("MAX_PROMPT_CHARS", 32000)
    MAX_CONTENT_LENGTH = _int("MAX_REQUEST_BYTES", 256 * 1024)
    HISTORY_MESSAGES = _int("HISTORY_MESSAGES", 40)
    PAGE_SIZE = _int("PAGE_SIZE", 30)
    SIDEBAR_PAGE_SIZE = _int("SIDEBAR_PAGE_SIZE", 50)
    MAX_IMPORT_BYTES = _int("MAX_IMPORT_BYTES", 8 * 1024 * 1024)
    # Attachments: one file's size, files per message, uploads a minute per client; and the
    # context window (tokens) of a model whose CHAT_MODELS entry names none.
    UPLOAD_MAX_MB = _float("UPLOAD_MAX_MB", 20.0)
    UPLOAD_MAX_FILES = _int("UPLOAD_MAX_FILES", 10)
    UPLOAD_RATE_LIMIT = _env("UPLOAD_RATE_LIMIT", "120/minute")
    CONTEXT_TOKENS = _int("CONTEXT_TOKENS", 128_000)
    # A request body must have arrived this long after it began to be read, or it is a 408.
    BODY_TIMEOUT_S = _float("BODY_TIMEOUT_S", 20.0)

    # A temporary chat is deleted when its person leaves it, or this long after its last
    # activity, whichever comes first (the sweep runs every TEMPORARY_SWEEP_S in each worker).
    TEMPORARY_TTL_S = _float("TEMPORARY_TTL_S", 24 * 3600.0)
    TEMPORARY_SWEEP_S = _float("TEMPORARY_SWEEP_S", 60.0)
    MAX_FOLDERS = _int("MAX_FOLDERS", 200)
    BULK_MAX_THREADS = _int("BULK_MAX_THREADS", 500)  # threads one bulk action may change
    RATE_LIMIT = _env("RATE_LIMIT", "30/minute")

    # Tools the model may call (tools/): unset = every built-in (calculator, current_time,
    # search_threads); empty or "none" = no tools (for a server that refuses `tools`); else
    # a comma list. TOOL_MODULES: more tools, from modules that define `TOOLS`.
    TOOLS = os.environ.get("TOOLS")
    TOOL_MODULES = _env("TOOL_MODULES")
    MAX_TOOL_STEPS = _int("MAX_TOOL_STEPS", 5)  # rounds of tool calls in one reply
    TOOL_TIMEOUT_S = _float("TOOL_TIMEOUT_S", 10.0)  # one call, then a failed step

    # Prometheus metrics at /metrics (off: nothing is recorded and /metrics is a 404), served
    # to METRICS_ALLOW (addresses or networks, comma separated) or with the bearer token.
    METRICS = _env("METRICS", "on") != "off"
    METRICS_ALLOW = _env("METRICS_ALLOW", "127.0.0.1,::1")
    METRICS_TOKEN = _env("METRICS_TOKEN")
    LOG_FORMAT = _env("LOG_FORMAT", "text")  # text | json (one JSON object per line)

    # Who owns threads: "anonymous" (each browser is an owner of its own, in its cookie),
    # "accounts" (local users who sign in) or "header" (the user a trusted reverse proxy
    # names in AUTH_HEADER, believed only from AUTH_PROXY_ADDRESSES).
    AUTH_MODE = _env("AUTH_MODE", "anonymous")
    SIGNUP = _env("SIGNUP", "invite")  # accounts mode: open | invite | off
    AUTH_HEADER = _env("AUTH_HEADER", "X-Forwarded-User")
    AUTH_PROXY_ADDRESSES = _env("AUTH_PROXY_ADDRESSES", "")  # IPs and CIDRs, comma separated
    # Sign-in (and sign-up, password change) attempts: per account name, and per address.
    SIGNIN_RATE_LIMIT = _env("SIGNIN_RATE_LIMIT", "5/minute;30/hour")
    SIGNIN_ADDRESS_RATE_LIMIT = _env("SIGNIN_ADDRESS_RATE_LIMIT", "20/minute;200/hour")
    PASSWORD_MIN_CHARS = _int("PASSWORD_MIN_CHARS", 8)
    # Argon2id cost (argon2-cffi's RFC 9106 low-memory profile by default): memory per hash
    # in KiB, passes, lanes. Stored hashes carry their own; a sign-in upgrades an old one.
    PASSWORD_HASH_MEMORY_KIB = _int("PASSWORD_HASH_MEMORY_KIB", 65536)
    PASSWORD_HASH_TIME_COST = _int("PASSWORD_HASH_TIME_COST", 3)
    PASSWORD_HASH_PARALLELISM = _int("PASSWORD_HASH_PARALLELISM", 4)
    INVITE_TTL_S = _float("INVITE_TTL_S", 7 * 24 * 3600.0)

    SESSION_COOKIE_NAME = "relay_session"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    PERMANENT_SESSION_LIFETIME = 60 * 60 * 24 * 365

    SQLALCHEMY_ENGINE_OPTIONS: dict = {}
    TESTING = False


class TestConfig(Config):
    """Settings for the test suite: in-memory-fast SQLite file, demo model without delays."""

    TESTING = True
    SECRET_KEY = "test-secret-key"
    CHAT_PROVIDER = "demo"
    DEMO_TOKEN_DELAY_MS = 0
    STREAM_THROTTLE_MS = 20
    DRIVER_GRACE_MS = 60_000  # tests start generations explicitly
    RATE_LIMIT = "1000/minute"
    # Argon2id still, at a cost a test suite can pay thousands of times.
    PASSWORD_HASH_MEMORY_KIB = 1024
    PASSWORD_HASH_TIME_COST = 1
    PASSWORD_HASH_PARALLELISM = 1
