"""The thread websocket: the current state, then every change as an out-of-band fragment."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading

from flask import Blueprint, Response, abort, current_app, g, render_template, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.routing.exceptions import WebsocketMismatch

from models import ACTIVE_STATUSES, Message, Thread, db
from models.tree import ThreadTree, compared_replies
from streaming.hub import Event

from .access import is_owner, readable_thread
from .fragments import render_message, render_new_messages_oob, render_path_oob
from .i18n import language
from .pages import engine, id_arg, message_page, message_texts, messages_by_id, versions_of
from .usage import render_thread_cost

log = logging.getLogger(__name__)
sock = Sock()
bp = Blueprint("sockets", __name__)
RECEIVE_POLL_S = 1.0  # how often an idle handler notices a socket closed under it


@bp.before_request
def _check_access() -> None:
    # Runs before the upgrade: a stranger gets a plain 404, not an open socket.
    thread_id = (request.view_args or {}).get("thread_id")
    if thread_id is None:
        abort(404)
    check_upgrade(request.headers)
    readable_thread(thread_id)
    id_arg("after")  # a malformed one is a 400 before the upgrade
    for key in SERVER_SOCKETS:  # the socket the websocket library will take (below)
        if key in request.environ and not isinstance(request.environ[key], WholeSends):
            request.environ[key] = WholeSends(request.environ[key])


SERVER_SOCKETS = ("gunicorn.socket", "werkzeug.socket")


class WholeSends:
    """The client's socket as the websocket library gets it, with a `send` that writes all
    it is given, one writer at a time.

    simple-websocket (1.1.0) writes each frame with one `socket.send`, which under gevent
    may write only part of it when the client's buffer is nearly full (a slow reader, a
    large frame): the rest would be dropped, and every later frame read as garbage
    (tests/test_follow_views.py shows such a short write). Its own pongs and close
    frames, sent from its reader, go through the same lock, so frames never interleave.
    """

    def __init__(self, sock) -> None:
        self._sock = sock
        self._sending = threading.Lock()  # gevent's under the gevent worker (patched)

    def send(self, data, flags: int = 0) -> int:
        with self._sending:
            self._sock.sendall(data, flags)
        return len(data)

    def sendall(self, data, flags: int = 0) -> None:
        self.send(data, flags)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


WEBSOCKET_VERSION = "13"


class ClientGone(Response):
    """The answer to a client that left during the websocket handshake: nothing to send."""

    def __call__(self, environ, start_response):
        if "gunicorn.socket" in environ:
            # As flask-sock ends a websocket: gunicorn writes nothing on a socket that is
            # gone already.
            raise StopIteration
        return super().__call__(environ, start_response)


@bp.errorhandler(ConnectionError)
def _client_left(err: ConnectionError):
    """A page that gave up waiting for the handshake (a busy server) is normal, not an
    error: no traceback, no 500."""
    log.debug("a websocket client left during the handshake: %s", type(err).__name__)
    return ClientGone(status=400)


def check_upgrade(headers) -> None:
    """Refuse a websocket opening handshake that RFC 6455 (4.2.1) does not allow: 426 with
    the version we speak for another version, 400 for a missing or malformed key. (Routing
    has already seen 'Upgrade: websocket' and 'Connection: Upgrade': see init_sockets.)"""
    if headers.get("Sec-WebSocket-Version", "").strip() != WEBSOCKET_VERSION:
        raise UpgradeRequired(description="Unsupported websocket version: send "
                                          f"'Sec-WebSocket-Version: {WEBSOCKET_VERSION}'.")
    if not _valid_key(headers.get("Sec-WebSocket-Key", "")):
        raise BadRequest(description="'Sec-WebSocket-Key' must be 16 random bytes in base64.")


def _valid_key(key: str) -> bool:
    key = key.strip()
    if len(key) != 24:  # 16 bytes in base64, padding included
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


class UpgradeRequired(HTTPException):
    """426: the client must speak websocket version 13 here (RFC 6455 4.4)."""

    code = 426

    def get_headers(self, environ=None, scope=None) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", WEBSOCKET_VERSION)]


@sock.route("/threads/<id:thread_id>/ws", bp=bp)
def thread_socket(ws, thread_id: int) -> None:
    """Websocket: first frame is the thread's live state, then one fragment per change."""
    follow_thread(ws, thread_id)


BUSY_CLOSE = 1013  # RFC 6455 "try again later": the page reconnects
FAILED_CLOSE = 1011  # "internal error"


