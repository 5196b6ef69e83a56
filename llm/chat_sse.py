"""The Chat Completions streaming wire format, read straight from the response bytes.

OpenAI-compatible servers send `data: <json>` events separated by blank lines and end
with `data: [DONE]`. Reading them here costs a split and one `json.loads` per event,
where the SDK's own stream builds a typed object for every chunk.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

DONE = b"[DONE]"


class StreamErrorEvent(Exception):
    """The server reported an error inside the stream (`{"error": {...}}`)."""

    def __init__(self, body: Any) -> None:
        super().__init__("error event")
        self.body = body


def events(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The data of each event in a byte stream, up to `[DONE]` (per the SSE rules: lines
    end in LF, CRLF or CR; `data:` lines join with LF; other fields and comments are
    skipped; a last event without its blank line still counts)."""
    pending = b""
    data: list[bytes] = []
    # Read by hand, not through a wrapping generator: returning at [DONE] must leave the
    # byte stream open, so the caller can read the rest and reuse the connection.
    source = iter(chunks)
    while True:
        chunk = next(source, None)
        if chunk is None:  # the end: whatever is left is the last line
            lines, pending = [*_split(pending), b""], b""
        else:
            pending += chunk
            # A CR at the very end may be the first half of a CRLF still in flight.
            if pending.endswith(b"\r"):
                continue
            *lines, pending = _split(pending)
        for line in lines:
            if not line:
                if data:
                    payload = data[0] if len(data) == 1 else b"\n".join(data)
                    data = []
                    if payload == DONE:
                        return
                    yield payload
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
        if chunk is None:
            return


def _split(text: bytes) -> list[bytes]:
    if b"\r" in text:
        text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return text.split(b"\n")


def chunks(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Each `chat.completion.chunk` as a dict; raises StreamErrorEvent for an error event
    and ValueError for anything that is not a JSON object."""
    for payload in events(chunks):
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("a stream event is not a JSON object")
        if data.get("error"):
            raise StreamErrorEvent(data["error"])
        yield data
