"""Messages: post a prompt, read one message (poll-swap target), stop a reply."""

from __future__ import annotations

import re
from collections.abc import Sequence

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from models import (
    ABORTED,
    ACTIVE_STATUSES,
    DEFAULT_TITLE,
    ERROR,
    INTERRUPTED,
    PENDING,
    STREAMING,
    Message,
    Thread,
    db,
    utcnow,
)
from models.text import is_blank
from models.tree import adopt_linear_thread
from models.uploads import MessageUpload
from streaming.parts import cursor_of

from . import is_htmx, wants_json
from .access import is_owner, owned_message, owned_thread, readable_message
from .api import compared_models_arg, model_arg
from .fragments import render_message
from .i18n import N_
from .limits import limiter, posting_limit
from .pages import engine, polled
from .uploads import attachment_ids_from_request, check_fits, owned_uploads
from .usage import render_thread_cost

bp = Blueprint("messages", __name__)

TITLE_CHARS = 80
TOO_FAST = "You are sending messages too fast; wait a moment and try again."
STILL_WRITING = ("A reply is still being written in this thread. Stop it or wait for it to "
                 "finish, then send your message.")
TRUE_WORDS = ("true", "1", "on", "yes")


def prompt_from_request() -> str:
    """The posted prompt, or a 400 that says what is wrong with it."""
    if request.is_json:
        body = request.get_json(silent=True)
        content = body.get("content") if isinstance(body, dict) else None
    else:
        content = request.form.get("content")
    if not isinstance(content, str) or is_blank(content):
        abort(400, description=N_("Write a message first: 'content' is empty."))
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): not storable text
        abort(400, description="'content' is not valid Unicode text.")
    content = content.replace("\r\n", "\n")
    limit = current_app.config["MAX_PROMPT_CHARS"]
    if len(content) > limit:
        abort(413, description=f"The message is {len(content)} characters long; "
                               f"the limit is {limit}.")
    return content


def model_from_request(thread: Thread) -> str:
    """The id of the model for this prompt: the one asked for (remembered as the thread's
    choice), else the thread's, else the default; a 400 naming the choices for an unknown one."""
    if request.is_json:
        body = request.get_json(silent=True)
        asked = body.get("model") if isinstance(body, dict) else None
    else:
        asked = request.form.get("model")
    models = engine().models
    choice = model_arg(asked)
    if choice is not None:
        thread.model = choice.id
        return choice.id
    remembered = models.get(thread.model)
    return (remembered or models.default).id


def compared_models_from_request(thread: Thread, model: str) -> list[str]:
    """The models that answer this prompt: `[model]`, or a comparison of several: `models`
    (all of them, the first shown), or `model` and the ones in `compare`. Repeated form
    fields or JSON lists; a 400 for unknown, repeated, too few or too many models."""
    if request.is_json:
        body = request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        given = {name: body.get(name) for name in ("models", "compare")}
        given = {name: [value] if isinstance(value, str) else value
                 for name, value in given.items() if value not in (None, "", [])}
        if any(not isinstance(value, list) for value in given.values()):
            abort(400, description="'models' and 'compare' are lists of model ids.")
    else:
        given = {name: [v for v in request.form.getlist(name) if v]
                 for name in ("models", "compare")}
        given = {name: value for name, value in given.items() if value}
    if not given:
        return [model]
    if "models" in given and "compare" in given:
        abort(400, description="Send either 'models' (all of them) or 'compare' (the models "
                               "besides 'model'), not both.")
    if "models" in given:
        choices = compared_models_arg(given["models"])
        thread.model = choices[0].id  # the first is shown, and the thread's choice from now
    else:
        choices = compared_models_arg([model, *given["compare"]])
    return [choice.id for choice in choices]


def attachments_from_request(prompt: str, models: Sequence[str]) -> list[int]:
    """The ids of the person's uploads the prompt carries (`attachments`), checked against
    each answering model; a 400 or 413 that says what is wrong, and nothing stored."""
    ids = attachment_ids_from_request()
    if not ids:
        return []
    uploads = owned_uploads(ids)
    for model in models:
        check_fits(uploads, prompt, engine().models.provider_for(model)[0])
    return ids


def title_from(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 1].rstrip() + "…"


def flag_from_request(name: str) -> bool:
    """A yes/no field of the form or JSON body: true only when the client says so."""
    if request.is_json:
        body = request.get_json(silent=True)
        value = body.get(name) if isinstance(body, dict) else None
        if isinstance(value, bool):
            return value
    else:
        value = request.form.get(name)
    return isinstance(value, str) and value.strip().lower() in TRUE_WORDS


