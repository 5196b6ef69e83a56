"""Reading a reply from any offset: from the live generation, or from the database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gevent.event import Event as GeventEvent
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from models import Message, StreamDelta

from .generation import Generation
from .hub import Subscription, concerns
from .parts import Cursor, step_event, step_event_count

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delta:
    """New text of the reply; `end` is the offset right after it. `cursor`: where the
    reader stands in every part, set once the reply has more than text."""

    text: str
    end: int
    cursor: Cursor | None = None


@dataclass(frozen=True)
class Reasoning:
    """New reasoning text of the reply; `cursor` is where the reader stands after it."""

    text: str
    cursor: Cursor


@dataclass(frozen=True)
class StepEvent:
    """A tool step started or ended: `step` is {index, name, arguments, result, status}."""

    step: dict
    cursor: Cursor


@dataclass(frozen=True)
class Terminal:
    """The reply ended; the message row holds its final state."""

    message_id: int


@dataclass(frozen=True)
class Idle:
    """Nothing new for a while: a good moment to keep the connection alive."""


@dataclass(frozen=True)
class Queued:
    """The reply waits for a free slot in this worker; `ahead` replies start before it."""

    ahead: int


ReadItem = Delta | Reasoning | StepEvent | Terminal | Idle | Queued


class CursorError(ValueError):
    """The cursor points past the end of what the reply holds."""


def persisted_text_after(session: Session, message: Message, cursor: int) -> str:
    """The persisted text after `cursor`: the final content, or earlier content then deltas."""
    if message.is_terminal:
        return message.content[cursor:]
    base = message.content  # a continued reply's earlier text; "" for a new one
    out = [base[cursor:]] if cursor < len(base) else []
    expected = len(base)
    deltas = session.execute(
        select(StreamDelta.start, StreamDelta.end, StreamDelta.text)
        .where(StreamDelta.message_id == message.id, StreamDelta.end > max(cursor, len(base)))
        .order_by(StreamDelta.start)).all()
    for start, end, text in deltas:
        if start > max(expected, cursor):
            break  # never read past a hole: the contiguous prefix is all that is certain
        out.append(text[max(0, cursor - start):])
        expected = end
    return "".join(out)


def read_live(generation: Generation, cursor: int | Cursor, *,
              idle_s: float) -> Iterator[ReadItem]:
    """Every token of a generation in this worker after `cursor`, as it arrives: reasoning
    and tool steps first, then the answer's text."""
    if isinstance(cursor, Cursor):
        cursor, thought, stepped = cursor
    else:
        thought = stepped = 0
    while True:
        if generation.has_parts:
            if thought < len(generation.reasoning):
                new = generation.reasoning[thought:]
                thought += len(new)
                yield Reasoning(new, Cursor(cursor, thought, stepped))
                continue
            if stepped < generation.step_events:
                event = generation.step_event(stepped)
                stepped += 1
                yield StepEvent(event, Cursor(cursor, thought, stepped))
                continue
        if cursor < generation.end:
            end = generation.end
            yield Delta(generation.text_between(cursor, end), end,
                        Cursor(end, thought, stepped) if thought or stepped else None)
            cursor = end
            continue
        if generation.done:
            # The terminal event is sent only once the final state is committed, so a
            # reload right after `done` shows the finished message.
            while not generation.finalized.wait(idle_s):
                yield Idle()
            yield Terminal(generation.message_id)
            return
        if not generation.wait_for_change(idle_s):
            yield Idle()


def persisted_parts_after(message: Message, thought: int,
                          stepped: int) -> tuple[str, list[dict]]:
    """The reasoning after `thought` and the step events after `stepped` the row holds."""
    reasoning = (message.reasoning or "")[thought:]
    steps = message.steps or []
    return reasoning, [step_event(steps, n) for n in range(stepped, step_event_count(steps))]


def read_persisted(session_factory: Callable[[], Session], message_id: int,
                   cursor: int | Cursor, *,
                   subscribe: Callable[[], Subscription], local: Callable[[], Generation | None],
                   poll_s: float, idle_s: float, clock: Callable[[], float],
                   stopping: GeventEvent | None = None,
                   queued: Callable[[], int | None] = lambda: None) -> Iterator[ReadItem]:
    """A reply generated elsewhere: persisted deltas after `cursor`, then each new flush.

    Woken by the hub's `persisted` notices for this message; re-reads the database at
    least every `poll_s` so it never depends on a notice arriving. Switches to the live
    generation if it turns out to run in this worker.
    """
    if isinstance(cursor, Cursor):
        cursor, thought, stepped = cursor
    else:
        thought = stepped = 0
    with subscribe() as subscription:
        last_sent = clock()
        shown_ahead: int | None = None
        while stopping is None or not stopping.is_set():  # shutting down: the client reconnects
            generation = local()
            if generation is not None:
                yield from read_live(generation, Cursor(cursor, thought, stepped),
                                     idle_s=idle_s)
                return
            ahead = queued()
            if ahead is not None and ahead != shown_ahead:
                shown_ahead, last_sent = ahead, clock()
                yield Queued(ahead)
            try:
                with session_factory() as session:
                    message = session.get(Message, message_id)
                    if message is None:
                        return
                    # The row first: its reasoning and steps are never ahead of the text
                    # read after it, and each part is a prefix of what it will be.
                    reasoning, step_events = persisted_parts_after(message, thought, stepped)
                    text = persisted_text_after(session, message, cursor)
                    terminal = message.is_terminal
            except (DBAPIError, PoolTimeout) as err:
                # The database is briefly away: keep the stream open and look again.
                log.info("reading message %s failed, retrying: %s", message_id, err)
                text, terminal, reasoning, step_events = "", False, "", []
            if reasoning:
                thought += len(reasoning)
                last_sent = clock()
                yield Reasoning(reasoning, Cursor(cursor, thought, stepped))
            for event in step_events:
                stepped += 1
                last_sent = clock()
                yield StepEvent(event, Cursor(cursor, thought, stepped))
            if text:
                cursor += len(text)
                last_sent = clock()
                yield Delta(text, cursor,
                            Cursor(cursor, thought, stepped) if thought or stepped else None)
            if terminal:
                yield Terminal(message_id)
                return
            if clock() - last_sent >= idle_s:
                last_sent = clock()
                yield Idle()
            _wait_for_message(subscription, message_id, min(poll_s, idle_s), clock)


def _wait_for_message(subscription: Subscription, message_id: int, timeout: float,
                      clock: Callable[[], float]) -> None:
    """Return on a notice about `message_id`, or once `timeout` has passed."""
    deadline = clock() + timeout
    while (remaining := deadline - clock()) > 0:
        event = subscription.get(timeout=remaining)
        if event is None or concerns(event, message_id):
            return
