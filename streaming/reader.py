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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delta:
    """New text of the reply; `end` is the offset right after it."""

    text: str
    end: int


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


ReadItem = Delta | Terminal | Idle | Queued


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


def read_live(generation: Generation, cursor: int, *, idle_s: float) -> Iterator[ReadItem]:
    """Every token of a generation in this worker after `cursor`, as it arrives."""
    while True:
        if cursor < generation.end:
            end = generation.end
            yield Delta(generation.text_between(cursor, end), end)
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


def read_persisted(session_factory: Callable[[], Session], message_id: int, cursor: int, *,
                   subscribe: Callable[[], Subscription], local: Callable[[], Generation | None],
                   poll_s: float, idle_s: float, clock: Callable[[], float],
                   stopping: GeventEvent | None = None,
                   queued: Callable[[], int | None] = lambda: None) -> Iterator[ReadItem]:
    """A reply generated elsewhere: persisted deltas after `cursor`, then each new flush.

    Woken by the hub's `persisted` notices for this message; re-reads the database at
    least every `poll_s` so it never depends on a notice arriving. Switches to the live
    generation if it turns out to run in this worker.
    """
    with subscribe() as subscription:
        last_sent = clock()
        shown_ahead: int | None = None
        while stopping is None or not stopping.is_set():  # shutting down: the client reconnects
            generation = local()
            if generation is not None:
                yield from read_live(generation, cursor, idle_s=idle_s)
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
                    text = persisted_text_after(session, message, cursor)
                    terminal = message.is_terminal
            except (DBAPIError, PoolTimeout) as err:
                # The database is briefly away: keep the stream open and look again.
                log.info("reading message %s failed, retrying: %s", message_id, err)
                text, terminal = "", False
            if text:
                cursor += len(text)
                last_sent = clock()
                yield Delta(text, cursor)
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
