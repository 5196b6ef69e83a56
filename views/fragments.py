"""How a page follows active replies, and the message fragments every view renders."""

from __future__ import annotations

from flask import current_app, render_template, request
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from models import PENDING, STREAMING, Message, Thread, db
from models.tree import compared_replies, sibling_ids
from streaming.parts import RUNNING, cursor_of

FOLLOW_MODES = ("auto", "ws", "poll")
# A pending reply has not reached the model yet (no generation has claimed it): every tab says
# "connecting" until one has, then "thinking" until the first words.
STATUS_LABELS = {"pending": _l("connecting"), "streaming": _l("writing"), "complete": _l("done"),
                 "error": _l("failed"), "aborted": _l("stopped"),
                 "interrupted": _l("interrupted")}


STEP_LABELS = {"ok": _l("done"), "error": _l("failed"), "aborted": _l("stopped"),
               RUNNING: _l("running")}


def reply_cursor(message: Message, text: str) -> str:
    """The stream cursor of a rendering that shows `text` and the row's reasoning and steps."""
    return str(cursor_of(text, message.reasoning, message.steps))


def reply_stage(message: Message, text: str) -> str | None:
    """What an active reply is doing now, from its persisted state: calling a tool, or
    thinking before its first words (None: what its status says, or not active)."""
    if message.status not in (PENDING, STREAMING):
        return None
    steps = message.steps or ()
    if steps and steps[-1].get("status") == RUNNING:
        name = steps[-1].get("name")
        return gettext("calling %(name)s…", name=name) if name else gettext("calling a tool…")
    if message.status == STREAMING and not text:
        # its reasoning, or the wait for its first words (after a tool too)
        return gettext("thinking")
    return None


def follow_mode() -> str:
    """`?follow=` (auto | ws | poll) or the FOLLOW_MODE setting."""
    mode = request.args.get("follow") or current_app.config["FOLLOW_MODE"]
    return mode if mode in FOLLOW_MODES else "auto"


def live_mode(mode: str, *, owner: bool) -> str | None:
    """How an active reply in a page follows: its own SSE stream, polling, or the websocket."""
    if mode == "poll":
        return "poll"
    if mode == "auto" and owner:
        return "sse"  # the owner's tab streams (and on reload resumes) from the exact offset
    return None


def render_message(message: Message, text: str, *, live: str | None = None, oob: bool = False,
                   readonly: bool = False, versions: dict[int, list[int]] | None = None,
                   **context) -> str:
    """One message's fragment, with its ‹ n / m › versions (read from the database when
    not given)."""
    if versions is None:
        versions = {message.id: sibling_ids(db.session, message)}
    return render_template("_message.html", message=message, text=text, live=live, oob=oob,
                           readonly=readonly, versions=versions, **context)


def render_new_messages_oob(thread: Thread, messages: list[Message], texts: dict[int, str],
                            *, readonly: bool, versions: dict[int, list[int]],
                            **context) -> str:
    """Messages a websocket follower has not seen, appended to its list."""
    return render_template("_messages_oob.html", thread=thread, messages=messages, texts=texts,
                           readonly=readonly, live=None, has_more=False, follow="ws",
                           versions=versions, **context)


def render_path_oob(thread: Thread, messages: list[Message], texts: dict[int, str], *,
                    has_more: bool, readonly: bool, versions: dict[int, list[int]],
                    **context) -> str:
    """The thread's active path replacing a websocket follower's list: another version of a
    turn was made active (the page keeps its own list when it already shows that path)."""
    return render_template("_active_path_oob.html", thread=thread, messages=messages,
                           texts=texts, readonly=readonly, live=None, has_more=has_more,
                           follow="ws", versions=versions, **context)


def compared_versions(message: Message) -> list[tuple[Message, str]]:
    """The replies shown side by side with `message` (itself included) with their freshest
    text, when it ends its path as one of a comparison; [] otherwise. (Templates call it
    for the last message of a path.)"""
    ids = compared_replies(db.session, message.id) if message.role == "assistant" else []
    if not ids:
        return []
    relay = current_app.extensions["relay"]
    replies = db.session.scalars(select(Message).where(Message.id.in_(ids)).order_by(Message.id))
    return [(reply, relay.current_text(reply, db.session)) for reply in replies]
