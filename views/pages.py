"""Pages: the thread list, creating a thread, a thread with its messages."""

from __future__ import annotations

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
from sqlalchemy import select

from models import Message, Thread, db, utcnow

from . import IdConverter, is_htmx, wants_json
from .access import current_owner, grant_share, is_owner, owned_thread, readable_thread
from .fragments import follow_mode, live_mode

bp = Blueprint("pages", __name__)


def owner_threads(limit: int = 50) -> list[Thread]:
    return list(db.session.scalars(
        select(Thread).where(Thread.owner == current_owner())
        .order_by(Thread.updated_at.desc(), Thread.id.desc()).limit(limit)))


def message_page(thread: Thread, before: int | None = None) -> tuple[list[Message], bool]:
    """The newest page of messages (oldest first), older than `before`; and whether more exist."""
    size = current_app.config["PAGE_SIZE"]
    query = select(Message).where(Message.thread_id == thread.id)
    if before is not None:
        query = query.where(Message.id < before)
    rows = list(db.session.scalars(query.order_by(Message.id.desc()).limit(size + 1)))
    return list(reversed(rows[:size])), len(rows) > size


def engine():
    return current_app.extensions["relay"]


def thread_json(thread: Thread) -> dict:
    return {"id": thread.id, "title": thread.title, "url": url_for("pages.thread_show",
                                                                   thread_id=thread.id),
            "created_at": thread.created_at.isoformat() + "Z",
            "updated_at": thread.updated_at.isoformat() + "Z"}


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico whatever the page links; answer with the SVG icon."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)


@bp.get("/")
def thread_index():
    """The thread list with the new-thread button."""
    threads = owner_threads()
    if wants_json():
        return jsonify(threads=[thread_json(t) for t in threads])
    return render_template("index.html", threads=threads)


@bp.post("/threads")
def thread_create():
    """Create a thread and go to it."""
    thread = Thread(owner=current_owner(), created_at=utcnow(), updated_at=utcnow())
    db.session.add(thread)
    db.session.commit()
    url = url_for("pages.thread_show", thread_id=thread.id)
    if wants_json():
        return jsonify(thread=thread_json(thread)), 201, {"Location": url}
    if is_htmx():
        return "", 204, {"HX-Redirect": url}
    return redirect(url, code=303)


def render_thread(thread: Thread, *, readonly: bool):
    """A thread page (or its fragment, or JSON) for its owner or a share-link viewer."""
    messages, has_more = message_page(thread)
    texts = message_texts(messages)
    if wants_json():
        return jsonify(thread=thread_json(thread),
                       messages=[m.to_json(texts[m.id]) for m in messages], has_more=has_more)
    mode = follow_mode()
    template = "_thread.html" if is_htmx() else "thread.html"
    return render_template(template, thread=thread, messages=messages, texts=texts,
                           has_more=has_more, readonly=readonly, follow=mode,
                           live=live_mode(mode, owner=not readonly),
                           ws_url=url_for("sockets.thread_socket", thread_id=thread.id),
                           threads=[] if readonly else owner_threads())


@bp.get("/threads/<id:thread_id>")
def thread_show(thread_id: int):
    """A thread: its newest messages and the composer."""
    return render_thread(owned_thread(thread_id), readonly=False)


@bp.post("/threads/<id:thread_id>/share")
def share_create(thread_id: int):
    """Create the thread's read-only share link (once; the same link afterwards)."""
    thread = owned_thread(thread_id)
    if not thread.share_token:
        thread.share_token = Thread.new_share_token()
        db.session.commit()
    url = url_for("pages.share_show", token=thread.share_token, _external=True)
    if wants_json():
        return jsonify(share_url=url), 201
    if is_htmx():
        return render_template("_share.html", thread=thread)
    return redirect(url_for("pages.thread_show", thread_id=thread.id), code=303)


@bp.get("/s/<token>")
def share_show(token: str):
    """A shared thread, read-only: anyone with the link follows it live."""
    thread = db.session.scalar(select(Thread).where(Thread.share_token == token)) \
        if 16 <= len(token) <= 64 else None
    if thread is None:
        abort(404, description="This share link does not exist (any more).")
    if is_owner(thread):
        return redirect(url_for("pages.thread_show", thread_id=thread.id))
    grant_share(thread)
    return render_thread(thread, readonly=True)


@bp.get("/threads/<id:thread_id>/messages")
def thread_messages(thread_id: int):
    """Older messages of a thread, for loading as the reader scrolls up."""
    thread = readable_thread(thread_id)
    raw = request.args.get("before")
    before = None
    if raw is not None:
        if not IdConverter.matches(raw):
            abort(400, description="'before' must be a message id (a positive whole number).")
        before = int(raw)
    messages, has_more = message_page(thread, before)
    texts = message_texts(messages)
    if wants_json():
        return jsonify(messages=[m.to_json(texts[m.id]) for m in messages], has_more=has_more)
    mode = follow_mode()
    readonly = not is_owner(thread)
    return render_template("_messages.html", thread=thread, messages=messages, texts=texts,
                           has_more=has_more, readonly=readonly, follow=mode,
                           live=live_mode(mode, owner=not readonly))


def message_texts(messages: list[Message]) -> dict[int, str]:
    """The freshest text of each message (a streaming reply's persisted or live text)."""
    return {m.id: engine().current_text(m, db.session) for m in messages}
