"""Who is asking (views.identity: an anonymous browser, or a user), CSRF, and ownership
checks."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable

from flask import Flask, abort, g, request, session

from models import Message, Thread, db

from .i18n import N_
from .identity import auth_mode, identify, refuse_stranger

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def register_access(app: Flask) -> None:
    app.before_request(identify)
    app.before_request(_check_csrf)
    app.context_processor(lambda: {"csrf_token": csrf_token, "owner": current_owner,
                                   "current_user": g.get("user"), "auth_mode": auth_mode()})


def current_owner() -> str:
    """The owner id of what this request makes: the signed-in user's; in anonymous mode this
    browser's, kept in the signed session cookie (created on first use)."""
    owner = request_owner()
    if owner:
        return owner
    if auth_mode() != "anonymous":
        refuse_stranger()
    owner = g.owner = session["owner"] = secrets.token_urlsafe(18)
    session.permanent = True
    return owner


def request_owner() -> str | None:
    """Whose threads this request may touch, or None (nobody yet)."""
    return g.get("owner")


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
        session.permanent = True
    return token


def _check_csrf() -> None:
    if request.method in SAFE_METHODS or request.endpoint is None:
        return
    expected = session.get("csrf")
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
    # Compared as bytes: compare_digest refuses non-ASCII str, and junk must be a 403.
    if not expected or not sent or not hmac.compare_digest(
            expected.encode(), sent.encode("utf-8", "surrogateescape")):
        abort(403, description="Missing or invalid CSRF token: reload the page and try again.")


def is_owner(thread: Thread) -> bool:
    owner = request_owner()
    return owner is not None and thread.owner == owner


def can_read(thread: Thread) -> bool:
    """The owner, or a browser that opened the thread's current share link."""
    return is_owner(thread) or _has_share(thread)


def _thread_if(thread_id: int, allowed: Callable[[Thread], bool]) -> Thread:
    thread = db.session.get(Thread, thread_id)
    if thread is None or not allowed(thread):
        abort(404, description=N_("No such thread."))  # never reveal that it exists
    g.thread = thread
    return thread


def _message_if(message_id: int, allowed: Callable[[Thread], bool]) -> Message:
    message = db.session.get(Message, message_id)
    if message is None:
        abort(404, description=N_("No such message."))
    _thread_if(message.thread_id, allowed)
    return message


def owned_thread(thread_id: int) -> Thread:
    """The thread if this browser owns it; 404 otherwise."""
    return _thread_if(thread_id, is_owner)


def owned_message(message_id: int) -> Message:
    """The message if this browser owns its thread; 404 otherwise."""
    return _message_if(message_id, is_owner)


def readable_thread(thread_id: int) -> Thread:
    """The thread if this browser owns it or holds its current share link; 404 otherwise."""
    return _thread_if(thread_id, can_read)


def readable_message(message_id: int) -> Message:
    """The message if this browser may read its thread; 404 otherwise."""
    return _message_if(message_id, can_read)


def grant_share(thread: Thread) -> None:
    """Remember in this browser's session that it opened the thread's share link."""
    grants = dict(session.get("shares", {}))
    grants[str(thread.id)] = thread.share_token
    session["shares"] = grants


def _has_share(thread: Thread) -> bool:
    token = session.get("shares", {}).get(str(thread.id))
    return bool(token and thread.share_token
                and hmac.compare_digest(token.encode(), thread.share_token.encode()))