def active_reply_id(thread: Thread) -> int | None:
    """The id of the thread's reply that is pending or streaming, if any."""
    return db.session.scalar(
        select(Message.id).where(Message.thread_id == thread.id, Message.role == "assistant",
                                 Message.status.in_(ACTIVE_STATUSES))
        .order_by(Message.id.desc()).limit(1))


_END = object()  # start_turn: at the end of the thread's active path


def start_turn(thread: Thread, prompt: str | None, model: str | None = None,
               compare_with: Sequence[str] = (),
               attachments: Sequence[int] = (), *,
               parallel: bool = False, under=_END,
               request_key: str | None = None) -> tuple[Message | None, Message]:
    """Store the prompt and its pending reply (by `model`) at the end of the thread's active
    path, or `under` a message of its tree (a new version: edit, regenerate); a tab (or
    this worker) will start the reply. `prompt` None: a reply only. `compare_with`,
    `attachments`: see add_turn. `request_key`: the request's Idempotency-Key, kept with
    the prompt (a second prompt with the same key in the thread is an IntegrityError).

    Unless `parallel`, a 409 while a reply of the thread is pending or streaming: looked at
    again after losing a race, so two prompts sent at once (a retried request beside its
    first try) give one reply and a 409, not two replies side by side.
    """
    for _ in range(LEAF_RACE_RETRIES):
        if not parallel and active_reply_id(thread) is not None:
            db.session.rollback()  # a refused prompt changes nothing, its model choice included
            abort(409, description=STILL_WRITING)
        adopt_linear_thread(db.session, thread)
        leaf = thread.active_leaf_id
        turn = add_turn(thread, leaf if under is _END else under, prompt, model=model,
                        follows=leaf, compare_with=compare_with, attachments=attachments,
                        request_key=request_key)
        if turn is not None:
            return turn
        db.session.refresh(thread)  # another prompt moved the path's end: look again
    abort(409, description=N_("The thread changed while your message was sent; send it again."))


LEAF_RACE_RETRIES = 3
_ANY = object()


def add_turn(thread: Thread, parent_id: int | None, prompt: str | None, *,
             model: str | None = None, follows=_ANY, compare_with: Sequence[str] = (),
             attachments: Sequence[int] = (),
             request_key: str | None = None) -> tuple[Message | None, Message] | None:
    """Store a pending reply under `parent_id` (after a new prompt when `prompt` is given)
    and make it the thread's active leaf; the reply starts like any other. Its model is
    `model`, else the one the request asks for or the thread's (model_from_request).

    With `follows`, the leaf moves only if it still is `follows` (two prompts sent at once
    must not both follow the same message): None, and nothing stored, when it is not.

    `compare_with`: other models that answer too, each in a sibling reply stored in the same
    transaction (a comparison, models.tree.compared_replies); the first reply is the active one.

    `attachments`: ids of uploads (already checked as the person's) the prompt carries, linked
    in the same transaction.
    """
    if engine().admission.full():
        # Every slot busy and a long queue already: say so now rather than keep the
        # prompt waiting for minutes (nothing is created).
        raise ServiceUnavailable(description="Relay is at capacity right now; try again in a "
                                             "few seconds.", retry_after=5)
    model = model or model_from_request(thread)  # an unknown one: a 400, nothing stored
    now = utcnow()
    user = None
    if prompt is not None:
        user = Message(thread_id=thread.id, parent_id=parent_id, role="user", content=prompt,
                       status="complete", created_at=now, request_key=request_key)
        db.session.add(user)
        db.session.flush()
        db.session.add_all(MessageUpload(message_id=user.id, upload_id=upload_id,
                                         position=position)
                           for position, upload_id in enumerate(attachments))
        parent_id = user.id
    reply = Message(thread_id=thread.id, parent_id=parent_id, role="assistant", content="",
                    status=PENDING, model=model, created_at=now)
    db.session.add(reply)
    others = [Message(thread_id=thread.id, parent_id=parent_id, role="assistant", content="",
                      status=PENDING, model=other, created_at=now) for other in compare_with]
    db.session.add_all(others)  # after `reply`: their ids are higher
    db.session.flush()
    moved = update(Thread).where(Thread.id == thread.id)
    if follows is not _ANY:
        moved = moved.where(Thread.active_leaf_id.is_(None) if follows is None
                            else Thread.active_leaf_id == follows)
    changes = {"active_leaf_id": reply.id, "updated_at": now}
    if prompt is not None and not thread.title_chosen and thread.title == DEFAULT_TITLE:
        changes["title"] = title_from(prompt)  # named by its first prompt, unless a person did
    # One statement moves the leaf and updates the thread; the session's copy is told, not
    # searched (no ORM synchronisation on a path every prompt takes).
    if db.session.execute(moved.values(**changes)
                          .execution_options(synchronize_session=False)).rowcount != 1:
        db.session.rollback()
        return None
    for name, value in changes.items():
        set_committed_value(thread, name, value)
    db.session.commit()
    # No tab may ever claim it (no JavaScript, closed tab): then this worker runs it.
    engine().schedule_headless(reply.id)
    for other in others:
        engine().schedule_headless(other.id)
    # Other tabs and followers of this thread learn of the new messages right away.
    created = [user.id, reply.id] if user is not None else [reply.id]
    created += [other.id for other in others]
    engine().hub.publish(thread.channel, {"type": "created", "messages": created})
    return user, reply


