"""Rate limits per owner (Flask-Limiter): memory in one worker, Redis across workers."""

from __future__ import annotations

from flask import Flask, current_app, g, request
from flask_limiter import Limiter


def _owner_key() -> str:
    # Posting needs the session's CSRF token, so a poster always has an owner id (a user's,
    # with accounts).
    return g.get("owner") or request.remote_addr or "unknown"


limiter = Limiter(key_func=_owner_key, headers_enabled=True)


def posting_limit() -> str:
    return current_app.config["RATE_LIMIT"]


def init_limits(app: Flask) -> None:
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "memory://")
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "relay")
    # Redis away: count in this worker's memory meanwhile rather than refuse every post.
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    limiter.init_app(app)
