"""A reply's parts besides its text (reasoning, tool steps) and the one cursor over all.

The cursor is how much of each part a client has: `T` code points of the answer text,
`R` code points of the reasoning, `S` step events (each tool step makes two: it starts,
it ends). While a reply is text only it is written as the plain offset `T`, exactly the
text-only contract; once the reply has reasoning or steps it is written `T.R.S`. Both
forms are read back.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

RUNNING = "running"
STEP_STATUSES = ("running", "ok", "error", "aborted")
MAX_CURSOR_DIGITS = 12
_NUMBER = rf"(\d{{1,{MAX_CURSOR_DIGITS}}})"
_COMPOUND = re.compile(rf"{_NUMBER}\.{_NUMBER}\.{_NUMBER}", re.ASCII)
_PLAIN = re.compile(_NUMBER, re.ASCII)


class Cursor(NamedTuple):
    """How much of each part of a reply a reader has."""

    text: int = 0
    reasoning: int = 0
    steps: int = 0

    def __str__(self) -> str:
        if self.reasoning == 0 and self.steps == 0:
            return str(self.text)
        return f"{self.text}.{self.reasoning}.{self.steps}"

    def exceeds(self, limit: Cursor) -> bool:
        return self.text > limit.text or self.reasoning > limit.reasoning or \
            self.steps > limit.steps


def parse_cursor(raw: str) -> Cursor | None:
    """`T` or `T.R.S` (ASCII digits), else None."""
    if _PLAIN.fullmatch(raw):
        return Cursor(int(raw))
    match = _COMPOUND.fullmatch(raw)
    if match is None:
        return None
    return Cursor(*(int(group) for group in match.groups()))


def step_event_count(steps: list[dict[str, Any]] | None) -> int:
    """How many step events `steps` have made: one per step, two once it has ended."""
    return sum(1 if step.get("status") == RUNNING else 2 for step in steps or ())


def step_event(steps: list[dict[str, Any]], number: int) -> dict[str, Any]:
    """Step event `number` (0-based): the step as it was when it started, or as it ended."""
    seen = 0
    for index, step in enumerate(steps):
        size = 1 if step.get("status") == RUNNING else 2
        if number < seen + size:
            if number == seen:  # it starts: name and arguments, no result yet
                return {"index": index, "name": step.get("name"),
                        "arguments": step.get("arguments"), "result": None,
                        "status": RUNNING}
            return {"index": index, **step}
        seen += size
    raise IndexError(number)


def cursor_of(content: str, reasoning: str | None, steps: list[dict[str, Any]] | None) -> Cursor:
    """Where a reader that has all of these parts stands."""
    return Cursor(len(content), len(reasoning or ""), step_event_count(steps))
