"""Pages: the thread list, creating a thread, a thread with its messages."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, exists, false, or_, select
from werkzeug.exceptions import BadRequest

from models import Message, Thread, db, utcnow
from models.tree import ThreadTree

from . import IdConverter, is_htmx, wants_json
from .access import current_owner, grant_share, is_owner, owned_thread, readable_thread
from .fragments import follow_mode, live_mode
from .limits import limiter, posting_limit
from .usage import totals_of

bp = Blueprint("pages", __name__)


def owner_threads(limit: int = 50, *, owner: str | None = None, with_empty: bool = True,
                  before: tuple[dt.datetime, int] | None = None, archived: bool = False,
                  pinned: bool | None = None, unfiled: bool = False) -> list[Thread]:
    """This browser's threads, pinned first, then newest first; never a temporary one.

    `with_empty=False` leaves out threads that have no message yet (the sidebar: nobody
    wants a list of blank "New thread"s); `before` = (updated_at, id) of the last thread of
    the previous page; `archived` picks the archived threads instead of the others;
    `pinned` only the pinned (True) or unpinned (False) ones; `unfiled` only those in no
    folder.
    """
    query = select(Thread).where(Thread.owner == (owner or current_owner()),
                                 Thread.temporary == false(), Thread.archived == archived)
    if not with_empty:
        query = query.where(exists().where(Message.thread_id == Thread.id))
    if pinned is not None:
        query = query.where(Thread.pinned == pinned)
    if unfiled:
        query = query.where(Thread.folder.is_(None))
    if before is not None:
        updated_at, thread_id = before
        query = query.where(or_(Thread.updated_at < updated_at,
                                and_(Thread.updated_at == updated_at, Thread.id < thread_id)))
    return list(db.session.scalars(
        query.order_by(Thread.pinned.desc(), Thread.updated_at.desc(), Thread.id.desc())
        .limit(limit)))


def sidebar_threads(before: tuple[dt.datetime, int] | None = None) -> dict:
    """The sidebar: its folders with their threads, the pinned threads, and the first page
    of the others (newest first) with its next cursor."""
    from .organise import sidebar_context  # organise imports us

    return sidebar_context(before)


def message_page(thread: Thread, before: int | None = None, *,
                 tree: ThreadTree | None = None) -> tuple[list[Message], bool]:
    """The newest page of the active path (oldest first), older than `before`; and whether
    more exist."""
    size = current_app.config["PAGE_SIZE"]
    path = (tree or ThreadTree.load(db.session, thread)).path()
    if before is not None:
        path = [i for i in path if i < before]
    return messages_by_id(path[-size:]), len(path) > size


def messages_after(thread: Thread, after: int, *,
                   tree: ThreadTree | None = None) -> list[Message]:
    """Messages of the active path newer than `after`, oldest first (a polling tab catching
    up)."""
    path = [i for i in (tree or ThreadTree.load(db.session, thread)).path() if i > after]
    return messages_by_id(path[:current_app.config["PAGE_SIZE"]])


def messages_by_id(ids: list[int]) -> list[Message]:
    """These messages, in the order of `ids`."""
    if not ids:
        return []
    found = {m.id: m for m in db.session.scalars(select(Message).where(Message.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


def versions_of(tree: ThreadTree, messages: list[Message]) -> dict[int, list[int]]:
    """Each message's versions (itself included, oldest first), for its ‹ n / m › controls."""
    return {m.id: tree.siblings(m.id) for m in messages if m.id in tree.parents}


def id_arg(name: str) -> int | None:
    """An id from the query string, or a 400 that says what is wrong with it."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if raw == "0" and name == "after":
        return 0
    if not IdConverter.matches(raw):
        abort(400, description=f"'{name}' must be a message id (a positive whole number).")
    return int(raw)


def absolute_url(path: str) -> str:
    """`path` on PUBLIC_URL; else on the host a trusted proxy names (TRUSTED_PROXIES); else
    on the address Relay listens on. Never on the Host header a client chose."""
    public = current_app.config.get("PUBLIC_URL")
    if public:
        return public.rstrip("/") + path
    if current_app.config.get("TRUSTED_PROXIES"):
        return request.host_url.rstrip("/") + path  # set from X-Forwarded-Host by ProxyFix
    return listening_origin() + path


def listening_origin() -> str:
    """scheme://address:port this server was reached on, from the socket (not the Host
    header); empty (a relative link) when it listens on every address."""
    host = request.environ.get("SERVER_NAME", "")
    if host in ("", "0.0.0.0", "::"):
        return ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    port = str(request.environ.get("SERVER_PORT", ""))
    default = {"http": "80", "https": "443"}.get(request.scheme)
    return f"{request.scheme}://{host}" + (f":{port}" if port and port != default else "")


def share_url(thread: Thread) -> str:
    """The thread's read-only link, to copy and send."""
    return absolute_url(url_for("pages.share_show", token=thread.share_token))