def follow_thread(ws, thread_id: int) -> None:
    """Follow the thread on an open websocket until the client leaves.

    Past the upgrade an HTTP error can no longer be answered: written on the socket, its
    status line reaches the page as a broken frame. A database that is busy or away ends
    the socket with 1013 (the page reconnects, and its next state frame has everything),
    anything else with 1011.
    """
    try:
        _follow(ws)
    except (ConnectionClosed, OSError) as err:
        # A tab closed or a network gone: normal for a follower, not an error.
        log.debug("websocket follower of thread %s left: %s", thread_id, type(err).__name__)
    except (DBAPIError, PoolTimeout) as err:
        log.warning("websocket follower of thread %s sent away, the database is busy or "
                    "away: %s", thread_id, getattr(err, "orig", None) or err)
        _close(ws, BUSY_CLOSE, "The server is busy; reconnect.")
    except Exception:
        log.exception("websocket follower of thread %s failed", thread_id)
        _close(ws, FAILED_CLOSE, "The server failed; reconnect.")
    # The request's session is rolled back and removed at its teardown, as for any view.


def _close(ws, code: int, message: str) -> None:
    with contextlib.suppress(ConnectionClosed, OSError):
        ws.close(reason=code, message=message)


def _follow(ws) -> None:
    thread = g.thread
    readonly = not is_owner(thread)
    feeds = current_app.extensions["relay_feeds"]
    db.session.close()  # following may wait for the broker: hold no connection meanwhile
    with feeds.follow(thread.id, readonly, request.environ, language()) as follower:
        frame, shown = _state_frame(thread, readonly, id_arg("after"))
        feeds.shown(thread.id, shown)  # a resync renders these again
        db.session.close()  # a slow client must not hold a connection while we send
        ws.send(frame)
        while ws.connected and not follower.dropped:
            frame = follower.next_frame(RECEIVE_POLL_S)
            if frame is not None:
                ws.send(frame)
            elif follower.shut_out:
                # The share link was revoked: the last frame told the page; no more.
                ws.close(reason=1000, message="The share link was revoked.")
                break
    if follower.dropped:
        # Too far behind to catch up frame by frame: the page reconnects afresh.
        ws.close(reason=BUSY_CLOSE, message="Too far behind; reconnect.")


def _state_frame(thread: Thread, readonly: bool,
                 after: int | None = None) -> tuple[str, list[int]]:
    """The thread's live state, and the messages the page may show live after it: the
    active ones and the newest of its path.

    `after` (the socket's `?after=`): the message up to which the page has everything, its
    newest or the one before the first reply it shows running. Every message of the path
    since comes too, so a turn asked and answered before the socket opened (or while it
    was closed) reaches the page.
    """
    tree = ThreadTree.load(db.session, thread)
    path = tree.path() + compared_replies(db.session, tree.leaf)  # what the page shows
    parts = [render_template("_live_status.html", state="live"),
             # The title may have changed while this tab was not listening.
             render_template("_thread_title.html", thread=thread, oob=True),
             render_thread_cost(thread, oob=True)]
    if len(tree.path()) != len(tree.parents):
        # A thread with versions: another may have been chosen while this tab was away
        # (the page keeps its list when it shows this path already).
        parts.append(_path_fragment(thread, tree, readonly))
    active = [m for m in db.session.scalars(
        select(Message).where(Message.thread_id == thread.id,
                              Message.status.in_(ACTIVE_STATUSES)).order_by(Message.id))
              if m.id in path]
    if after is not None:
        newer = [i for i in path[-current_app.config["PAGE_SIZE"]:] if i > after]
        active = sorted({m.id: m for m in [*active, *messages_by_id(newer)]}.values(),
                        key=lambda m: m.id)
    if active:
        # With the prompts they answer: appended if the page does not show them yet (sent
        # while it was not listening), swapped in where it does (the page updates its copies).
        prompts = [db.session.get(Message, reply.parent_id) for reply in active
                   if reply.role == "assistant" and reply.parent_id is not None]
        shown = sorted({m.id: m for m in [*prompts, *active] if m is not None}.values(),
                       key=lambda m: m.id)
        parts.append(_appended(thread, tree, shown, readonly))
    return "\n".join(parts), [m.id for m in active] + path[-1:]


def render_changes(thread_id: int, events: list[Event], readonly: bool) -> str:
    """One frame for a batch of hub events: new messages appended, changed ones swapped.

    Rendered once per worker for all followers of a kind, so it carries nothing of one
    browser's session (forms take the CSRF token from the page's header).
    """
    try:
        if any(event.get("type") == "deleted" for event in events):
            return render_template("_thread_deleted.html", thread_id=thread_id,
                                   readonly=readonly)
        if any(event.get("type") == "unshared" for event in events):
            if readonly:  # a viewer's link was revoked: what it saw goes too
                return render_template("_thread_unshared.html", thread_id=thread_id)
            events = [event for event in events if event.get("type") != "unshared"]
            if not events:
                return ""
        thread = db.session.get(Thread, thread_id)
        if thread is None:
            return ""
        return _changes_frame(thread, events, readonly)
    finally:
        db.session.close()  # hold no connection while the frames are sent


