"""Threads to manage: rename, delete, export and import, and the sidebar's pages."""

from __future__ import annotations

import datetime as dt
import json
import re
from urllib.parse import quote, urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import delete, select

from models import (
    ACTIVE_STATUSES,
    TITLE_MAX_CHARS,
    Message,
    StreamDelta,
    Thread,
    db,
    thread_channel,
)
from models.archive import (
    ArchiveError,
    attachment_records,
    import_thread,
    thread_json,
    thread_markdown,
)
from models.text import one_line_name
from models.tree import ThreadTree
from models.uploads import MessageUpload, message_uploads, remove_unused

from . import is_htmx, wants_json
from .access import current_owner, owned_thread
from .body_limit import body_limit
from .messages import stop_reply
from .pages import engine, message_texts, owner_threads
from .pages import thread_json as thread_summary

bp = Blueprint("threads", __name__)

EXPORT_FORMATS = ("md", "json")


# -- rename ------------------------------------------------------------------------------
def title_from_request() -> str:
    """The posted `title`, trimmed; or a 400 that says what is wrong with it."""
    if request.is_json:
        body = request.get_json(silent=True)
        title = body.get("title") if isinstance(body, dict) else None
    else:
        title = request.form.get("title")
    try:
        return one_line_name(title, field="title", what="A thread's title",
                             limit=TITLE_MAX_CHARS)
    except ValueError as err:
        abort(400, description=str(err))


@bp.post("/threads/<id:thread_id>/rename")
def thread_rename(thread_id: int):
    """Rename a thread; from now on the automatic title leaves it alone. JSON: the thread."""
    thread = owned_thread(thread_id)
    thread.title = title_from_request()
    thread.title_chosen = True
    db.session.commit()
    engine().hub.publish(thread.channel, {"type": "renamed", "thread": thread.id})
    if wants_json():
        return jsonify(thread=thread_summary(thread))
    if is_htmx():
        return _renamed_fragments(thread)
    return redirect(url_for("pages.thread_show", thread_id=thread.id), code=303)


def _renamed_fragments(thread: Thread) -> str:
    """The swap target the form named (the heading or the sidebar entry), and the other
    one out of band where this page shows it."""
    on_its_page = _current_path() == url_for("pages.thread_show", thread_id=thread.id)
    if request.headers.get("HX-Target") == "thread-title":
        return render_template("_thread_title.html", thread=thread) + render_template(
            "_sidebar_entry_oob.html", t=thread, thread=thread)
    html = render_template("_thread_link.html", t=thread, thread=thread if on_its_page else None)
    if on_its_page:
        html += render_template("_thread_title.html", thread=thread, oob=True)
    return html


def _current_path() -> str:
    return urlsplit(request.headers.get("HX-Current-URL", "")).path


# -- delete ------------------------------------------------------------------------------
@bp.delete("/threads/<id:thread_id>", endpoint="thread_destroy")
@bp.post("/threads/<id:thread_id>/delete")
def thread_delete(thread_id: int):
    """Delete a thread with its messages, their deltas and its share link; replies still
    running are stopped first. JSON: 200 `{deleted: id}`; a plain DELETE: 204."""
    thread = owned_thread(thread_id)
    remove_threads([thread])
    if wants_json():
        return jsonify(deleted=thread_id)
    if is_htmx():
        if _current_path() == url_for("pages.thread_show", thread_id=thread_id):
            return "", 204, {"HX-Redirect": url_for("pages.thread_index")}
        # Deleted from the sidebar of another page: only its entry goes.
        return render_template("_sidebar_entry_gone.html", thread_id=thread_id)
    if request.method == "DELETE":
        return "", 204
    return redirect(url_for("pages.thread_index"), code=303)


def remove_threads(threads: list[Thread]) -> None:
    """Delete these threads with their messages, deltas and share links, committed; replies
    still running are stopped first. Their followers are told."""
    ids = [thread.id for thread in threads]
    if not ids:
        return
    for message in list(db.session.scalars(
            select(Message).where(Message.thread_id.in_(ids),
                                  Message.status.in_(ACTIVE_STATUSES)))):
        stop_reply(message)
    # Explicit deletes, children first: the same on every database, whatever its settings.
    messages = select(Message.id).where(Message.thread_id.in_(ids)).scalar_subquery()
    db.session.execute(delete(StreamDelta).where(StreamDelta.message_id.in_(messages)))
    # Their files go too, unless another message (of any thread) still carries them.
    uploads = list(db.session.scalars(select(MessageUpload.upload_id).distinct()
                                      .where(MessageUpload.message_id.in_(messages))))
    db.session.execute(delete(MessageUpload).where(MessageUpload.message_id.in_(messages)))
    db.session.execute(delete(Message).where(Message.thread_id.in_(ids)))
    db.session.execute(delete(Thread).where(Thread.id.in_(ids)))
    remove_unused(db.session, uploads)
    db.session.commit()
    for thread_id in ids:
        engine().hub.publish(thread_channel(thread_id), {"type": "deleted", "thread": thread_id})


