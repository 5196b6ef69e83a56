"""A thread as a file: Markdown to read, JSON to keep and import again (the whole tree)."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from sqlalchemy import select

from . import (
    ACTIVE_STATUSES,
    DEFAULT_TITLE,
    FOLDER_MAX_CHARS,
    INTERRUPTED,
    TERMINAL_STATUSES,
    TITLE_MAX_CHARS,
    Folder,
    Message,
    Thread,
    db,
    utcnow,
)
from .text import is_blank

FORMAT = "relay.thread"
VERSION = 1
ROLES = ("user", "assistant")
MAX_MESSAGES = 10_000
MAX_MESSAGE_CHARS = 1_000_000
ROLE_HEADINGS = {"user": "You", "assistant": "Assistant"}


class ArchiveError(ValueError):
    """What is wrong with an imported file, in words a person can act on."""


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def message_record(message: Message, text: str | None = None) -> dict[str, Any]:
    """Every field needed to rebuild `message` (its `parent_id` when messages have one)."""
    record = {
        "id": message.id,
        "parent_id": getattr(message, "parent_id", None),
        "role": message.role,
        "content": message.content if text is None else text,
        "status": message.status,
        "error": message.error,
        "model": message.model,
        "usage": message.usage,
        "timings": message.timings,
        "created_at": _time(message.created_at),
    }
    # A reply's other parts, when it has them (older exports have none).
    if message.reasoning:
        record["reasoning"] = message.reasoning
    if message.steps:
        record["steps"] = message.steps
    return record


def thread_json(thread: Thread, messages: list[Message], texts: dict[int, str],
                files: dict[int, list[dict[str, Any]]] | None = None) -> dict:
    """The JSON export: the thread and all its messages, oldest first; `files`: each
    message's attachments (attachment_records), kept under its "attachments"."""
    records = [message_record(m, texts.get(m.id)) for m in messages]
    for record in records:
        if files and files.get(record["id"]):
            record["attachments"] = files[record["id"]]
    return {"format": FORMAT, "version": VERSION,
            "thread": {"id": thread.id, "title": thread.title,
                       "title_chosen": thread.title_chosen,
                       # Which version of each turn is shown: the end of the active path.
                       "active_leaf_id": thread.active_leaf_id,
                       "folder": thread.folder, "pinned": thread.pinned,
                       "archived": thread.archived, "temporary": thread.temporary,
                       "created_at": _time(thread.created_at),
                       "updated_at": _time(thread.updated_at)},
            "messages": records}


def attachment_records(session, messages: list[Message]) -> dict[int, list[dict[str, Any]]]:
    """Each message's attachments with their bytes (base64), so an export stands alone."""
    from .uploads import blob_data, message_uploads

    found = message_uploads(session, [m.id for m in messages if m.role == "user"])
    return {message_id: [{**u.to_json(), "sha256": u.sha256, "encoding": "base64",
                          "data": base64.b64encode(blob_data(session, u.sha256)).decode()}
                         for u in uploads]
            for message_id, uploads in found.items()}


def thread_markdown(thread: Thread, messages: list[Message], texts: dict[int, str],
                    files: dict[int, list[dict[str, Any]]] | None = None) -> str:
    """The Markdown export: the title, then each message under who wrote it (and the names
    of its attachments, from `files`)."""
    parts = [f"# {_one_line(thread.title)}", ""]
    for message in messages:
        heading = ROLE_HEADINGS.get(message.role, message.role.title())
        if message.role == "assistant" and message.model:
            heading += f" ({_one_line(message.model)})"
        parts += [f"## {heading}", "", texts.get(message.id, message.content).rstrip(), ""]
        for file in (files or {}).get(message.id, []):
            parts += [f"- Attachment: {_one_line(file['name'])} ({file['type']}, "
                      f"{file['size']:,} bytes)"]
        if (files or {}).get(message.id):
            parts += [""]
        if message.status not in ("complete",):
            note = f"*{message.status}*"
            if message.error:
                note += f": {_one_line(message.error)}"
            parts += [f"> {note}", ""]
    return "\n".join(parts).rstrip() + "\n"


def _one_line(value: str) -> str:
    return " ".join(value.split())


