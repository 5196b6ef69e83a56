"""Who is asking, by AUTH_MODE: a browser's anonymous owner, a signed-in local user, or the
user a trusted reverse proxy names.

`identify()` runs before every view: it sets `g.user` (a User or None) and `g.owner` (the
owner id of the threads this request may touch, or None). In `accounts` and `header` mode a
request without a user reaches only the public endpoints and what a share link opened;
anything else is sent to sign in (a page) or answered 401 (JSON, htmx, other methods).
"""

from __future__ import annotations

import ipaddress

from flask import Flask, abort, current_app, g, redirect, request, session, url_for

from models import db
from models.accounts import proxy_user, session_user

AUTH_MODES = ("anonymous", "accounts", "header")
SIGNUP_MODES = ("open", "invite", "off")

# Reachable by anyone: assets, the share link itself, health, signing in and up.
PUBLIC_ENDPOINTS = frozenset({
    "static", "pages.favicon", "pages.share_show", "api.healthz",
    "accounts.signin_form", "accounts.signin", "accounts.signup_form", "accounts.signup",
    "accounts.signout"})
# What a share link's viewer follows the thread with; each view still checks the grant.
SHARE_ENDPOINTS = frozenset({
    "pages.thread_messages", "messages.message_show", "stream.message_stream",
    "sockets.thread_socket"})
HEADER_VALUE_MAX_CHARS = 64


def check_auth_config(app: Flask) -> None:
    """A setting that cannot work stops the start with a message naming it."""
    mode = app.config["AUTH_MODE"]
    if mode not in AUTH_MODES:
        raise ValueError(f"AUTH_MODE must be anonymous, accounts or header, not {mode!r}")
    if app.config["SIGNUP"] not in SIGNUP_MODES:
        raise ValueError(f"SIGNUP must be open, invite or off, not {app.config['SIGNUP']!r}")
    app.extensions["relay_proxy_networks"] = address_networks(
        "AUTH_PROXY_ADDRESSES", app.config.get("AUTH_PROXY_ADDRESSES") or "")
    if mode == "header" and not app.extensions["relay_proxy_networks"]:
        raise ValueError("AUTH_MODE=header needs AUTH_PROXY_ADDRESSES: the addresses of the "
                         "proxy whose user header is believed")
    if mode == "header" and not (app.config.get("AUTH_HEADER") or "").strip():
        raise ValueError("AUTH_MODE=header needs AUTH_HEADER, e.g. X-Forwarded-User")


def address_networks(setting: str, raw: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A setting that lists IP addresses and networks (CIDR), separated by commas or spaces;
    a bad entry is a ValueError naming the setting (it stops the start)."""
    networks = []
    for item in raw.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{setting}: {item!r} is not an IP address or network "
                             "(e.g. 127.0.0.1, 10.0.0.0/8, ::1)") from None
    return networks


def auth_mode() -> str:
    return current_app.config["AUTH_MODE"]


def peer_address() -> str:
    """The address of the direct peer of this connection: never one a header claims
    (ProxyFix, with TRUSTED_PROXIES, rewrites REMOTE_ADDR and keeps the original)."""
    original = request.environ.get("werkzeug.proxy_fix.orig") or {}
    return original.get("REMOTE_ADDR") or request.environ.get("REMOTE_ADDR") or ""


def address_in(address: str, networks) -> bool:
    """Whether `address` (as a peer gives it: an IPv6 zone, an IPv4-mapped form) is in one
    of `networks`; an address that does not parse is in none."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def peer_is_proxy() -> bool:
    return address_in(peer_address(), current_app.extensions["relay_proxy_networks"])


def identify() -> None:
    """Set g.user and g.owner for this request, and keep strangers out (see the module)."""
    g.user, g.owner = None, None
    mode = auth_mode()
    if mode == "anonymous":
        g.owner = session.get("owner")
        return
    if request.endpoint == "static":
        return
    if mode == "accounts":
        token = session.get("sid")
        if isinstance(token, str):
            g.user = session_user(db.session, token)
            if g.user is None:  # signed out elsewhere, or disabled: this cookie is done
                session.pop("sid", None)
    else:
        g.user = _header_user()
    if g.user is not None:
        g.owner = g.user.owner
        return
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return
    if request.endpoint in SHARE_ENDPOINTS and session.get("shares"):
        return
    refuse_stranger()


def refuse_stranger():
    """Send a request without a user to sign in (a page), or answer 401 with a message."""
    from . import is_htmx, wants_json

    if auth_mode() == "header":
        abort(401, description="Relay signs people in through its proxy, and this request "
                               "came without a user. Open Relay through its usual address.")
    if request.method == "GET" and not wants_json() and not is_htmx():
        abort(redirect(url_for("accounts.signin_form", next=request.full_path.rstrip("?"))))
    abort(401, description="Sign in first.")


def _header_user():
    """The user the proxy names, when the request comes from the proxy; a 403 when another
    address sends the header (someone trying to be someone)."""
    name = request.headers.get(current_app.config["AUTH_HEADER"])
    if name is None:
        return None
    if not peer_is_proxy():
        current_app.logger.warning("refused a %s header from %s, which is not in "
                                   "AUTH_PROXY_ADDRESSES", current_app.config["AUTH_HEADER"],
                                   peer_address())
        abort(403, description=f"The {current_app.config['AUTH_HEADER']} header is accepted "
                               "only from Relay's proxy.")
    try:  # WSGI hands header bytes over as latin-1; a proxy sends names as UTF-8
        name = name.encode("latin-1").decode("utf-8").strip()
    except (UnicodeEncodeError, UnicodeDecodeError):
        name = "\x00"
    if not name:
        return None
    if len(name) > HEADER_VALUE_MAX_CHARS or not name.isprintable():
        abort(400, description="The proxy's user header does not hold a usable user name.")
    user = proxy_user(db.session, name)
    if user.disabled:
        abort(403, description="This account is disabled.")
    _offer_claim()
    return user


def _offer_claim() -> None:
    """A browser that was anonymous before its user arrived may keep its threads."""
    if "owner" in session:  # (popping an absent key would rewrite the cookie every time)
        owner = session.pop("owner")
        session.setdefault("claim", owner)