def turn_json(user: Message, reply: Message, text: str | None = None) -> dict:
    """A turn as the API answers it; `text`: the reply's text so far, if it has any."""
    user_json, reply_json = user.to_json(), reply.to_json(text)
    return {"messages": [user_json, reply_json], "user_message": user_json,
            "assistant_message": reply_json,
            "stream_url": url_for("stream.message_stream", message_id=reply.id)}


@bp.post("/threads/<id:thread_id>/messages")
@limiter.limit(posting_limit, error_message=TOO_FAST)
def message_create(thread_id: int):
    """Post a prompt: the user's message and a pending reply, which a tab (or we) will start.

    While a reply of the thread is pending or streaming, a new prompt is a 409 unless the
    request asks for a parallel reply (`parallel=true`). `model` (optional) picks the model
    and becomes the thread's choice for the prompts after it.
    """
    thread = owned_thread(thread_id)
    key = request_key_from_request()
    if key is not None and (earlier := keyed_turn(thread, key)) is not None:
        return turn_answer(thread, *earlier, replayed=True)  # stored the first time
    prompt = prompt_from_request()
    model = model_from_request(thread)
    models = compared_models_from_request(thread, model)
    try:
        files = attachments_from_request(prompt, models)
    except HTTPException:
        db.session.rollback()  # nothing of a refused prompt is kept, its model choice included
        raise
    try:
        user, reply = start_turn(thread, prompt, models[0], compare_with=models[1:],
                                 attachments=files, parallel=flag_from_request("parallel"),
                                 request_key=key)
    except IntegrityError:
        # The same key twice at once: the other request stored the prompt first.
        db.session.rollback()
        earlier = keyed_turn(thread, key) if key is not None else None
        if earlier is None:
            raise
        return turn_answer(thread, *earlier, replayed=True)
    return turn_answer(thread, user, turn_replies(user) if len(models) > 1 else [reply],
                       replayed=False)


REQUEST_KEY = re.compile(r"[\x21-\x7e]{1,64}")