def engine():
    return current_app.extensions["relay"]


def polled(thread_id: int) -> None:
    """A polling tab asked for news of a thread (the metrics count poll followers)."""
    who = g.get("owner") or session.get("owner") or request.remote_addr
    current_app.extensions["relay_metrics"].polled((who, thread_id))


def thread_json(thread: Thread) -> dict:
    return {"id": thread.id, "title": thread.title, "url": url_for("pages.thread_show",
                                                                   thread_id=thread.id),
            "created_at": thread.created_at.isoformat() + "Z",
            "updated_at": thread.updated_at.isoformat() + "Z", "model": thread.model,
            "folder": thread.folder, "pinned": thread.pinned, "archived": thread.archived,
            "temporary": thread.temporary}


@bp.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico whatever the page links; answer with the SVG icon."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)


@bp.get("/")
def thread_index():
    """The home page: a composer that starts a thread, suggestions, the thread list."""
    if wants_json():
        return jsonify(threads=[thread_json(t) for t in owner_threads()])
    from .accounts import claim_offer
    from .temporary import leave_temporary
    from .threads import cursor_arg  # threads imports us

    before = cursor_arg()
    leave_temporary()
    return render_template("index.html", **sidebar_threads(before),
                           suggestions=SUGGESTIONS, claimable=claim_offer(),
                           temporary=request.args.get("temporary") == "1",
                           max_prompt_chars=current_app.config["MAX_PROMPT_CHARS"])


# Offered in the reader's language: each is sent as the prompt, as shown.
SUGGESTIONS = (
    _l("Explain server-sent events in three sentences."),
    _l("Write a haiku about a stream that never loses a word."),
    _l("Give me a checklist for reviewing a pull request."),
    _l("What should I consider when choosing a database?"),
)


def _has_prompt() -> bool:
    try:
        if request.is_json:
            body = request.get_json(silent=True)
            return isinstance(body, dict) and "content" in body
        return "content" in request.form
    except BadRequest:
        # A body refused as it is read (sent chunked, so not checked up front): counted,
        # and the view answers why. The rate limiter would swallow the error.
        return True


@bp.post("/threads")
@limiter.limit(posting_limit, exempt_when=lambda: not _has_prompt(),
               error_message="You are sending messages too fast; wait a moment and try again.")
def thread_create():
    """Create a thread and go to it; with `content`, its first prompt and pending reply too
    (JSON: 201 with the thread, both messages and `stream_url`); `model` picks its model."""
    # messages imports us
    from .messages import (
        attachments_from_request,
        model_from_request,
        prompt_from_request,
        start_turn,
        turn_json,
    )
    from .organise import flag_from_request

    prompt = prompt_from_request() if _has_prompt() else None
    temporary = flag_from_request("temporary", default=False)
    thread = Thread(owner=current_owner(), created_at=utcnow(), updated_at=utcnow(),
                    temporary=temporary)
    model = model_from_request(thread)  # an unknown model is a 400 before anything is stored
    # Files refused: a 400 or 413 before anything is stored too.
    files = attachments_from_request(prompt, [model]) if prompt is not None else []
    db.session.add(thread)
    db.session.commit()
    turn = start_turn(thread, prompt, model, attachments=files) if prompt is not None else None
    url = url_for("pages.thread_show", thread_id=thread.id)
    if wants_json():
        body = {"thread": thread_json(thread), **(turn_json(*turn) if turn else {})}
        return jsonify(body), 201, {"Location": url}
    if is_htmx():
        return "", 204, {"HX-Redirect": url}
    return redirect(url, code=303)


