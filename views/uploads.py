"""Attachments: upload a file, read it back, and the checks a prompt's attachments pass."""

from __future__ import annotations

import json
from urllib.parse import quote

import gevent
from flask import Blueprint, abort, current_app, jsonify, make_response, request
from flask_babel import gettext, ngettext
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from llm.usage import estimate_tokens
from models import Message, Thread, db
from models.files import FileRefused, estimated_tokens, read_file
from models.uploads import MessageUpload, Upload, blob_data, message_uploads, new_upload

from .access import can_read, current_owner, request_owner
from .body_limit import body_limit
from .i18n import N_
from .limits import limiter
from .timefmt import number

bp = Blueprint("uploads", __name__)

MB = 1024 * 1024
MULTIPART_SLACK = 64 * 1024  # the form's own bytes around the file
# What people read when a file is refused, by models.files.FileRefused's reason.
REFUSALS = {
    "empty": N_("The file %(name)s is empty."),
    "svg": N_("SVG images are not accepted (they can carry scripts); send a PNG, JPEG, WebP "
              "or GIF instead."),
    "type": N_("%(name)s is not a file Relay can read: send images (PNG, JPEG, WebP, GIF), "
               "PDFs or text files."),
    "pixels": N_("%(name)s has too many pixels; send a smaller image."),
    "image": N_("%(name)s could not be read as an image."),
    "encrypted": N_("%(name)s is encrypted; send a PDF without a password."),
    "pdf": N_("%(name)s could not be read as a PDF."),
}
TOO_LARGE = N_("The file is larger than the limit of %(mb)s MB.")
NO_FILE = N_("Choose a file to attach: the form field 'file' is missing.")
TOO_MANY = N_("A message can carry at most %(count)s files.")
UNKNOWN = N_("Attachment %(id)s is not one of your uploads; upload the file again.")
NOT_IDS = N_("'attachments' must be upload ids.")
NO_VISION = N_("%(model)s cannot read images; pick a model that can, or remove the images.")
OVER_BUDGET = N_("The message and its files use about %(used)s tokens, more than the "
                 "%(context)s of %(model)s; remove a file or send a shorter one.")


@bp.record_once
def _limits(state) -> None:
    config = state.app.config
    config["UPLOAD_BODY_BYTES"] = int(config["UPLOAD_MAX_MB"] * MB) + MULTIPART_SLACK


def refusal(status: int, message: str, **params) -> tuple:
    """A JSON refusal: `message` in English (as every JSON error), `shown` in the reader's
    language for the page to show."""
    english = message % params if params else message
    shown = gettext(message, **params) if params else gettext(message)
    return jsonify(error=status, message=english, shown=shown, status=status), status


def upload_limit() -> str:
    return current_app.config["UPLOAD_RATE_LIMIT"]


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(err):
    return refusal(413, TOO_LARGE, mb=_number(current_app.config["UPLOAD_MAX_MB"]))


@bp.post("/uploads")
@body_limit("UPLOAD_BODY_BYTES")
@limiter.limit(upload_limit, error_message="You are uploading files too fast; wait a moment.")
def upload_create():
    """Store a file (multipart field `file`), its type read from its bytes; JSON 201
    `{id, name, type, size, tokens}`, or 400 / 413 / 415 with a message."""
    owner = current_owner()
    sent = request.files.get("file")
    if sent is None:
        return refusal(400, NO_FILE)
    limit = int(current_app.config["UPLOAD_MAX_MB"] * MB)
    data = sent.stream.read(limit + 1)
    if len(data) > limit:
        return refusal(413, TOO_LARGE, mb=_number(current_app.config["UPLOAD_MAX_MB"]))
    try:
        # Decoding and re-encoding take a while for a large image: in a thread of the
        # worker's pool, so the streams this worker serves meanwhile do not wait on it.
        file = gevent.get_hub().threadpool.apply(read_file, (sent.filename or "", data))
    except FileRefused as refused:
        return refusal(refused.status, REFUSALS[refused.reason], **refused.params)
    upload = new_upload(db.session, owner, file)
    db.session.commit()
    return jsonify(upload_json(upload)), 201


def upload_json(upload: Upload) -> dict:
    """The contract's `{id, name, type, size}`, with the tokens the model reads of it."""
    return {**upload.to_json(), "tokens": tokens_of(upload)}


def tokens_of(upload: Upload) -> int:
    return estimated_tokens(upload.type, upload.text, upload.width, upload.height)


