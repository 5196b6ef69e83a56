"""GET /metrics: Prometheus text format, for configured addresses or a bearer token."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request

from .identity import address_in
from .limits import limiter

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@limiter.exempt
def metrics_show():
    """Every worker's metrics in the Prometheus text format (no session, no cookie)."""
    metrics = current_app.extensions["relay_metrics"]
    # Refusals are plain text, not the error page: that page would start a session.
    if not metrics.enabled:
        return _refusal(404, "Metrics are switched off (METRICS=off).")
    if not (_token_matches() or _address_allowed()):
        return _refusal(403, "Metrics are served only to the addresses in METRICS_ALLOW or "
                             "with the METRICS_TOKEN bearer token.")
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _refusal(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, content_type="text/plain; charset=utf-8")


def _token_matches() -> bool:
    token = current_app.config.get("METRICS_TOKEN")
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    return bool(token and scheme.lower() == "bearer" and hmac.compare_digest(
        sent.strip().encode("utf-8", "surrogateescape"), token.encode()))


def _address_allowed() -> bool:
    # Behind a proxy this is the client's address only with TRUSTED_PROXIES set (ProxyFix);
    # otherwise it is the proxy's own.
    return address_in(request.remote_addr or "", current_app.extensions["relay_metrics_allow"])
