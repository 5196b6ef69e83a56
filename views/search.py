"""Search: the owner's threads and messages that match, with the matches marked."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, render_template, request

from models import db
from models.search import MAX_QUERY_CHARS, search

from . import is_htmx, wants_json
from .access import current_owner
from .pages import sidebar_threads
from .temporary import leave_temporary

bp = Blueprint("search", __name__)


@bp.get("/search")
def search_threads():
    """Titles and messages of this browser's threads matching every word of `q` (the last
    word as a prefix). JSON: a list of `{thread_id, message_id, title, snippet}` where
    `snippet` is HTML (escaped text, matches in <mark>); htmx: the sidebar's results."""
    query = request.args.get("q", "")
    if len(query) > MAX_QUERY_CHARS:
        abort(400, description=f"The search is {len(query)} characters long; "
                               f"the limit is {MAX_QUERY_CHARS}.")
    hits = search(db.session, current_owner(), query)
    if wants_json():
        return jsonify([hit.to_json() for hit in hits])
    if is_htmx():
        return render_template("_search_results.html", hits=hits, q=query.strip())
    leave_temporary()
    return render_template("search.html", hits=hits, q=query.strip(), **sidebar_threads())
