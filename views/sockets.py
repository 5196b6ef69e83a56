"""The thread websocket: the current state, then every change as an out-of-band fragment."""

from __future__ import annotations

from flask import Blueprint, abort, g, render_template, request
from flask_sock import Sock
from sqlalchemy import select

from models import ACTIVE_STATUSES, Message, db, thread_channel
from streaming.hub import Subscription

from .access import is_owner, readable_thread
from .fragments import render_message, render_new_messages_oob
from .pages import engine

sock = Sock()
bp = Blueprint("sockets", __name__)
RECEIVE_POLL_S = 1.0  # how often an idle handler notices a socket closed under it
MAX_BATCH = 64


@bp.before_request
def _check_access() -> None:
    # Runs before the upgrade: a stranger gets a plain 404, not an open socket.
    thread_id = (request.view_args or {}).get("thread_id")
    if thread_id is None:
        abort(404)
    readable_thread(thread_id)


@sock.route("/threads/<id:thread_id>/ws", bp=bp)
def thread_socket(ws, thread_id: int) -> None:
    """Websocket: first frame is the thread's live state, then one fragment per change."""
    thread = g.thread
    readonly = not is_owner(thread)
    relay = engine()
    with relay.hub.subscribe(thread_channel(thread.id)) as subscription:
        frame = _state_frame(thread, readonly)
        db.session.close()  # a slow client must not hold a connection while we send
        ws.send(frame)
        while ws.connected:
            event = subscription.get(timeout=RECEIVE_POLL_S)
            if event is None:
                continue
            frame = _changes_frame(thread, [event, *_drain(subscription)], readonly)
            db.session.close()  # hold no connection while waiting for the next change
            if frame:
                ws.send(frame)


def _drain(subscription: Subscription) -> list[dict]:
    """Events already queued: a slow follower renders each changed message once, not per flush."""
    events = []
    while len(events) < MAX_BATCH and (event := subscription.get(timeout=0)) is not None:
        events.append(event)
    return events


def _state_frame(thread, readonly: bool) -> str:
    active = list(db.session.scalars(
        select(Message).where(Message.thread_id == thread.id,
                              Message.status.in_(ACTIVE_STATUSES)).order_by(Message.id)))
    parts = [render_template("_live_status.html", state="live")]
    parts += [_fragment(m, readonly) for m in active]
    return "\n".join(parts)


def _changes_frame(thread, events: list[dict], readonly: bool) -> str:
    created: list[int] = []
    changed: list[int] = []
    for event in events:
        if event.get("type") == "created":
            created += [i for i in event.get("messages", []) if i not in created]
        elif "message" in event and event["message"] not in changed:
            changed.append(event["message"])
    parts = []
    if created:
        messages = list(db.session.scalars(
            select(Message).where(Message.id.in_(created), Message.thread_id == thread.id)
            .order_by(Message.id)))
        texts = {m.id: engine().current_text(m, db.session) for m in messages}
        parts.append(render_new_messages_oob(thread, messages, texts, readonly=readonly))
    for message_id in changed:
        if message_id in created:
            continue
        message = db.session.get(Message, message_id)
        if message is not None and message.thread_id == thread.id:
            parts.append(_fragment(message, readonly))
    return "\n".join(parts)


def _fragment(message: Message, readonly: bool) -> str:
    return render_message(message, engine().current_text(message, db.session), oob=True,
                          readonly=readonly)


def init_sockets(app) -> None:
    # Pings find dead peers; followers only listen, so incoming messages stay tiny.
    app.config.setdefault("SOCK_SERVER_OPTIONS", {
        "ping_interval": app.config["WS_PING_INTERVAL_S"], "max_message_size": 4096})
    sock.init_app(app)