def _changes_frame(thread: Thread, events: list[Event], readonly: bool) -> str:
    created: list[int] = []
    changed: list[int] = []
    resync: set[int] = set()
    renamed = False
    selected = False
    for event in events:
        kind = event.get("type")
        if kind == "renamed":
            renamed = True
        elif kind == "created":
            created += [i for i in event.get("messages", []) if i not in created]
        elif kind == "selected":  # another version of a turn became active
            selected = True
        elif kind == "resync":  # events may have been lost (see _resynced)
            resync.update(event.get("messages") or ())
            resync.add(0)
            renamed = True  # the title may have changed unheard too
        elif "message" in event and event["message"] not in changed:
            changed.append(event["message"])
    tree = ThreadTree.load(db.session, thread)
    path = set(tree.path())
    if any(i not in path for i in (*created, *changed)):
        # Replies compared side by side at the path's end are shown too.
        path |= set(compared_replies(db.session, tree.leaf))
    # A new version (regenerated, edited) replaces a turn: the whole path is sent again.
    selected = selected or any(i in tree.parents and len(tree.siblings(i)) > 1
                               for i in created)
    parts = []
    if selected:
        parts.append(_path_fragment(thread, tree, readonly, csrf_token=_no_token))
    # Only the path is on the followers' pages: a version beside it changes unseen.
    created = [i for i in created if i in path]
    if created and not selected:
        messages = list(db.session.scalars(
            select(Message).where(Message.id.in_(created), Message.thread_id == thread.id)
            .order_by(Message.id)))
        parts.append(_appended(thread, tree, messages, readonly, csrf_token=_no_token))
    if created:
        # A first prompt names the thread; a new turn moves it to the top of the list.
        parts.append(render_template("_thread_changed.html", thread=thread,
                                     readonly=readonly, csrf_token=_no_token))
    elif renamed:
        parts.append(render_template("_thread_renamed.html", thread=thread, readonly=readonly,
                                     csrf_token=_no_token))
    if resync:
        parts.append(_resynced(thread, tree, resync, readonly))
        changed = [i for i in changed if i not in resync]
    for message_id in changed:
        if message_id in created or message_id not in path:
            continue
        message = db.session.get(Message, message_id)
        if message is not None and message.thread_id == thread.id:
            parts.append(_fragment(message, readonly, versions=versions_of(tree, [message]),
                                   csrf_token=_no_token))
    if changed or created or resync:  # the running total: estimated while a reply is written
        parts.append(render_thread_cost(thread, oob=True))
    return "\n".join(parts)


def _resynced(thread: Thread, tree: ThreadTree, watched: set[int], readonly: bool) -> str:
    """After events may have been lost (the broker was away, or the feed fell behind): the
    messages the page may show live (`watched`, or active now) and any newer than those,
    among the path's newest page, appended where the page lacks them and brought up to
    date where it has them. An end, or a whole turn, asked and answered meanwhile reaches
    the page."""
    newest = max(watched, default=0)
    active = set(db.session.scalars(select(Message.id).where(
        Message.thread_id == thread.id, Message.status.in_(ACTIVE_STATUSES))))
    tail = tree.path()[-current_app.config["PAGE_SIZE"]:]
    tail += [i for i in compared_replies(db.session, tree.leaf) if i not in tail]
    messages = messages_by_id([i for i in tail if i > newest or i in watched or i in active])
    if not messages:
        return ""
    return _appended(thread, tree, messages, readonly, csrf_token=_no_token)


def _appended(thread: Thread, tree: ThreadTree, messages: list[Message], readonly: bool,
              **context) -> str:
    """`messages` with their freshest text, appended where the page lacks them and brought
    up to date where it has them."""
    texts = {m.id: engine().current_text(m, db.session) for m in messages}
    return render_new_messages_oob(thread, messages, texts, readonly=readonly,
                                   versions=versions_of(tree, messages), **context)


def _path_fragment(thread: Thread, tree: ThreadTree, readonly: bool, **context) -> str:
    messages, has_more = message_page(thread, tree=tree)
    return render_path_oob(thread, messages, message_texts(messages), has_more=has_more,
                           readonly=readonly, versions=versions_of(tree, messages), **context)


def _no_token() -> str:
    return ""


def _fragment(message: Message, readonly: bool, **context) -> str:
    return render_message(message, engine().current_text(message, db.session), oob=True,
                          readonly=readonly, **context)


def init_sockets(app) -> None:
    # Pings find dead peers; followers only listen, so incoming messages stay tiny.
    app.config.setdefault("SOCK_SERVER_OPTIONS", {
        "ping_interval": app.config["WS_PING_INTERVAL_S"], "max_message_size": 4096})
    sock.init_app(app)
    app.register_error_handler(WebsocketMismatch, _mismatch)


def _mismatch(err: WebsocketMismatch):
    """A plain request to a websocket address (426: upgrade), or an upgrade to a page (400)."""
    from . import _http_error

    connection = {token.strip().lower() for token in request.headers.get("Connection",
                                                                         "").split(",")}
    if "upgrade" in connection and request.headers.get("Upgrade", "").lower() == "websocket":
        return _http_error(BadRequest(description="This address is not a websocket."))
    return _http_error(UpgradeRequired(
        description="This address is a websocket: open it with 'Upgrade: websocket' and "
                    "'Connection: Upgrade'."))