@bp.get("/uploads/<id:upload_id>")
def upload_show(upload_id: int):
    """The file with its own type, for its owner or a share viewer of a thread that holds
    it; 404 for everybody else. `?preview`: a large image's smaller copy, if it has one."""
    upload = db.session.get(Upload, upload_id)
    if upload is None or not _may_read(upload):
        abort(404, description=N_("No such file."))
    # `?preview`: a large image's smaller copy (the one models get), for thumbnails.
    preview = "preview" in request.args and upload.model_sha256 is not None
    digest, kind = (upload.model_sha256, upload.model_type) if preview else \
        (upload.sha256, upload.type)
    etag = digest
    if request.if_none_match.contains(etag):
        response = make_response("", 304)
    else:
        response = make_response(blob_data(db.session, digest))
        response.headers["Content-Type"] = kind + (
            "; charset=utf-8" if upload.text is not None and upload.type != "application/pdf"
            else "")
    response.set_etag(etag)
    disposition = "inline" if upload.is_image else "attachment"
    response.headers["Content-Disposition"] = \
        f"{disposition}; filename*=UTF-8''{quote(upload.name)}"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Never a page of its own: nothing in it may run, even opened on its own.
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


def _may_read(upload: Upload) -> bool:
    if upload.owner == request_owner():
        return True
    threads = db.session.scalars(
        select(Thread).join(Message, Message.thread_id == Thread.id)
        .join(MessageUpload, MessageUpload.message_id == Message.id)
        .where(MessageUpload.upload_id == upload.id).distinct().limit(50))
    return any(can_read(thread) for thread in threads)


# -- a prompt's attachments -------------------------------------------------------------------
def attachment_ids_from_request() -> list[int] | None:
    """The `attachments` of the request (repeated form field, JSON list, or a form field
    holding a JSON list), in order, without repeats; None when none were sent."""
    if request.is_json:
        body = request.get_json(silent=True)
        raw = body.get("attachments") if isinstance(body, dict) else None
        if raw is None:
            return None
        if not isinstance(raw, list):
            abort(400, description=NOT_IDS)
    else:
        raw = [value for value in request.form.getlist("attachments") if value.strip()]
        if len(raw) == 1 and raw[0].lstrip().startswith("["):
            try:
                raw = json.loads(raw[0])
            except ValueError:
                abort(400, description=NOT_IDS)
            if not isinstance(raw, list):
                abort(400, description=NOT_IDS)
        if not raw:
            return None
    ids: list[int] = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int | str) or \
                not str(value).strip().isdigit() or len(str(value).strip()) > 18:
            abort(400, description=NOT_IDS)
        if int(value) not in ids:
            ids.append(int(value))
    return ids


def owned_uploads(ids: list[int]) -> list[Upload]:
    """These uploads of the person asking, in this order; a 400 for too many, or for one
    that is not theirs (unknown ids and other people's look the same)."""
    limit = current_app.config["UPLOAD_MAX_FILES"]
    if len(ids) > limit:
        abort(400, description=gettext(TOO_MANY, count=limit) if _shown() else
              TOO_MANY % {"count": limit})
    owner = request_owner()
    found = {u.id: u for u in db.session.scalars(
        select(Upload).where(Upload.id.in_(ids), Upload.owner == (owner or "")))}
    for upload_id in ids:
        if upload_id not in found:
            abort(400, description=gettext(UNKNOWN, id=upload_id) if _shown() else
                  UNKNOWN % {"id": upload_id})
    return [found[i] for i in ids]


def check_fits(uploads: list[Upload], prompt: str, choice) -> None:
    """A 400 when the model cannot read the images, a 413 when the prompt and its files are
    more than the model's context."""
    if any(u.is_image for u in uploads) and not choice.vision:
        abort(400, description=gettext(NO_VISION, model=choice.label) if _shown() else
              NO_VISION % {"model": choice.label})
    used = estimate_tokens(prompt) + sum(tokens_of(u) for u in uploads)
    if used > choice.context:
        params = {"used": _number(used), "context": _number(choice.context),
                  "model": choice.label}
        abort(413, description=gettext(OVER_BUDGET, **params) if _shown() else
              OVER_BUDGET % params)


def message_files(message: Message) -> list[Upload]:
    """A prompt's attachments, in order, for its fragment."""
    if message.role != "user":
        return []
    return message_uploads(db.session, [message.id]).get(message.id, [])


def file_size(size: int) -> str:
    """A file's size in the reader's language: "812 bytes", "34 KB", "2.5 MB"."""
    if size < 1024:
        return ngettext("%(count)s byte", "%(count)s bytes", size, count=number(size))
    if size < MB:
        return gettext("%(size)s KB", size=number(size / 1024))
    return gettext("%(size)s MB", size=number(size / MB, 1))


def _shown() -> bool:
    """Whether the refusal is read by a person on a page (else JSON: English)."""
    from . import wants_json

    return not wants_json()


def _number(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}"