# -- export and import ---------------------------------------------------------------------
@bp.get("/threads/<id:thread_id>/export")
def thread_export(thread_id: int):
    """The thread as a download: `format=md` (the conversation, to read) or `format=json`
    (everything needed to import it again)."""
    thread = owned_thread(thread_id)
    kind = request.args.get("format", "md")
    if kind not in EXPORT_FORMATS:
        abort(400, description="'format' must be md or json.")
    messages = list(db.session.scalars(
        select(Message).where(Message.thread_id == thread.id).order_by(Message.id)))
    texts = message_texts(messages)
    if kind == "json":
        files = attachment_records(db.session, messages)
        body = json.dumps(thread_json(thread, messages, texts, files), ensure_ascii=False,
                          indent=2)
        mimetype = "application/json"
    else:
        names = {i: [{k: f[k] for k in ("name", "type", "size")} for f in found]
                 for i, found in message_uploads_json(messages).items()}
        body = thread_markdown(thread, shown_path(thread, messages), texts, names)
        mimetype = "text/markdown"
    response = make_response(body)
    response.mimetype = mimetype
    response.headers["Content-Disposition"] = _attachment(thread, kind)
    return response


def message_uploads_json(messages: list[Message]) -> dict[int, list[dict]]:
    found = message_uploads(db.session, [m.id for m in messages if m.role == "user"])
    return {i: [u.to_json() for u in uploads] for i, uploads in found.items()}


def shown_path(thread: Thread, messages: list[Message]) -> list[Message]:
    """The messages the thread page shows (its active path), oldest first."""
    by_id = {m.id: m for m in messages}
    return [by_id[i] for i in ThreadTree.load(db.session, thread).path() if i in by_id]


def _attachment(thread: Thread, extension: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", thread.title).strip("-")[:60].lower() or "thread"
    name = f"relay-{thread.id}-{slug}.{extension}"
    return f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(name)}"


@bp.post("/threads/import")
@body_limit("MAX_IMPORT_BYTES")
def thread_import():
    """Rebuild a thread from a JSON export (multipart field `file`, or the JSON body) for
    this browser; 201 with the thread, or 400 naming what is wrong with the file."""
    request.max_content_length = current_app.config["MAX_IMPORT_BYTES"]
    upload = request.files.get("file")
    raw = upload.read() if upload is not None else request.get_data(cache=False)
    if not raw:
        abort(400, description="Choose a Relay JSON export to import.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        abort(400, description="The file is not valid UTF-8.")
    except RecursionError:
        abort(400, description="The file's JSON is nested too deeply.")
    except ValueError:
        abort(400, description="The file is not valid JSON.")
    try:
        thread, messages = import_thread(data, current_owner())
    except ArchiveError as err:
        db.session.rollback()
        abort(400, description=str(err))
    db.session.commit()
    url = url_for("pages.thread_show", thread_id=thread.id)
    if wants_json():
        return jsonify(thread=thread_summary(thread), messages=len(messages)), 201, \
            {"Location": url}
    if is_htmx():
        return "", 204, {"HX-Redirect": url}
    return redirect(url, code=303)


# -- the sidebar, page by page -------------------------------------------------------------
EPOCH = dt.datetime(1970, 1, 1)
CURSOR = re.compile(r"([0-9]{1,17})-([1-9][0-9]{0,17})")


def cursor_of(thread: Thread) -> str:
    """Where the sidebar's next page starts: after `thread` (newest first)."""
    return f"{(thread.updated_at - EPOCH) // dt.timedelta(microseconds=1)}-{thread.id}"


def cursor_arg() -> tuple[dt.datetime, int] | None:
    """The `before` cursor of the query string, or a 400 that says what is wrong with it."""
    raw = request.args.get("before")
    if raw is None:
        return None
    match = CURSOR.fullmatch(raw)
    if not match:
        abort(400, description="'before' must be a cursor from a previous page.")
    return EPOCH + dt.timedelta(microseconds=int(match[1])), int(match[2])


def sidebar_page(before: tuple[dt.datetime, int] | None = None, *,
                 unfiled: bool = True) -> tuple[list[Thread], str | None]:
    """One page of the sidebar's unpinned threads with messages (newest first; `unfiled`:
    those in no folder) and the next cursor. The pinned ones come whole, before the first
    page (organise.sidebar_context)."""
    size = current_app.config["SIDEBAR_PAGE_SIZE"]
    rows = owner_threads(size + 1, with_empty=False, before=before, pinned=False,
                         unfiled=unfiled)
    return rows[:size], cursor_of(rows[size - 1]) if len(rows) > size else None


@bp.get("/threads/list")
def thread_list():
    """The owner's listed threads (not archived, not temporary), a page at a time (`before`
    = the previous page's cursor); the first page starts with every pinned thread.

    JSON: `{threads, next}`; htmx: the sidebar entries and the sentinel that loads more.
    """
    from .organise import pinned_threads

    before = cursor_arg()
    if wants_json():
        threads, next_cursor = sidebar_page(before, unfiled=False)
        pinned = pinned_threads(unfiled=False) if before is None else []
        return jsonify(threads=[thread_summary(t) for t in [*pinned, *threads]],
                       next=next_cursor)
    if not is_htmx():
        return redirect(url_for("pages.thread_index", before=request.args.get("before")))
    threads, next_cursor = sidebar_page(before)
    current = request.args.get("current", type=int)
    return render_template("_thread_page.html", threads=threads, next_cursor=next_cursor,
                           current_id=current)
