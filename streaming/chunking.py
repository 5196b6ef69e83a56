"""Where the delta writer may cut pending reply text into chunks.

A chunker maps the pending (not yet persisted) text to how many code points from its start
form complete chunks that may be flushed now. It runs on every writer tick for every stream,
so each built-in mode is one linear pass, mostly in C (str methods, one regex search).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["CHUNK_MODES", "Chunker", "make_chunker"]

CHUNK_MODES = ("word", "line", "sentence", "paragraph")

_VALID_SPECS = (
    "'word', 'line', 'sentence', 'paragraph', 're:<regex>', "
    "a positive byte count such as '64' or 64, or a callable"
)

_SENTENCE_ENDS = ".!?\u2026"
_CLOSERS = "\"')]}\u00bb\u2019\u201d\u203a"

# The boundary searches run on the reversed text, so the first match found is the last
# boundary in the original and the scan usually stops near the end of the pending text.
# Possessive quantifiers and the lookbehind make every candidate start at the edge of a run
# and never backtrack, which keeps long runs of spaces or dots linear.
#
# Sentence (reversed): a whole whitespace run, optional closing quotes/brackets, a sentence end.
_SENTENCE_REVERSED = re.compile(
    rf"(?<!\s)\s++[{re.escape(_CLOSERS)}]*+[{re.escape(_SENTENCE_ENDS)}]"
)
# Paragraph (reversed): the LF ending a whitespace-only line, that line, and the LF before it.
_BLANK_LINE_REVERSED = re.compile(r"\n[^\S\n]*+\n")


@dataclass(frozen=True)
class Chunker:
    """A named cut function; calling it returns a flushable length within ``[0, len(text)]``."""

    spec: str
    cut: Callable[[str], int] = field(repr=False)

    def __call__(self, text: str) -> int:
        return self.cut(text)


def _cut_word(text: str) -> int:
    if not text or text[-1].isspace():
        return len(text)
    # rsplit(None, 1) splits on the last whitespace run, in C; its last piece is the partial
    # word that has to wait (the whole text if there is no whitespace at all).
    return len(text) - len(text.rsplit(None, 1)[-1])


def _cut_line(text: str) -> int:
    return text.rfind("\n") + 1


def _cut_sentence(text: str) -> int:
    newline_cut = text.rfind("\n") + 1
    match = _SENTENCE_REVERSED.search(text[::-1])
    sentence_cut = len(text) - match.start() if match else 0
    return max(newline_cut, sentence_cut)


def _cut_paragraph(text: str) -> int:
    match = _BLANK_LINE_REVERSED.search(text[::-1])
    return len(text) - match.start() if match else 0


def _byte_cutter(n: int) -> Callable[[str], int]:
    def cut(text: str) -> int:
        if text.isascii():  # one byte per code point: no decoding needed
            return len(text) - len(text) % n
        # surrogatepass keeps a stray surrogate countable (3 bytes) instead of failing a tick.
        data = text.encode("utf-8", "surrogatepass")
        limit = len(data) - len(data) % n
        if limit == len(data):
            return len(text)
        # Back off to the start of the code point that straddles the limit: continuation
        # bytes look like 0b10xxxxxx.
        while limit and data[limit] & 0xC0 == 0x80:
            limit -= 1
        return len(data[:limit].decode("utf-8", "surrogatepass"))

    return cut


def _regex_cutter(pattern: str) -> Callable[[str], int]:
    if not pattern:
        raise ValueError("invalid chunk spec 're:': the regex is empty")
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"invalid chunk regex {pattern!r}: {err}") from None

    def cut(text: str) -> int:
        end = 0
        for match in regex.finditer(text):
            if match.end() > match.start():
                end = match.end()
        return end

    return cut


def _checked(fn: Callable[[str], int]) -> Callable[[str], int]:
    def cut(text: str) -> int:
        result = fn(text)
        if not isinstance(result, int) or isinstance(result, bool):
            raise ValueError(
                f"chunker {fn!r} returned {result!r} ({type(result).__name__}); expected an int"
            )
        if not 0 <= result <= len(text):
            raise ValueError(
                f"chunker {fn!r} returned {result}; expected 0..{len(text)} "
                "(the length of the pending text)"
            )
        return result

    return cut


_NAMED = {
    "word": _cut_word,
    "line": _cut_line,
    "sentence": _cut_sentence,
    "paragraph": _cut_paragraph,
}


def make_chunker(spec: str | int | Callable[[str], int]) -> Chunker:
    """Return the chunker for ``spec``; raise ValueError naming the valid modes if it is bad."""
    if isinstance(spec, bool):
        raise ValueError(f"invalid chunk spec {spec!r}: expected {_VALID_SPECS}")
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"invalid chunk spec {spec!r}: expected {_VALID_SPECS}")
        return Chunker(str(spec), _byte_cutter(spec))
    if isinstance(spec, str):
        if spec[:3].lower() == "re:":
            # The pattern is taken verbatim: whitespace in it may be significant.
            return Chunker(f"re:{spec[3:]}", _regex_cutter(spec[3:]))
        name = spec.strip().lower()
        if name in _NAMED:
            return Chunker(name, _NAMED[name])
        if name.isascii() and name.isdigit() and int(name) >= 1:
            return Chunker(str(int(name)), _byte_cutter(int(name)))
        raise ValueError(f"invalid chunk spec {spec!r}: expected {_VALID_SPECS}")
    if callable(spec):
        return Chunker(getattr(spec, "__name__", repr(spec)), _checked(spec))
    raise ValueError(f"invalid chunk spec {spec!r}: expected {_VALID_SPECS}")
