"""Server-Sent Events encoding for Relay's reply streams.

The wire format produced here is a public contract: browsers (EventSource via the htmx SSE
extension) and the bench client parse it, and every delta must round-trip exactly:

    decode_delta("\\n".join(data lines of the parsed event)) == original text

Event data is HTML text, so htmx can append it with ``beforeend`` without further processing.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

__all__ = [
    "DELTA_EVENT",
    "ServerSentEvent",
    "comment",
    "decode_delta",
    "delta_event",
    "escape_text",
    "reasoning_event",
    "step_event",
]

DELTA_EVENT = "delta"
REASONING_EVENT = "reasoning"
STEP_EVENT = "step"

# One pass with str.translate: escaping "&" first is then implicit, and no output is re-escaped.
# CR becomes a character reference because SSE treats a bare CR as a line terminator; LF is
# left alone because the encoder turns it into a new "data:" line, which the parser joins
# back with LF.
_TEXT_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "'": "&#39;",
        "\r": "&#13;",
    }
)

# Characters that would end or corrupt a single-line field ("id:", "event:", comments).
_LINE_BREAKERS = ("\r", "\n", "\0")


def escape_text(text: str) -> str:
    """Return ``text`` as HTML text: ``& < > " '`` and CR become entities, LF is kept."""
    return text.translate(_TEXT_ESCAPES)


def decode_delta(data: str) -> str:
    """Return the original text of a delta's data (the exact inverse of ``escape_text``)."""
    return html.unescape(data)


def _check_single_line(name: str, value: str) -> None:
    for ch in _LINE_BREAKERS:
        if ch in value:
            raise ValueError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")


@dataclass(frozen=True)
class ServerSentEvent:
    """One SSE event; ``str()`` is its exact wire form, ending with the blank line."""

    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    def __post_init__(self) -> None:
        if self.event is not None:
            _check_single_line("event", self.event)
        if self.id is not None:
            _check_single_line("id", self.id)
        if self.retry is not None and (
            not isinstance(self.retry, int) or isinstance(self.retry, bool) or self.retry < 0
        ):
            # The parser ignores a retry value that is not all ASCII digits, so reject it here.
            raise ValueError(f"SSE retry must be a non-negative int, got {self.retry!r}")

    def __str__(self) -> str:
        parts: list[str] = []
        if self.retry is not None:
            parts.append(f"retry: {self.retry}\n")
        if self.event is not None:
            parts.append(f"event: {self.event}\n")
        if self.id is not None:
            parts.append(f"id: {self.id}\n")
        # A CR left in the HTML would end the line early; as a character reference it renders
        # the same and decodes back to CR. The space after "data:" is always written so that a
        # line starting with a space keeps it (the parser strips exactly one).
        data = self.data.replace("\r", "&#13;")
        parts.extend(f"data: {line}\n" for line in data.split("\n"))
        parts.append("\n")
        return "".join(parts)

    def encode(self) -> bytes:
        """Return the wire form as UTF-8 bytes (raises UnicodeEncodeError on lone surrogates)."""
        return str(self).encode("utf-8")


def delta_event(text: str, end: object) -> ServerSentEvent:
    """Return the ``delta`` event carrying ``text`` whose last character is at offset ``end``
    (or, for a reply with reasoning or steps, the compound cursor after it)."""
    return ServerSentEvent(data=escape_text(text), event=DELTA_EVENT, id=str(end))


def reasoning_event(text: str, cursor: object) -> ServerSentEvent:
    """Return the ``reasoning`` event: more of the model's thinking, as HTML text like a
    delta's; ``cursor`` is where the reader stands after it."""
    return ServerSentEvent(data=escape_text(text), event=REASONING_EVENT, id=str(cursor))


def step_event(step: dict, cursor: object) -> ServerSentEvent:
    """Return the ``step`` event: a tool step started or ended, as one line of JSON
    (``index``, ``name``, ``arguments``, ``result``, ``status``)."""
    return ServerSentEvent(data=json.dumps(step, separators=(",", ":")),
                           event=STEP_EVENT, id=str(cursor))


def comment(text: str = "keep-alive") -> str:
    """Return the comment block ``": <text>\\n\\n"``, which parsers ignore (keeps links alive)."""
    _check_single_line("comment", text)
    return f": {text}\n\n"
