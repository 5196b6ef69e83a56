"""Who is asking: an anonymous owner identity per browser, CSRF, and ownership checks."""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, abort, g, request, session

from models import Message, Thread, db

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def register_access(app: Flask) -> None:
    app.before_request(_check_csrf)
    app.context_processor(lambda: {"csrf_token": csrf_token, "owner": current_owner})


def current_owner() -> str:
    """This browser's owner id, kept in the signed session cookie (created on first use)."""
    owner = session.get("owner")
    if not owner:
        owner = session["owner"] = secrets.token_urlsafe(18)
        session.permanent = True
    return owner


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
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        abort(403, description="Missing or invalid CSRF token: reload the page and try again.")


def owned_thread(thread_id: int) -> Thread:
    """The thread if this browser owns it; 404 otherwise (never reveal that it exists)."""
    thread = db.session.get(Thread, thread_id)
    if thread is None or thread.owner != session.get("owner"):
        abort(404, description="No such thread.")
    g.thread = thread
    return thread


def owned_message(message_id: int) -> Message:
    """The message if this browser owns its thread; 404 otherwise."""
    message = db.session.get(Message, message_id)
    if message is None:
        abort(404, description="No such message.")
    owned_thread(message.thread_id)
    return message


def is_owner(thread: Thread) -> bool:
    return thread.owner == session.get("owner")


def grant_share(thread: Thread) -> None:
    """Remember in this browser's session that it opened the thread's share link."""
    grants = dict(session.get("shares", {}))
    grants[str(thread.id)] = thread.share_token
    session["shares"] = grants


def readable_thread(thread_id: int) -> Thread:
    """The thread if this browser owns it or holds its current share link; 404 otherwise."""
    thread = db.session.get(Thread, thread_id)
    if thread is None or not (is_owner(thread) or _has_share(thread)):
        abort(404, description="No such thread.")
    g.thread = thread
    return thread


def readable_message(message_id: int) -> Message:
    message = db.session.get(Message, message_id)
    if message is None:
        abort(404, description="No such message.")
    readable_thread(message.thread_id)
    return message


def _has_share(thread: Thread) -> bool:
    token = session.get("shares", {}).get(str(thread.id))
    return bool(token and thread.share_token and hmac.compare_digest(token, thread.share_token))
