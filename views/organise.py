"""Organised threads: folders, pinned and archived threads, several threads at once, and the
sidebar that shows them."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
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
from sqlalchemy import false, func, select, update

from models import FOLDER_MAX_CHARS, Folder, Thread, db, utcnow
from models.text import one_line_name

from . import IdConverter, is_htmx, wants_json
from .access import current_owner, owned_thread
from .i18n import N_
from .pages import owner_threads, thread_json

bp = Blueprint("organise", __name__)

MISSING: Any = object()
TRUE, FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no")
BULK_ACTIONS = ("archive", "unarchive", "delete", "pin", "unpin")
PINNED_LIMIT = 200  # pinned threads the sidebar shows (they come unpaged)
FILED_LIMIT = 500  # threads shown across the sidebar's folders


# -- reading the request --------------------------------------------------------------------
def _body() -> Any:
    """The posted fields: the JSON object, or the form."""
    if request.is_json:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}
    return request.form


def flag_from_request(name: str, *, default: Any = MISSING) -> Any:
    """The posted true/false field `name` as a bool; `default` when it is not sent (MISSING
    when no default); a 400 that says what is wrong otherwise."""
    value = _body().get(name, MISSING)
    if value is MISSING or value is None and default is not MISSING:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    abort(400, description=f"'{name}' must be true or false.")


def folder_name(value: Any, field: str = "name") -> str:
    """A folder name as sent, trimmed; or a 400 that says what is wrong with it."""
    try:
        return one_line_name(value, field=field, what="A folder's name", limit=FOLDER_MAX_CHARS)
    except ValueError as err:
        abort(400, description=str(err))


def folder_from_request() -> Any:
    """The posted `folder`: MISSING when not sent, None for empty (no folder), else the name
    of one of the owner's folders (an unknown one is a 400)."""
    value = _body().get("folder", MISSING)
    if value is MISSING:
        return MISSING
    if value is None or isinstance(value, str) and value.strip() == "":
        return None
    name = folder_name(value, "folder")
    if find_folder(name) is None:
        abort(400, description=f"There is no folder named “{name}”; create it first.")
    return name


def find_folder(name: str) -> Folder | None:
    return db.session.scalar(select(Folder).where(Folder.owner == current_owner(),
                                                  Folder.name == name))


def owned_folder(folder_id: int) -> Folder:
    folder = db.session.get(Folder, folder_id)
    if folder is None or folder.owner != session.get("owner"):
        abort(404, description=N_("No such folder."))
    return folder


def ids_from_request() -> list[int]:
    """The posted thread `ids` (a repeated field or a JSON list), each once; or a 400."""
    raw = _body().get("ids") if request.is_json else request.form.getlist("ids")
    if isinstance(raw, str | int) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        abort(400, description="Choose at least one thread ('ids').")
    limit = current_app.config["BULK_MAX_THREADS"]
    if len(raw) > limit:
        abort(400, description=f"{len(raw)} threads at once; the limit is {limit}.")
    ids: list[int] = []
    for value in raw:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or not IdConverter.matches(text):
            abort(400, description="'ids' must be thread ids (positive whole numbers).")
        if int(text) not in ids:
            ids.append(int(text))
    return ids


# -- one thread -------------------------------------------------------------------------------
@bp.post("/threads/<id:thread_id>/organise")
def thread_organise(thread_id: int):
    """File a thread in a folder (`folder`: a name, or empty for none), pin or unpin it
    (`pinned`), archive or bring it back (`archived`). JSON: 200 with the thread."""
    thread = owned_thread(thread_id)
    folder = folder_from_request()
    pinned = flag_from_request("pinned")
    archived = flag_from_request("archived")
    if folder is MISSING and pinned is MISSING and archived is MISSING:
        abort(400, description="Send 'folder', 'pinned' or 'archived'.")
    if thread.temporary:
        abort(409, description="A temporary chat cannot be filed, pinned or archived.")
    was_archived = thread.archived
    if folder is not MISSING:
        thread.folder = folder
    if pinned is not MISSING:
        thread.pinned = pinned
    if archived is not MISSING:
        thread.archived = archived
    db.session.commit()
    if wants_json():
        return jsonify(thread=thread_json(thread))
    if is_htmx():
        return organised_fragment(refresh=thread.id if thread.archived != was_archived else None)
    return redirect(url_for("pages.thread_show", thread_id=thread.id), code=303)


# -- several threads ------------------------------------------------------------------------
@bp.post("/threads/bulk")
def thread_bulk():
    """One `action` (archive, unarchive, delete, pin, unpin) on several of the owner's
    threads (`ids`): all of them or, when one is not theirs, none (404).
    JSON: 200 `{action, ids}`."""
    from .threads import remove_threads  # threads imports pages, which imports us

    action = _body().get("action")
    if action not in BULK_ACTIONS:
        abort(400, description=f"'action' must be one of {', '.join(BULK_ACTIONS)}.")
    ids = ids_from_request()
    threads = list(db.session.scalars(select(Thread).where(
        Thread.id.in_(ids), Thread.owner == current_owner())))
    if len(threads) != len(ids):
        abort(404, description="No such thread.")  # never reveal which exist
    if action == "delete":
        remove_threads(threads)
    else:
        column, value = {"archive": ("archived", True), "unarchive": ("archived", False),
                         "pin": ("pinned", True), "unpin": ("pinned", False)}[action]
        db.session.execute(update(Thread).where(Thread.id.in_(ids)).values({column: value}))
        db.session.commit()
    if wants_json():
        return jsonify(action=action, ids=ids)
    if is_htmx():
        current = _current_thread_id()
        if current in ids and action == "delete":
            return "", 204, {"HX-Redirect": url_for("pages.thread_index")}
        return organised_fragment(refresh=current if current in ids and "archive" in action
                                  else None)
    if request.form.get("next") == "archived":
        return redirect(url_for("organise.archived_index"), code=303)
    return redirect(url_for("pages.thread_index"), code=303)


