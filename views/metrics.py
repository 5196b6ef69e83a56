"""GET /metrics: Prometheus text format, for configured addresses or a bearer token."""

from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, current_app, request

from .limits import limiter

bp = Blueprint("metrics", __name__)


def parse_allow(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """METRICS_ALLOW: addresses and networks, comma separated; a bad entry stops the start."""
    networks = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"METRICS_ALLOW: {entry!r} is not an IP address or network "
                             "(e.g. 10.0.0.0/8)") from None
    return networks


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
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in current_app.extensions["relay_metrics_allow"])