# -- import --------------------------------------------------------------------------------
def import_thread(data: Any, owner: str) -> tuple[Thread, list[Message]]:
    """Rebuild an exported thread for `owner` (added to the session, not committed).

    Raises ArchiveError, naming the first thing wrong, for anything but a Relay export.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArchiveError(f"This is not a Relay thread export ('format' must be '{FORMAT}').")
    if data.get("version") != VERSION:
        raise ArchiveError(f"Unsupported export version {data.get('version')!r}; "
                           f"this Relay reads version {VERSION}.")
    source = _field(data, "thread", dict, "the export")
    records = _field(data, "messages", list, "the export")
    if len(records) > MAX_MESSAGES:
        raise ArchiveError(f"Too many messages ({len(records)}); the limit is {MAX_MESSAGES}.")
    title = _field(source, "title", str, "the thread", default=DEFAULT_TITLE).strip()
    if is_blank(title) or len(title) > TITLE_MAX_CHARS or _has_controls(title):
        raise ArchiveError(f"The thread's 'title' must be one line of 1 to {TITLE_MAX_CHARS} "
                           "characters.")
    chosen = _field(source, "title_chosen", bool, "the thread", default=False)
    folder = _folder(source, owner)
    flags = {name: _field(source, name, bool, "the thread", default=False)
             for name in ("pinned", "archived", "temporary")}
    now = utcnow()
    thread = Thread(owner=owner, title=title, title_chosen=chosen, folder=folder, **flags,
                    created_at=_parse_time(source.get("created_at"), "the thread") or now,
                    updated_at=now)
    db.session.add(thread)
    db.session.flush()
    has_parents = hasattr(Message, "parent_id")
    new_ids: dict[int, int] = {}
    messages: list[Message] = []
    for index, record in enumerate(records):
        where = f"message {index + 1}"
        if not isinstance(record, dict):
            raise ArchiveError(f"{where.capitalize()} is not an object.")
        message = _message(record, where, thread.id, now)
        parent = record.get("parent_id")
        if parent is not None:
            if not isinstance(parent, int) or isinstance(parent, bool) or parent not in new_ids:
                raise ArchiveError(f"{where.capitalize()}'s 'parent_id' does not name an "
                                   "earlier message of the export.")
            if has_parents:
                message.parent_id = new_ids[parent]
        db.session.add(message)
        db.session.flush()
        _attachments(record, where, message, owner)
        source_id = record.get("id")
        if source_id is not None:
            if not isinstance(source_id, int) or isinstance(source_id, bool) \
                    or source_id in new_ids:
                raise ArchiveError(f"{where.capitalize()}'s 'id' must be a whole number "
                                   "unique in the export.")
            new_ids[source_id] = message.id
        messages.append(message)
    thread.active_leaf_id = _active_leaf(source, new_ids, messages)
    return thread, messages


def _folder(source: dict, owner: str) -> str | None:
    """The folder the thread was filed in (None: none), made for `owner` if they have no
    folder of that name yet."""
    name = _field(source, "folder", str, "the thread", default=None, nullable=True)
    if name is None or name.strip() == "":
        return None
    name = name.strip()
    if len(name) > FOLDER_MAX_CHARS or _has_controls(name):
        raise ArchiveError(f"The thread's 'folder' must be one line of at most "
                           f"{FOLDER_MAX_CHARS} characters.")
    exists = db.session.scalar(select(Folder.id).where(Folder.owner == owner,
                                                       Folder.name == name))
    if exists is None:
        db.session.add(Folder(owner=owner, name=name, created_at=utcnow()))
    return name


def _active_leaf(source: dict, new_ids: dict[int, int], messages: list[Message]) -> int | None:
    """The imported message that ends the active path: the one the export names, else the
    newest (an export without versions is one path; None leaves an unparented one so)."""
    leaf = source.get("active_leaf_id")
    if leaf is None:
        if any(m.parent_id is not None for m in messages):
            return max(m.id for m in messages)
        return None
    if not isinstance(leaf, int) or isinstance(leaf, bool) or leaf not in new_ids:
        raise ArchiveError("The thread's 'active_leaf_id' does not name a message of the "
                           "export.")
    return new_ids[leaf]


def _attachments(record: dict, where: str, message: Message, owner: str) -> None:
    """A prompt's exported files, stored again for `owner` (read as any upload is)."""
    from .files import FileRefused, read_file
    from .uploads import MessageUpload, new_upload

    files = _field(record, "attachments", list, where, default=None, nullable=True) or []
    for position, file in enumerate(files):
        name = file.get("name") if isinstance(file, dict) else None
        try:
            data = base64.b64decode(file.get("data") or "", validate=True) \
                if isinstance(file, dict) and isinstance(file.get("data"), str) else b""
        except ValueError:
            data = b""
        if message.role != "user" or not isinstance(name, str) or not data:
            raise ArchiveError(f"{where.capitalize()}'s attachment {position + 1} needs a "
                               "'name' and its base64 'data', on a user message.")
        try:
            read = read_file(name, data)
        except FileRefused as refused:
            raise ArchiveError(f"{where.capitalize()}'s attachment {name!r} is not a file "
                               f"Relay keeps ({refused.reason}).") from None
        upload = new_upload(db.session, owner, read)
        db.session.add(MessageUpload(message_id=message.id, upload_id=upload.id,
                                     position=position))


