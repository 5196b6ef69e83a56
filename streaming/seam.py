"""Where a continued reply meets its earlier text: no repeated words, no glued words.

A chat model asked to go on from a partial reply sometimes starts by repeating its last
words, or starts its first word without the space the seam needs. The first characters of
the continuation are held back until it is clear which, then passed on mended; everything
after them streams untouched. Text already shown is never changed.
"""

from __future__ import annotations

from collections.abc import Iterator

from llm.base import Chunk

LOOKAHEAD_CHARS = 80  # what is held back at most before the seam is decided
MIN_REPEAT_CHARS = 12  # shorter overlaps are as likely to be chance as a repeat
MAX_REPEAT_CHARS = 400
ENDS_CLAUSE = ".,;:!?)]"


def mend_seam(partial: str, start: str, *, complete: bool = False) -> str:
    """The continuation's first characters `start`, mended to follow `partial`.

    `complete`: `start` is the whole continuation (it ended before the lookahead filled).
    """
    if not partial or not start:
        return start
    body = start.lstrip()
    said = partial.rstrip()
    limit = min(len(body), len(said), MAX_REPEAT_CHARS)
    for size in range(limit, MIN_REPEAT_CHARS - 1, -1):
        repeat = body[:size]
        # A repeat runs from a word's start in the partial to a word's end in the new text.
        starts_word = size == len(said) or said[-size - 1].isspace()
        ends_word = size == len(body) and complete or size < len(body) and not \
            body[size].isalnum()
        if starts_word and ends_word and said.endswith(repeat):
            start = body[size:]
            if not start:
                return ""
            break
    if partial[-1].isspace():
        # The partial already ends with the space: no second one (a new line is kept).
        return start.lstrip(" \t") if start[0] in " \t" else start
    if start[0].isspace():
        return start
    if start[0].isalnum() and (partial[-1] in ENDS_CLAUSE or
                               partial[-1].isalnum() and start[0].isupper()):
        return " " + start  # a new word after a finished word or clause
    return start


def _decided(said_tail: str, start: str) -> bool:
    """Whether more text could still change what mend_seam makes of `start`."""
    body = start.lstrip()
    if len(start) >= LOOKAHEAD_CHARS:
        return True
    # A longer repeat would have to contain all of it, so it would appear in the partial.
    return len(body) >= MIN_REPEAT_CHARS and body not in said_tail


def join_continuation(partial: str, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """`chunks` of a continuation of `partial`, its first characters mended (mend_seam).

    Text is held back only until the seam is decided (usually a few words). A failure
    still passes on what was held; closing this generator closes `chunks` (and with it
    the upstream response).
    """
    said_tail = partial.rstrip()[-MAX_REPEAT_CHARS:]
    held = ""
    later: list[Chunk] = []  # a finish reason or usage that came while text was held back
    deciding = True
    try:
        for chunk in chunks:
            if not deciding:
                yield chunk
                continue
            held += chunk.text
            if chunk.finish_reason or chunk.usage:
                later.append(Chunk(finish_reason=chunk.finish_reason, usage=chunk.usage,
                                   streamed=chunk.streamed))
            if _decided(said_tail, held):
                deciding = False
                if mended := mend_seam(partial, held):
                    yield Chunk(text=mended)
                yield from later
        if deciding:
            deciding = False
            if mended := mend_seam(partial, held, complete=True):
                yield Chunk(text=mended)
            yield from later
    except Exception:
        if deciding and (mended := mend_seam(partial, held)):
            yield Chunk(text=mended)  # the model's text so far is kept, as any reply's is
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