def render_thread(thread: Thread, *, readonly: bool):
    """A thread page (or its fragment, or JSON) for its owner or a share-link viewer."""
    tree = ThreadTree.load(db.session, thread)
    messages, has_more = message_page(thread, tree=tree)
    texts = message_texts(messages)
    versions = versions_of(tree, messages)
    totals = totals_of(thread)
    if wants_json():
        return jsonify(thread=thread_json(thread), messages=[
            m.to_json(texts[m.id], siblings=versions[m.id]) for m in messages],
            has_more=has_more, usage=totals.to_json())
    mode = follow_mode()
    template = "_thread.html" if is_htmx() else "thread.html"
    return render_template(template, thread=thread, messages=messages, texts=texts,
                           versions=versions, has_more=has_more, readonly=readonly, follow=mode,
                           live=live_mode(mode, owner=not readonly), totals=totals,
                           # A path: the ws extension picks ws: or wss: from the page's scheme.
                           ws_url=urlsplit(url_for("sockets.thread_socket",
                                                   thread_id=thread.id)).path,
                           max_prompt_chars=current_app.config["MAX_PROMPT_CHARS"],
                           **({"threads": []} if readonly else sidebar_threads()))


@bp.get("/threads/<id:thread_id>")
def thread_show(thread_id: int):
    """A thread: its newest messages and the composer."""
    thread = owned_thread(thread_id)
    if not wants_json() and not is_htmx():
        from .temporary import leave_temporary

        leave_temporary(keep=thread.id)  # opening another page leaves a temporary chat
    return render_thread(thread, readonly=False)


@bp.post("/threads/<id:thread_id>/share")
def share_create(thread_id: int):
    """Create the thread's read-only share link (once; the same link afterwards)."""
    thread = owned_thread(thread_id)
    if not thread.share_token:
        thread.share_token = Thread.new_share_token()
        db.session.commit()
    if wants_json():
        return jsonify(share_url=share_url(thread)), 201
    if is_htmx():
        return render_template("_share.html", thread=thread)
    return redirect(url_for("pages.thread_show", thread_id=thread.id), code=303)


@bp.post("/threads/<id:thread_id>/share/revoke")
@bp.delete("/threads/<id:thread_id>/share")
def share_revoke(thread_id: int):
    """Revoke the share link: `/s/<token>` is a 404 from now on, and viewers lose access.
    Sharing again makes a new link."""
    thread = owned_thread(thread_id)
    shared = thread.share_token is not None
    thread.share_token = None
    db.session.commit()
    if shared:  # viewers following it live are shut out now, not at their next request
        engine().hub.publish(thread.channel, {"type": "unshared", "thread": thread.id})
    if wants_json():
        return jsonify(share_url=None)
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
    """Older messages (`before`), or newer ones (`after`) for a polling tab."""
    thread = readable_thread(thread_id)
    before, after = id_arg("before"), id_arg("after")
    if before is not None and after is not None:
        abort(400, description="Ask for messages 'before' or 'after' an id, not both.")
    tree = ThreadTree.load(db.session, thread)
    mode = follow_mode()
    readonly = not is_owner(thread)
    if after is not None and mode == "poll":
        polled(thread.id)
    if after and mode == "poll" and not wants_json() and after not in tree.path():
        # The page's newest message left the active path: another version was chosen.
        messages, has_more = message_page(thread, tree=tree)
        return render_template("_active_path_oob.html", thread=thread, messages=messages,
                               texts=message_texts(messages), versions=versions_of(tree, messages),
                               has_more=has_more, readonly=readonly, follow=mode,
                               live=live_mode(mode, owner=not readonly))
    if after is not None:
        messages, has_more = messages_after(thread, after, tree=tree), False
    else:
        messages, has_more = message_page(thread, before, tree=tree)
    texts = message_texts(messages)
    versions = versions_of(tree, messages)
    if wants_json():
        return jsonify(messages=[m.to_json(texts[m.id], siblings=versions[m.id])
                                 for m in messages], has_more=has_more)
    html = render_template("_messages.html", thread=thread, messages=messages, texts=texts,
                           versions=versions, has_more=has_more, readonly=readonly, follow=mode,
                           live=live_mode(mode, owner=not readonly),
                           compare_grid=after is not None)
    if after is not None and mode == "poll":
        html += render_template("_poll_newer.html", thread=thread,
                                after=messages[-1].id if messages else after)
        if messages:  # a new turn: the title (named by a first prompt) and the sidebar
            html += render_template("_thread_changed.html", thread=thread, readonly=readonly)
    return html


def message_texts(messages: list[Message]) -> dict[int, str]:
    """The freshest text of each message (a streaming reply's persisted or live text)."""
    return {m.id: engine().current_text(m, db.session) for m in messages}
