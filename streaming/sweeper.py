"""The sweeper: every worker looks for replies whose generator died, and prompts never started."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from llm.usage import add_usage, estimate_usage
from models import INTERRUPTED, PENDING, STREAMING, Message, StreamDelta, utcnow
from observability.metrics import NullMetrics

from .history import build_history
from .parts import RUNNING
from .periodic import Periodic
from .reader import persisted_text_after

log = logging.getLogger(__name__)

INTERRUPTED_REASON = "The server handling this reply stopped; the text up to that point is kept."
ESTIMATE_HISTORY_MESSAGES = 40  # the history an interrupted reply's estimate counts as its prompt


class Sweeper:
    """Marks stale streaming replies `interrupted` (keeping every flushed character) and
    starts pending replies that no worker ever claimed."""

    def __init__(self, session_factory: Callable[[], Session], *, stale_after_s: float,
                 unclaimed_after_s: float, interval_s: float,
                 publish: Callable[[int, dict], None],
                 start: Callable[[int], object],
                 metrics: NullMetrics | None = None,
                 now: Callable[[], dt.datetime] = utcnow) -> None:
        self._session_factory = session_factory
        self.stale_after_s = stale_after_s
        self.unclaimed_after_s = unclaimed_after_s
        self._publish = publish
        self._start = start
        self._metrics = metrics or NullMetrics()
        self._now = now
        # Jitter spreads the workers' sweeps apart.
        self._periodic = Periodic(self.sweep, interval_s, name="sweep", jitter=0.25)

    def start(self) -> None:
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    def sweep(self) -> tuple[list[int], list[int]]:
        """One pass: (ids marked interrupted, ids started here)."""
        return self._interrupt_stale(), self._start_unclaimed()

    def _interrupt_stale(self) -> list[int]:
        cutoff = self._now() - dt.timedelta(seconds=self.stale_after_s)
        with self._session_factory() as session:
            stale = list(session.scalars(select(Message.id).where(
                Message.status == STREAMING, Message.heartbeat_at < cutoff)))
        interrupted = []
        for message_id in stale:
            with self._session_factory() as session, session.begin():
                message = session.get(Message, message_id)
                if message is None or message.status != STREAMING:
                    continue
                text = persisted_text_after(session, message, 0)
                # Its worker died before the model's counts came: estimate them (a continued
                # reply's `content` is the part written, and counted, before).
                usage = add_usage(message.usage, estimate_usage(
                    build_history(session, message, system_prompt=None,
                                  limit=ESTIMATE_HISTORY_MESSAGES),
                    text[len(message.content):]))
                # A tool step its worker was running when it died ends with the reply.
                steps = {"steps": [{**step, "status": "aborted"} if step.get("status") ==
                                   RUNNING else step for step in message.steps]} \
                    if message.steps else {}
                # Only if still stale: a live writer's flush refreshes the heartbeat in the
                # same transaction as its deltas, so it can never lose text to us.
                result = session.execute(
                    update(Message)
                    .where(Message.id == message_id, Message.status == STREAMING,
                           Message.heartbeat_at < cutoff)
                    .values(status=INTERRUPTED, content=text, error=INTERRUPTED_REASON,
                            usage=usage, cancel_requested=False, **steps))
                if result.rowcount != 1:
                    continue
                session.execute(delete(StreamDelta).where(StreamDelta.message_id == message_id))
                thread_id = message.thread_id
                end = len(text)
            interrupted.append(message_id)
            self._metrics.reply_ended(INTERRUPTED, "stale")  # its worker died
            log.warning("message %s had no heartbeat for %.0f s: marked interrupted at %d chars",
                        message_id, self.stale_after_s, end)
            self._publish(thread_id, {"type": "persisted", "message": message_id, "end": end,
                                      "status": INTERRUPTED})
        return interrupted

    def _start_unclaimed(self) -> list[int]:
        cutoff = self._now() - dt.timedelta(seconds=self.unclaimed_after_s)
        with self._session_factory() as session:
            waiting = list(session.scalars(select(Message.id).where(
                Message.status == PENDING, Message.role == "assistant",
                Message.updated_at < cutoff)))
        started = [message_id for message_id in waiting if self._start(message_id) is not None]
        for message_id in started:
            log.warning("message %s was never started by its worker: started here", message_id)
        return started
