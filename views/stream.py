"""The SSE stream of one reply: resumable from any offset, exactly once per character."""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    request,
    stream_with_context,
)
from flask_babel import gettext, ngettext
from markupsafe import escape
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from models import PENDING, Message, db
from streaming.parts import Cursor, cursor_of, parse_cursor
from streaming.reader import CursorError, Delta, Idle, Queued, Reasoning, StepEvent, Terminal
from streaming.sse import ServerSentEvent, comment, delta_event, reasoning_event, step_event

from .access import is_owner, readable_message
from .fragments import render_message
from .pages import engine

bp = Blueprint("stream", __name__)

TERMINAL_EVENTS = {"complete": "done", "error": "error", "aborted": "aborted",
                   "interrupted": "error"}
TERMINAL_WAIT_S = 10.0  # how long a finished stream waits for the database to render its end


def cursor_from_request() -> Cursor:
    """What the client has: `Last-Event-ID` (a reconnect) wins over `?after=`; the text
    offset `T`, or `T.R.S` once the reply has reasoning or steps (streaming.parts)."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw.strip() == "":
        raw = request.args.get("after", "0")
    cursor = parse_cursor(raw.strip())
    if cursor is None:
        abort(400, description="The stream cursor (Last-Event-ID or 'after') must be a "
                               "non-negative whole number, or three joined by dots (T.R.S).")
    return cursor


@bp.get("/messages/<id:message_id>/stream")
def message_stream(message_id: int):
    """Server-sent events: `delta` text after the cursor, then one terminal event."""
    message = readable_message(message_id)
    if message.role != "assistant":
        abort(400, description="Only a reply has a stream.")
    cursor = cursor_from_request()
    relay = engine()
    try:
        relay.check_cursor(message, cursor)  # before claiming: a bad request starts nothing
        if message.status == PENDING:
            # Claiming takes a connection of its own: give this one back first, or a burst
            # of claims could hold the whole pool while each waits for a second connection.
            db.session.close()
            # The driver: whoever claims the reply generates it in this worker (or, when
            # the worker is at capacity, queues it here and shows how many are ahead).
            if relay.claim_or_queue(message_id) is None:
                # Someone else has it, or it waits here: read its state afresh.
                message = db.session.get(Message, message_id)
        items = relay.read(message, cursor)
    except CursorError as err:
        abort(400, description=str(err))
    db.session.close()  # a stream may last minutes: hold no connection while it does

    # stream_with_context: the terminal fragment is rendered with this request's context.
    return Response(stream_with_context(_events(items)), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _events(items: Iterator) -> Iterator[str]:
    metrics = current_app.extensions["relay_metrics"]
    metrics.sse_streams += 1  # an SSE follower while it is open
    try:
        yield from _event_lines(items)
    finally:
        metrics.sse_streams -= 1


def _event_lines(items: Iterator) -> Iterator[str]:
    yield f"retry: {current_app.config['SSE_RETRY_MS']}\n" + comment("stream")
    for item in items:
        if isinstance(item, Delta):
            yield str(delta_event(item.text, item.end if item.cursor is None else item.cursor))
        elif isinstance(item, Reasoning):
            yield str(reasoning_event(item.text, item.cursor))
        elif isinstance(item, StepEvent):
            yield str(step_event(item.step, item.cursor))
        elif isinstance(item, Idle):
            yield comment()
        elif isinstance(item, Queued):
            # No id: the cursor counts text only. The data is HTML text for the status label.
            yield str(ServerSentEvent(data=escape(queued_label(item.ahead)), event="queued"))
        elif isinstance(item, Terminal):
            yield from _terminal_events(item.message_id)
            return


def _terminal_events(message_id: int) -> Iterator[str]:
    """The terminal event, once the database answers; keep-alives while it is away.

    A database that stays away longer than TERMINAL_WAIT_S ends the stream without it: the
    browser reconnects with its Last-Event-ID and gets the end then, with nothing missed.
    """
    deadline = time.monotonic() + TERMINAL_WAIT_S
    pause = 0.1
    while True:
        try:
            terminal = _terminal_event(message_id)
        except (DBAPIError, PoolTimeout) as err:
            db.session.rollback()
            if time.monotonic() + pause > deadline:
                current_app.logger.warning("stream of message %s ended early: %s",
                                           message_id, err)
                return
            yield comment()
            time.sleep(pause)  # cooperative under gevent
            pause = min(pause * 2, 1.0)
            continue
        if terminal is not None:
            yield str(terminal)
        return


def queued_label(ahead: int) -> str:
    return gettext("queued — next") if ahead == 0 else \
        ngettext("queued — %(num)d ahead", "queued — %(num)d ahead", ahead)


def _terminal_event(message_id: int) -> ServerSentEvent | None:
    """The reply's terminal event; None when it is gone (its thread was deleted as it
    stopped): the stream just ends, and a reconnect is told the message does not exist."""
    message = db.session.get(Message, message_id)
    if message is None:
        db.session.close()
        return None
    html = render_message(message, message.content, readonly=not is_owner(message.thread))
    db.session.close()
    return ServerSentEvent(data=html, event=TERMINAL_EVENTS.get(message.status, "error"),
                           id=str(cursor_of(message.content, message.reasoning, message.steps)))
