"""Versions of a turn: regenerate a reply, edit a prompt, choose the version shown."""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs, urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from models import Message, Thread, db
from models.tree import ThreadTree, adopt_linear_thread
from models.uploads import message_uploads

from . import is_htmx, wants_json
from .access import owned_message
from .fragments import FOLLOW_MODES, live_mode
from .limits import limiter, posting_limit
from .messages import (
    TOO_FAST,
    attachments_from_request,
    flag_from_request,
    prompt_from_request,
    start_turn,
    turn_json,
)
from .pages import engine, message_page, message_texts, versions_of
from .uploads import attachment_ids_from_request

bp = Blueprint("versions", __name__)


def owned_version(message_id: int) -> Message:
    """The message if this browser owns its thread (404 otherwise), in a thread that has
    its tree (one written without versions gets it now)."""
    message = owned_message(message_id)
    if g.thread.active_leaf_id is None:
        adopt_linear_thread(db.session, g.thread)
        db.session.commit()
        db.session.refresh(message)
    return message


@bp.post("/messages/<id:message_id>/regenerate")
@limiter.limit(posting_limit, error_message=TOO_FAST)
def message_regenerate(message_id: int):
    """A new version of a reply: a pending reply to the same prompt, made the active one.

    JSON: 201 with the reply and its `stream_url`; htmx: the thread's active path, where the
    new version streams.
    """
    message = owned_version(message_id)
    if message.role != "assistant":
        abort(409, description="Only a reply can be regenerated; edit a prompt instead.")
    if message.parent_id is None:
        abort(409, description="This reply answers no prompt: there is nothing to write it "
                               "from again.")
    thread = g.thread
    # A thread writes one reply at a time, unless the request asks for `parallel=true`.
    _, reply = start_turn(thread, None, under=message.parent_id,
                          parallel=flag_from_request("parallel"))
    if wants_json():
        return jsonify(message=reply.to_json(),
                       stream_url=url_for("stream.message_stream", message_id=reply.id)), 201
    return path_answer(thread)


@bp.post("/messages/<id:message_id>/edit")
@limiter.limit(posting_limit, error_message=TOO_FAST)
def message_edit(message_id: int):
    """A new version of a prompt (field `content`) and its pending reply, made active; the
    turns that followed the old version stay reachable through it.

    JSON: 201 with both messages and the reply's `stream_url`; htmx: the active path.
    """
    message = owned_version(message_id)
    if message.role != "user":
        abort(409, description="Only a prompt can be edited; regenerate a reply instead.")
    prompt = prompt_from_request()
    thread = g.thread
    # The new version carries the files of the one it replaces, unless others are sent.
    files = attachments_from_request(prompt, [engine().models.provider_for(thread.model)[0].id]) \
        if attachment_ids_from_request() is not None else \
        [u.id for u in message_uploads(db.session, [message.id]).get(message.id, [])]
    user, reply = start_turn(thread, prompt, under=message.parent_id, attachments=files,
                             parallel=flag_from_request("parallel"))
    if wants_json():
        return jsonify(turn_json(user, reply)), 201
    return path_answer(thread)


@bp.post("/messages/<id:message_id>/select")
def message_select(message_id: int):
    """Show this version of its turn, and below it the branch where it was last written.

    JSON: the thread's active path (`path`, message ids, oldest first); htmx: the path's
    fragment. Selecting a version already shown changes nothing.
    """
    message = owned_version(message_id)
    thread = g.thread
    tree = ThreadTree.load(db.session, thread)
    if message.id not in tree.path():
        leaf = tree.latest_leaf(message.id)
        thread.active_leaf_id = leaf
        db.session.commit()
        tree = dataclasses.replace(tree, active_leaf_id=leaf)
        # Other tabs and share viewers show the same path at once.
        engine().hub.publish(thread.channel, {"type": "selected", "leaf": leaf})
    if wants_json():
        return jsonify(thread_id=thread.id, active_leaf_id=tree.leaf, path=tree.path())
    return path_answer(thread, tree)


def path_answer(thread: Thread, tree: ThreadTree | None = None):
    """htmx: what the page's #messages holds now (an active reply streams from its offset);
    without JavaScript: back to the thread."""
    if not is_htmx():
        return redirect(url_for("pages.thread_show", thread_id=thread.id), code=303)
    tree = tree or ThreadTree.load(db.session, thread)
    messages, has_more = message_page(thread, tree=tree)
    mode = page_follow_mode()
    return render_template("_active_path.html", thread=thread, messages=messages,
                           texts=message_texts(messages), versions=versions_of(tree, messages),
                           has_more=has_more, readonly=False, follow=mode,
                           live=live_mode(mode, owner=True))


def page_follow_mode() -> str:
    """How the asking page follows replies: its own `?follow=` (htmx sends the page's URL),
    else the FOLLOW_MODE setting."""
    query = parse_qs(urlsplit(request.headers.get("HX-Current-URL", "")).query)
    mode = (query.get("follow") or [None])[0] or current_app.config["FOLLOW_MODE"]
    return mode if mode in FOLLOW_MODES else "auto"