def _message(record: dict, where: str, thread_id: int, now: dt.datetime) -> Message:
    role = _field(record, "role", str, where)
    if role not in ROLES:
        raise ArchiveError(f"{where.capitalize()}'s 'role' must be one of {', '.join(ROLES)}.")
    content = _field(record, "content", str, where)
    if len(content) > MAX_MESSAGE_CHARS or _not_text(content):
        raise ArchiveError(f"{where.capitalize()}'s 'content' must be text of at most "
                           f"{MAX_MESSAGE_CHARS} characters.")
    status = _field(record, "status", str, where, default="complete")
    if status not in (*TERMINAL_STATUSES, *ACTIVE_STATUSES):
        raise ArchiveError(f"{where.capitalize()}'s 'status' must be one of "
                           f"{', '.join((*TERMINAL_STATUSES, *ACTIVE_STATUSES))}.")
    if status in ACTIVE_STATUSES:
        status = INTERRUPTED  # nothing generates it here: it can be continued
    error = _field(record, "error", str, where, default=None, nullable=True)
    model = _field(record, "model", str, where, default=None, nullable=True)
    if (error and len(error) > 500) or (model and len(model) > 200):
        raise ArchiveError(f"{where.capitalize()}'s 'error' or 'model' is too long.")
    usage = _field(record, "usage", dict, where, default=None, nullable=True)
    if usage is not None and not _usage_ok(usage):
        raise ArchiveError(f"{where.capitalize()}'s 'usage' token counts must be whole "
                           "numbers, and 'estimated' true or false.")
    timings = _field(record, "timings", dict, where, default={}, nullable=True) or {}
    ttft, duration = timings.get("ttft_ms"), timings.get("duration_ms")
    thought = timings.get("reasoning_ms")
    for value in (ttft, duration, thought):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 0 <= value < 2**31):
            raise ArchiveError(f"{where.capitalize()}'s 'timings' must be whole milliseconds.")
    reasoning = _field(record, "reasoning", str, where, default=None, nullable=True)
    if reasoning is not None and len(reasoning) > MAX_MESSAGE_CHARS:
        raise ArchiveError(f"{where.capitalize()}'s 'reasoning' must be text of at most "
                           f"{MAX_MESSAGE_CHARS} characters.")
    steps = _steps(_field(record, "steps", list, where, default=None, nullable=True), where)
    created = _parse_time(record.get("created_at"), where) or now
    return Message(thread_id=thread_id, role=role, content=content, status=status,
                   error=error, model=model, usage=usage, ttft_ms=ttft, duration_ms=duration,
                   reasoning=reasoning or None, steps=steps, reasoning_ms=thought,
                   created_at=created, updated_at=now)


def _usage_ok(usage: dict) -> bool:
    """Counts that totals can add up (llm.usage), on every database."""
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = usage.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 0 <= value < 2**31):
            return False
    return isinstance(usage.get("estimated", False), bool)


MAX_STEPS = 200
STEP_STATUSES = ("ok", "error", "aborted", "running")


def _steps(steps: list | None, where: str) -> list[dict] | None:
    """A reply's tool steps, checked field by field; a step still running is stopped."""
    if not steps:
        return None
    problem = f"{where.capitalize()}'s 'steps' must be a list of at most {MAX_STEPS} " \
              "{name, arguments, result, status} objects."
    if len(steps) > MAX_STEPS:
        raise ArchiveError(problem)
    checked = []
    for step in steps:
        if not isinstance(step, dict) or step.get("status") not in STEP_STATUSES:
            raise ArchiveError(problem)
        fields = [step.get("name"), step.get("arguments")]
        result = step.get("result")
        if not all(isinstance(f, str) and not _not_text(f) and len(f) <= MAX_MESSAGE_CHARS
                   for f in fields) or not (result is None or isinstance(result, str)
                                            and not _not_text(result)
                                            and len(result) <= MAX_MESSAGE_CHARS):
            raise ArchiveError(problem)
        status = "aborted" if step["status"] == "running" else step["status"]
        checked.append({"name": fields[0], "arguments": fields[1], "result": result,
                        "status": status})
    return checked


_MISSING = object()
KIND_NAMES = {str: "a string", dict: "an object", list: "a list", bool: "true or false"}


def _field(record: dict, name: str, kind: type, where: str, *, default: Any = _MISSING,
           nullable: bool = False) -> Any:
    value = record.get(name, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise ArchiveError(f"'{name}' is missing from {where}.")
        return default
    if value is None and nullable:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ArchiveError(f"'{name}' of {where} must be {KIND_NAMES[kind]}.")
    if kind is str and _not_text(value):
        raise ArchiveError(f"'{name}' of {where} is not valid Unicode text.")
    return value


def _parse_time(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise ArchiveError(f"'created_at' of {where} must be an ISO 8601 time.")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _has_controls(value: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in value)


def _not_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" is valid JSON)
        return True
    return "\x00" in value  # PostgreSQL text cannot hold NUL
