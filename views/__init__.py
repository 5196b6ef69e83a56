"""Blueprints, one per feature, plus the request-wide rules they share."""

from __future__ import annotations

import re

from flask import Flask, current_app, jsonify, make_response, render_template, request
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, ServiceUnavailable
from werkzeug.routing import BaseConverter

from .access import register_access
from .body_limit import init_body_limit
from .feeds import FollowerFeeds
from .headers import register_security_headers
from .i18n import N_
from .limits import init_limits
from .strict_request import StrictRequest


class IdConverter(BaseConverter):
    """A database id: 1 to 18 digits, so a longer number is a 404, never an overflow."""

    regex = r"[1-9][0-9]{0,17}"

    @classmethod
    def matches(cls, value: str) -> bool:
        return re.fullmatch(cls.regex, value) is not None

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(int(value))


def register_blueprints(app: Flask) -> None:
    from models.passwords import Passwords

    from . import (
        accounts,
        api,
        broadcast,
        diagrams,
        messages,
        metrics,
        organise,
        pages,
        search,
        sockets,
        stream,
        temporary,
        threads,
        uploads,
        usage,
        versions,
    )
    from .fragments import STATUS_LABELS, STEP_LABELS, compared_versions, reply_cursor, reply_stage
    from .i18n import init_i18n
    from .identity import check_auth_config
    from .markdown import render_live, render_markdown
    from .timefmt import date_time, number, time_ago

    check_auth_config(app)
    init_i18n(app)
    app.extensions["relay_passwords"] = Passwords.from_config(app.config)
    app.url_map.converters["id"] = IdConverter
    # First of all: text that is not UTF-8 is refused before anything (CSRF, rate limits)
    # reads it.
    app.request_class = StrictRequest
    init_body_limit(app)  # a body over its limit is refused before even that
    app.before_request(lambda: request.check_text())
    register_access(app)
    register_security_headers(app)
    init_limits(app)
    app.context_processor(lambda: {"provider": app.extensions["relay"].provider,
                                   "model_choices": app.extensions["relay"].models.choices,
                                   "poll_interval_ms": app.config["POLL_INTERVAL_MS"],
                                   "status_labels": STATUS_LABELS,
                                   "step_labels": STEP_LABELS,
                                   "reply_cursor": reply_cursor,
                                   "reply_stage": reply_stage})
    app.add_template_global(compared_versions)
    app.add_template_global(pages.share_url)
    app.add_template_global(api.MAX_COMPARED, "max_compared")
    app.add_template_global(organise.owner_folders)
    app.add_template_global(uploads.message_files)
    app.add_template_filter(uploads.file_size, "filesize")
    app.register_blueprint(pages.bp)
    app.register_blueprint(messages.bp)
    app.register_blueprint(stream.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(threads.bp)
    app.register_blueprint(search.bp)
    app.register_blueprint(sockets.bp)
    app.register_blueprint(versions.bp)
    app.register_blueprint(broadcast.bp)
    app.register_blueprint(usage.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(accounts.bp)
    app.register_blueprint(organise.bp)
    app.register_blueprint(diagrams.bp)
    app.register_blueprint(uploads.bp)
    temporary.init_temporary(app)
    sockets.init_sockets(app)
    app.extensions["relay_feeds"] = FollowerFeeds(
        app, app.extensions["relay"].hub, sockets.render_changes,
        queue_frames=app.config["WS_QUEUE_FRAMES"])
    models = app.extensions["relay"].models
    app.extensions["relay_model_health"] = models.health(models.default)
    app.add_template_filter(render_markdown, "markdown")
    app.add_template_global(render_live)
    app.add_template_filter(time_ago, "ago")
    app.add_template_filter(usage.usd, "usd")
    app.add_template_filter(number, "number")
    app.add_template_filter(date_time, "datetime")
    app.register_error_handler(HTTPException, _http_error)
    for error in (OperationalError, InterfaceError, PoolTimeout):
        app.register_error_handler(error, _database_unavailable)


def wants_json() -> bool:
    """True when the client asked for JSON rather than HTML."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > \
        request.accept_mimetypes["text/html"]


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _sidebar() -> list:
    """The person's threads for an error page's sidebar; none when the database is away."""
    from models import db

    from .access import request_owner
    from .pages import owner_threads

    owner = request_owner()
    if not owner:
        return []
    try:
        return owner_threads(owner=owner, with_empty=False)
    except (OperationalError, InterfaceError, PoolTimeout):
        db.session.rollback()
        return []


def _database_unavailable(err: Exception):
    """A locked, unreachable or saturated database is a 503 the client may retry (with
    Retry-After), never a traceback."""
    from models import db

    try:
        db.session.rollback()
    except Exception:  # the connection itself may be what failed
        db.session.close()
    current_app.logger.warning("database unavailable for %s %s: %s", request.method,
                               request.path, getattr(err, "orig", None) or err)
    return _http_error(ServiceUnavailable(
        description=N_("The database is busy or unreachable; try again in a moment."),
        retry_after=1))


# What a person reads as the heading of an error page (the status code stays in the title).
# Werkzeug's own words for an error with no message of ours, as people read them (the same
# text, so a catalog can translate it; tests check it still is Werkzeug's).
WERKZEUG_DESCRIPTIONS = (
    N_("The requested URL was not found on the server. If you entered the URL manually please "
       "check your spelling and try again."),
    N_("The method is not allowed for the requested URL."),
)

ERROR_HEADINGS = {400: _l("That request could not be understood"), 401: _l("Sign in first"),
                  403: _l("Not allowed"),
                  404: _l("Page not found"), 405: _l("Not possible here"),
                  409: _l("Not right now"), 413: _l("Too long to send"),
                  429: _l("Too many messages at once"), 503: _l("Relay is busy")}


def _http_error(err: HTTPException):
    """Every 4xx/5xx as a short message: JSON for API clients, a small page otherwise; an
    htmx request gets the human message alone (the page shows it by the composer)."""
    message = err.description or err.name
    if isinstance(err, RequestEntityTooLarge) and message == RequestEntityTooLarge.description:
        message = N_("That is too much to send at once; shorten the message and try again.")
    if wants_json() or request.path.endswith("/stream"):
        response = jsonify(error=err.name, message=message, status=err.code)
    elif is_htmx():  # what people read is in their language; the JSON stays English
        message = gettext(message)
        response = make_response(render_template("_error.html", error=err, message=message,
                                                 bare=True))
    else:
        message = gettext(message)
        response = make_response(render_template(
            "error.html", error=err, message=message,
            heading=ERROR_HEADINGS.get(err.code or 500, err.name), threads=_sidebar()))
    response.status_code = err.code or 500
    for key, value in err.get_headers():
        if key.lower() not in ("content-type", "content-length"):
            response.headers[key] = value
    return response

