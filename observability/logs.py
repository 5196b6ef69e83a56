"""Structured logs (LOG_FORMAT=json): one JSON object per line, for Relay and gunicorn alike.

A line carries the time, level, logger and message, and what is known of where it came
from: the request id, the route (its URL rule, never the raw path), the message id and the
owner as a short keyed hash. An exception is logged as its type and the code locations it
passed through, never its text or locals (they can hold a prompt or a query's parameters),
and any configured secret that still slips into a line is replaced by `[redacted]`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import traceback
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

# The reply a greenlet works for (set by the generation greenlet); requests name theirs
# through their URL instead.
current_message: ContextVar[int | None] = ContextVar("relay_current_message", default=None)

# Settings whose values must never reach a log line.
SECRET_SETTINGS = ("SECRET_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY",
                   "METRICS_TOKEN")
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
MIN_SECRET_CHARS = 8  # shorter values would redact ordinary words


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON; `context()` adds what the caller's state knows."""

    def __init__(self, context: Callable[[], dict[str, Any]] | None = None,
                 secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self._context = context
        self._secrets = sorted({s for s in (*secrets, *_environment_secrets()) if s and
                                len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(), "pid": record.process}
        if self._context is not None:
            with contextlib.suppress(Exception):  # a line is never lost to its context
                line.update(self._context())
        message = current_message.get()
        if message is not None:
            line.setdefault("message_id", message)
        line.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS})
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["exc_at"] = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                              for f in traceback.extract_tb(record.exc_info[2])][-8:]
        text = json.dumps(line, default=str, ensure_ascii=False)
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text


def _environment_secrets() -> list[str | None]:
    return [os.environ.get(name) for name in SECRET_SETTINGS]


def configure_logging(log_format: str, *, level: int = logging.INFO,
                      context: Callable[[], dict[str, Any]] | None = None,
                      secrets: Iterable[str | None] = ()) -> None:
    """Relay's own logging to stderr: `text` as it always was, or `json`."""
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter(context, secrets))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level)
        logging.captureWarnings(True)  # warnings too, as JSON lines
    else:
        logging.basicConfig(level=level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def log_greenlet_errors() -> None:
    """gevent prints a greenlet's uncaught exception to stderr as text: log it instead."""
    import gevent

    logger = logging.getLogger("gevent")

    def print_exception(context, kind, error, tb) -> None:
        name = getattr(kind, "__name__", str(kind))
        logger.error("uncaught %s in a greenlet", name,
                     exc_info=(kind, error, tb) if error is not None else None)

    gevent.get_hub().print_exception = print_exception
