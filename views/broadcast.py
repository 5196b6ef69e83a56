"""One prompt to several threads at once: each thread gets its own turn and streaming reply."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request, url_for
from werkzeug.exceptions import BadRequest, HTTPException

from models import Thread, db

from .access import current_owner
from .api import model_arg
from .limits import limiter, posting_limit
from .messages import (
    TOO_FAST,
    flag_from_request,
    model_from_request,
    prompt_from_request,
    start_turn,
)

bp = Blueprint("broadcast", __name__)

MAX_THREADS = 20
NOT_FOUND = "No such thread."


def thread_ids_from_request() -> list[int]:
    """The posted `thread_ids` (a JSON list or repeated form field), or a 400 saying what is
    wrong with them."""
    if request.is_json:
        body = request.get_json(silent=True)
        raw = body.get("thread_ids") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            abort(400, description="Send 'thread_ids', a list of thread ids.")
    else:
        raw = request.form.getlist("thread_ids")
    ids = []
    for value in raw:
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**63:
            abort(400, description="Each of 'thread_ids' must be a thread id (a positive "
                                   "whole number).")
        if value in ids:
            abort(400, description=f"Thread {value} is named twice in 'thread_ids'.")
        ids.append(value)
    if not ids:
        abort(400, description="Name at least one thread in 'thread_ids'.")
    if len(ids) > MAX_THREADS:
        abort(400, description=f"{len(ids)} threads named; a prompt goes to at most "
                               f"{MAX_THREADS} at once.")
    return ids


def prompts_asked() -> int:
    """What a broadcast counts against the posting limit: a prompt per thread named."""
    try:
        body = request.get_json(silent=True) if request.is_json else None
        raw = body.get("thread_ids") if isinstance(body, dict) else request.form.getlist(
            "thread_ids")
    except BadRequest:
        return 1  # a body refused as it is read (see pages._has_prompt): the view says why
    return min(max(len(raw) if isinstance(raw, list) else 1, 1), MAX_THREADS)


@bp.post("/threads/broadcast")
@limiter.limit(posting_limit, error_message=TOO_FAST, cost=prompts_asked)
def thread_broadcast():
    """Send one prompt (`content`, optional `model`) to each of `thread_ids`.

    Each thread that can take it gets the prompt and a pending reply, as if sent on its own
    page; JSON 200 `{started: [{thread_id, user_message, assistant_message, stream_url}],
    failed: [{thread_id, error}]}`. A thread still writing a reply fails unless
    `parallel=true`; one that is not this browser's is "not found".
    """
    prompt = prompt_from_request()
    thread_ids = thread_ids_from_request()
    asked = (request.get_json(silent=True) or {}).get("model") if request.is_json \
        else request.form.get("model")
    model_arg(asked)  # an unknown model: a 400 before any thread is touched
    parallel = flag_from_request("parallel")
    owner = current_owner()
    started, failed = [], []
    for thread_id in thread_ids:
        thread = db.session.get(Thread, thread_id)
        if thread is None or thread.owner != owner:
            failed.append({"thread_id": thread_id, "error": NOT_FOUND})
            continue
        try:
            model = model_from_request(thread)
            user, reply = start_turn(thread, prompt, model, parallel=parallel)
        except HTTPException as refused:  # this thread only: the others still get it
            db.session.rollback()
            failed.append({"thread_id": thread_id, "error": refused.description})
            continue
        started.append({"thread_id": thread_id, "user_message": user.to_json(),
                        "assistant_message": reply.to_json(),
                        "stream_url": url_for("stream.message_stream", message_id=reply.id)})
    return jsonify(started=started, failed=failed)