# -- folders ----------------------------------------------------------------------------------
@bp.get("/folders")
def folder_index():
    """The owner's folders, by name: JSON `{folders: [{id, name}]}`."""
    return jsonify(folders=[f.to_json() for f in owner_folders()])


@bp.post("/folders")
def folder_create():
    """Create a folder (`name`). JSON: 201 `{folder}`; a name already used is a 409."""
    name = folder_name(_body().get("name"))
    owner = current_owner()
    if find_folder(name) is not None:
        abort(409, description=f"You already have a folder named “{name}”.")
    limit = current_app.config["MAX_FOLDERS"]
    if db.session.scalar(select(func.count()).select_from(Folder)
                         .where(Folder.owner == owner)) >= limit:
        abort(400, description=f"You have {limit} folders, the most there can be.")
    folder = Folder(owner=owner, name=name, created_at=utcnow())
    db.session.add(folder)
    db.session.commit()
    if wants_json():
        return jsonify(folder=folder.to_json()), 201
    if is_htmx():
        return organised_fragment()
    return redirect(url_for("pages.thread_index"), code=303)


@bp.post("/folders/<id:folder_id>/rename")
def folder_rename(folder_id: int):
    """Rename a folder (`name`): its threads follow it. JSON: 200 `{folder}`."""
    folder = owned_folder(folder_id)
    name = folder_name(_body().get("name"))
    if name != folder.name:
        if find_folder(name) is not None:
            abort(409, description=f"You already have a folder named “{name}”.")
        db.session.execute(update(Thread).where(Thread.owner == folder.owner,
                                                Thread.folder == folder.name)
                           .values(folder=name))
        folder.name = name
        db.session.commit()
    if wants_json():
        return jsonify(folder=folder.to_json())
    if is_htmx():
        return organised_fragment()
    return redirect(url_for("pages.thread_index"), code=303)


@bp.post("/folders/<id:folder_id>/delete")
def folder_delete(folder_id: int):
    """Delete a folder; its threads stay, in no folder. JSON: 200 `{deleted: id}`."""
    folder = owned_folder(folder_id)
    db.session.execute(update(Thread).where(Thread.owner == folder.owner,
                                            Thread.folder == folder.name).values(folder=None))
    db.session.delete(folder)
    db.session.commit()
    if wants_json():
        return jsonify(deleted=folder_id)
    if is_htmx():
        return organised_fragment()
    return redirect(url_for("pages.thread_index"), code=303)


# -- the archive ------------------------------------------------------------------------------
@bp.get("/threads/archived")
def archived_index():
    """The owner's archived threads, newest first, each one click from coming back.
    JSON: `{threads}`."""
    threads = owner_threads(500, archived=True)
    if wants_json():
        return jsonify(threads=[thread_json(t) for t in threads])
    from .temporary import leave_temporary

    leave_temporary()
    return render_template("archived.html", archived=threads, **sidebar_context())


# -- the sidebar ------------------------------------------------------------------------------
def owner_folders() -> list[Folder]:
    """This browser's folders by name (once per request; none for a browser without an
    owner yet)."""
    if "owner_folders" not in g:
        owner = session.get("owner")
        g.owner_folders = list(db.session.scalars(
            select(Folder).where(Folder.owner == owner).order_by(Folder.name, Folder.id))) \
            if owner else []
    return g.owner_folders


def pinned_threads(*, unfiled: bool = True) -> list[Thread]:
    """The owner's pinned threads that have messages, newest first."""
    return owner_threads(PINNED_LIMIT, with_empty=False, pinned=True, unfiled=unfiled)


def filed_threads() -> list[tuple[Folder, list[Thread]]]:
    """Each folder with its threads (pinned first, then newest)."""
    folders = owner_folders()
    if not folders:
        return []
    owner = session.get("owner")
    rows = list(db.session.scalars(
        select(Thread).where(Thread.owner == owner, Thread.folder.is_not(None),
                             Thread.temporary == false(), Thread.archived == false())
        .order_by(Thread.pinned.desc(), Thread.updated_at.desc(), Thread.id.desc())
        .limit(FILED_LIMIT)))
    return [(folder, [t for t in rows if t.folder == folder.name]) for folder in folders]


def sidebar_context(before: tuple[dt.datetime, int] | None = None) -> dict:
    """What the sidebar shows: folders with their threads, the pinned threads, one page of
    the rest and the cursor of the next."""
    from .threads import sidebar_page  # threads imports us

    threads, next_cursor = sidebar_page(before)
    return {"threads": threads, "next_cursor": next_cursor, "pinned": pinned_threads(),
            "folders": filed_threads()}


THREAD_PATH = re.compile(r"/threads/([1-9][0-9]{0,17})")


def _current_thread_id() -> int | None:
    """The thread whose page sent this htmx request, if any."""
    match = THREAD_PATH.fullmatch(urlsplit(request.headers.get("HX-Current-URL", "")).path)
    return int(match[1]) if match else None


def organised_fragment(refresh: int | None = None):
    """An htmx answer: the sidebar, re-rendered, when it is the target (the open thread's page
    reloads when its own thread was archived or brought back); nothing otherwise (a row of
    the archive removes itself)."""
    current = _current_thread_id()
    headers = {"HX-Refresh": "true"} if refresh is not None and refresh == current else {}
    if request.headers.get("HX-Target") != "thread-list":
        return "", 200, headers
    return render_template("_sidebar_nav.html", current_id=current,
                           **sidebar_context()), 200, headers
