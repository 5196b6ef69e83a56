"""Per request: its id (X-Request-Id), its route, its HTTP metrics and what its log lines say."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any

from flask import Flask, current_app, g, has_request_context, request, session

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED_ROUTE = "(unmatched)"  # a 404 before routing: never the raw path as a label


def init_request_observing(app: Flask) -> None:
    """Hooks that run first and last on every request (register before any other)."""
    app.before_request(_begin)
    app.after_request(_end)


def _begin() -> None:
    g.started = time.perf_counter()
    sent = request.headers.get(REQUEST_ID_HEADER, "")
    # Only a trusted proxy's id is taken; anyone else's could forge another request's.
    trusted = current_app.config.get("TRUSTED_PROXIES") and _VALID_REQUEST_ID.fullmatch(sent)
    g.request_id = sent if trusted else secrets.token_hex(8)
    environ = request.environ
    environ["relay.request_id"] = g.request_id
    environ["relay.route"] = route = route_label()
    if "token" in (request.view_args or {}):  # a share link: its path is its secret
        environ["relay.log_path"] = route


def _end(response):
    request_id = g.get("request_id")
    if request_id is None:  # a request refused before the first hook ran
        _begin()
        request_id = g.request_id
    response.headers[REQUEST_ID_HEADER] = request_id
    rule = request.url_rule
    websocket = bool(rule is not None and getattr(rule, "websocket", False))
    # A websocket's view returns when the socket closes: its length is no latency.
    elapsed = None if websocket else time.perf_counter() - g.started
    current_app.extensions["relay_metrics"].http_request(
        route_label(), request.method, 101 if websocket else response.status_code, elapsed)
    return response


def route_label() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def owner_hash(owner: str, key: str) -> str:
    """A short keyed hash of an owner id: the same owner's lines match, the id stays secret."""
    return hmac.new(key.encode(), owner.encode(), hashlib.sha256).hexdigest()[:12]


def log_context() -> dict[str, Any]:
    """What a log line written while answering a request knows of it."""
    if not has_request_context():
        return {}
    fields: dict[str, Any] = {"request_id": g.get("request_id"), "route": route_label()}
    args = request.view_args or {}
    for name in ("message_id", "thread_id"):
        if name in args:
            fields[name] = args[name]
    owner = g.get("owner") or session.get("owner")
    if owner:
        fields["owner"] = owner_hash(str(owner), current_app.config["SECRET_KEY"])
    return fields