def request_key_from_request() -> str | None:
    """The request's `Idempotency-Key` header, if any: 1 to 64 visible ASCII characters (a
    UUID, say). A client that may send a prompt twice (a retry after a timeout, while the
    first try may still be served) sends the same key both times, and the prompt is stored
    once; the second answer is the first one's turn, marked `Idempotent-Replayed: true`."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    if not REQUEST_KEY.fullmatch(raw):
        abort(400, description=N_("'Idempotency-Key' must be 1 to 64 visible ASCII characters."))
    return raw


def keyed_turn(thread: Thread, key: str) -> tuple[Message, list[Message]] | None:
    """The prompt stored in `thread` with this Idempotency-Key, and the replies of its turn."""
    user = db.session.scalar(select(Message).where(
        Message.thread_id == thread.id, Message.role == "user", Message.request_key == key))
    return None if user is None else (user, turn_replies(user))


def turn_replies(user: Message) -> list[Message]:
    """The replies stored with a prompt (one, or one per compared model), oldest first: not
    the versions regenerated since."""
    return list(db.session.scalars(select(Message).where(
        Message.parent_id == user.id, Message.role == "assistant",
        Message.created_at == user.created_at).order_by(Message.id)))


def turn_answer(thread: Thread, user: Message, replies: list[Message], *, replayed: bool):
    """The answer to a stored prompt: JSON (201), the new messages' fragments (htmx), or a
    redirect to the thread."""
    reply = replies[0]
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    if wants_json():
        text = engine().current_text(reply, db.session) if replayed else None
        body = turn_json(user, reply, text)
        if len(replies) > 1:
            body["assistant_messages"] = [
                {**m.to_json(), "stream_url": url_for("stream.message_stream", message_id=m.id)}
                for m in replies]
        return jsonify(body), 201, headers
    if is_htmx():
        html = render_template("_messages.html", thread=thread, messages=[user, reply],
                               texts={user.id: user.content, reply.id: ""}, live="sse",
                               has_more=False, readonly=False, follow="auto",
                               compare_grid=len(replies) > 1)
        # The title (from the first prompt) and the sidebar entry change too.
        return html + render_template("_thread_changed.html", thread=thread,
                                      readonly=False), headers
    return redirect(url_for("pages.thread_show", thread_id=thread.id), code=303)


@bp.get("/messages/<id:message_id>")
def message_show(message_id: int):
    """One message: JSON, or its fragment (which polls itself while the reply is active)."""
    message = readable_message(message_id)
    text = engine().current_text(message, db.session)
    if wants_json():
        return jsonify(message.to_json(text))
    # A fragment asked for by URL is a poll-swap target: it keeps polling while active.
    if message.is_active:
        polled(message.thread_id)
    html = render_message(message, text, live="poll", readonly=not is_owner(message.thread))
    if message.role == "assistant":  # and the thread's running total with it
        html += render_thread_cost(message.thread, oob=True)
    return html


@bp.post("/messages/<id:message_id>/cancel")
def message_cancel(message_id: int):
    """Stop a reply: it ends `aborted` with its text so far kept."""
    message = owned_message(message_id)
    if message.role != "assistant":
        abort(400, description="Only a reply can be stopped.")
    if message.is_active:
        generation = engine().cancel(message.id)
        if generation is not None:
            # Answer with the stopped state, not a reply that still looks alive; hold no
            # connection while waiting (the writer may need one to save that state).
            db.session.close()
            generation.finalized.wait(current_app.config["CANCEL_WAIT_S"])
            message = owned_message(message_id)
        else:
            _stop_elsewhere(message)
            message = owned_message(message_id)
    if wants_json():
        return jsonify(message.to_json(engine().current_text(message, db.session))), 202
    if is_htmx():
        return render_message(message, engine().current_text(message, db.session),
                              live="sse")
    return redirect(url_for("pages.thread_show", thread_id=message.thread_id), code=303)


def _stop_elsewhere(message: Message) -> None:
    """Stop a reply this worker is not generating, and wait briefly for its stopped state.

    A pending reply ends now. A streaming one is stopped by the worker or host that runs
    it: the hub brings it the request at once; the database flag, read at every flush, is
    the fallback when the hub is away.
    """
    relay = engine()
    with relay.hub.subscribe(message.thread.channel) as subscription:
        if db.session.execute(update(Message).where(Message.id == message.id,
                                                    Message.status == PENDING)
                              .values(status=ABORTED, updated_at=utcnow())).rowcount:
            current_app.extensions["relay_metrics"].reply_ended(ABORTED, "stopped")
        streaming = db.session.execute(update(Message).where(Message.id == message.id,
                                                             Message.status == STREAMING)
                                       .values(cancel_requested=True)).rowcount
        db.session.commit()
        db.session.expire(message)  # the bulk UPDATEs above changed it
        if not streaming:
            return
        relay.request_stop(message)
        db.session.close()  # hold no connection while the other worker saves the reply
        relay.wait_for_end(subscription, message.id, current_app.config["CANCEL_WAIT_S"])


def stop_reply(message: Message) -> None:
    """Stop a pending or streaming reply wherever it runs; wait briefly for its end."""
    generation = engine().cancel(message.id)
    if generation is not None:
        db.session.close()  # the writer may need a connection to save the stopped state
        generation.finalized.wait(current_app.config["CANCEL_WAIT_S"])
    else:
        _stop_elsewhere(message)


RESUMABLE = (ERROR, ABORTED, INTERRUPTED)


@bp.post("/messages/<id:message_id>/continue")
@bp.post("/messages/<id:message_id>/retry")
@limiter.limit(posting_limit, error_message=TOO_FAST)
def message_continue(message_id: int):
    """Generate the rest of a stopped, failed or interrupted reply into the same message.

    Its text so far stays; new text goes on from that offset, so followers and resumed
    streams stay exact. A failed reply with no text is simply tried again.
    """
    message = owned_message(message_id)
    if message.role != "assistant" or message.status not in RESUMABLE:
        abort(409, description=N_("Only a stopped, failed or interrupted reply can be continued."))
    result = db.session.execute(
        update(Message).where(Message.id == message.id, Message.status == message.status)
        .values(status=PENDING, error=None, cancel_requested=False, updated_at=utcnow()))
    db.session.commit()
    if result.rowcount != 1:
        abort(409, description=N_("This reply changed meanwhile; reload to see its state."))
    db.session.refresh(message)
    engine().schedule_headless(message.id)
    engine().hub.publish(message.thread.channel, {"type": "continued", "message": message.id,
                                                  "end": len(message.content)})
    # Where the reply stands in each of its parts: text, reasoning, steps (streaming.parts).
    stream_url = url_for("stream.message_stream", message_id=message.id,
                         after=str(cursor_of(message.content, message.reasoning, message.steps)))
    if wants_json():
        return jsonify(message=message.to_json(), stream_url=stream_url), 202
    if is_htmx():
        return render_message(message, message.content, live="sse")
    return redirect(url_for("pages.thread_show", thread_id=message.thread_id), code=303)
