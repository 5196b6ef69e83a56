"""The delta writer: one per worker, one transaction per tick for every active reply."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from gevent.event import Event
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import STREAMING, Message, StreamDelta, thread_channel, utcnow

from .generation import Generation
from .hub import Hub

log = logging.getLogger(__name__)


@dataclass
class WriterStats:
    ticks: int = 0
    commits: int = 0
    deltas: int = 0
    finalized: int = 0
    failures: int = 0
    # Seconds between the starts of consecutive ticks while replies are active (recent).
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=1024))

    def gaps_ms(self) -> dict[str, float | int | None]:
        """The tick schedule as kept: p50, p99 and max of the recent gaps, in ms."""
        gaps = sorted(self.gaps)
        if not gaps:
            return {"n": 0, "p50": None, "p99": None, "max": None}

        def at(q: float) -> float:
            return round(gaps[min(len(gaps) - 1, int(q * len(gaps)))] * 1000, 1)
        return {"n": len(gaps), "p50": at(0.5), "p99": at(0.99), "max": at(1.0)}


class DeltaWriter:
    """Group-commits the pending text of all active generations every `throttle_s`.

    Each stream's pending text is cut at its last chunk boundary; a stream with no boundary
    for `max_lag_s` is flushed whole so followers never stall. A finished generation's
    terminal state (content, status, usage, timings; deltas removed) is committed by the
    same writer, so a message's rows have one writer in this worker. A failed commit keeps
    everything in memory and is retried on the next tick.
    """

    def __init__(self, session_factory: Callable[[], Session], hub: Hub, *,
                 chunker: Callable[[str], int], throttle_s: float, max_lag_s: float,
                 heartbeat_s: float, clock: Callable[[], float],
                 throttle_max_s: float = 0.0, grow_chars: int = 2000,
                 on_finalized: Callable[[Generation], None] | None = None,
                 on_cancel: Callable[[Generation], None] | None = None,
                 autostart: bool = True) -> None:
        self._session_factory = session_factory
        self._hub = hub
        self._chunker = chunker
        self.throttle_s = throttle_s
        self.throttle_max_s = throttle_max_s
        self.grow_chars = max(1, grow_chars)
        self.max_lag_s = max_lag_s
        self.heartbeat_s = heartbeat_s
        self._clock = clock
        self._on_finalized = on_finalized
        self._on_cancel = on_cancel
        self._autostart = autostart  # False: the caller drives `tick()` (tests, tools)
        self._active: dict[int, Generation] = {}
        self._wake = Event()
        self._greenlet: gevent.Greenlet | None = None
        self.stats = WriterStats()

    # -- lifecycle --------------------------------------------------------------------
    def add(self, generation: Generation) -> None:
        was_idle = not self._active
        self._active[generation.message_id] = generation
        if self._autostart:
            self.ensure_running()
        if was_idle:
            self._wake.set()  # the loop may be parked with nothing to do: start ticking

    def wake(self) -> None:
        """Ask for a tick now (a generation ended); commits still group."""
        self._wake.set()

    def ensure_running(self) -> None:
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)

    def stop(self, timeout: float = 5.0) -> None:
        """Flush what can be flushed, then stop the loop."""
        self.tick()
        if self._greenlet is not None:
            self._greenlet.kill(timeout=timeout)
            self._greenlet = None

    def interval_for(self, gen: Generation) -> float:
        """How often a reply is flushed: every tick while short, less often as it grows
        (up to `throttle_max_s`), so long replies cost fewer rows and events."""
        if self.throttle_max_s <= self.throttle_s or gen.persisted_end == gen.start_offset:
            return 0.0  # off, or the first words: those go out at once
        grown = self.throttle_s * (1 + (gen.persisted_end - gen.start_offset) / self.grow_chars)
        return min(grown, self.throttle_max_s)

    @property
    def active_count(self) -> int:
        return len(self._active)

    def _run(self) -> None:
        last: float | None = None
        while True:
            if not self._active:
                # Idle: park until a generation is added instead of waking every tick.
                last = None
                self._wake.wait()
                self._wake.clear()
            # One tick per throttle period, or at once when a reply ends (`wake`). The
            # period runs from the last tick's start, so a slow tick does not stretch it.
            if last is not None:
                self._wake.wait(max(0.0, last + self.throttle_s - self._clock()))
            self._wake.clear()
            now = self._clock()
            if last is not None:
                self.stats.gaps.append(now - last)
            last = now
            try:
                self.tick()
            except Exception:  # never let one bad tick stop every stream's persistence
                log.exception("delta writer tick failed")

    # -- one tick ---------------------------------------------------------------------
    def tick(self) -> bool:
        """Commit what is due for every active generation; True when a commit happened."""
        self.stats.ticks += 1
        now = self._clock()
        flushes: list[tuple[Generation, int, str]] = []
        heartbeats: list[Generation] = []
        finals: list[Generation] = []
        parts: list[tuple[Generation, dict, int]] = []  # reasoning, steps, their events
        for gen in list(self._active.values()):
            if gen.done:
                finals.append(gen)
                continue
            # Due within half a tick counts as due: intervals fall between ticks.
            if now - gen.last_flush_at + self.throttle_s / 2 < self.interval_for(gen):
                pending = ""  # a long reply's own, longer interval has not passed yet
            else:
                pending = gen.text_between(gen.persisted_end, gen.end)
                if gen.has_parts and (gen.step_events != gen.persisted_step_events or
                                      len(gen.reasoning) != gen.persisted_reasoning_end):
                    parts.append((gen, _parts_of(gen), gen.step_events))
            cut = self._chunker(pending) if pending else 0
            if not cut and pending and now - gen.last_flush_at >= self.max_lag_s:
                cut = len(pending)
            if cut:
                flushes.append((gen, gen.persisted_end + cut, pending[:cut]))
            elif now - gen.last_heartbeat_at >= self.heartbeat_s and \
                    not (parts and parts[-1][0] is gen):
                heartbeats.append(gen)
        # A stop asked for in another worker arrives through the database: every tick looks,
        # so it lands within one throttle period even while the model is silent.
        running = [g.message_id for g in self._active.values() if not g.done]
        if not (flushes or heartbeats or finals or parts):
            if running:
                try:
                    with self._session_factory() as session:  # a read: nothing to commit
                        self._apply_cancels(_cancelled(session, running))
                except Exception as err:
                    log.warning("delta writer could not read stop requests: %s", err)
            return False

        wall = utcnow()
        cancelled: set[int] = set()
        try:
            with self._session_factory() as session, session.begin():
                if flushes:
                    session.execute(insert(StreamDelta), [
                        {"message_id": g.message_id, "start": g.persisted_end, "end": end,
                         "text": text} for g, end, text in flushes])
                for gen, values, _ in parts:  # their heartbeat too
                    session.execute(update(Message).where(Message.id == gen.message_id)
                                    .values(heartbeat_at=wall, **values))
                beating = [g.message_id for g, _, _ in flushes] + [g.message_id for g in heartbeats]
                if parts:
                    with_parts = {g.message_id for g, _, _ in parts}
                    beating = [m for m in beating if m not in with_parts]
                if beating:
                    session.execute(update(Message).where(Message.id.in_(beating))
                                    .values(heartbeat_at=wall))
                if running:
                    cancelled = _cancelled(session, running)
                for gen in finals:
                    self._finalize(session, gen, wall)
        except Exception as err:
            self.stats.failures += 1
            log.warning("delta writer commit failed, keeping %d streams in memory: %s",
                        len(flushes) + len(finals), err)
            if isinstance(err, IntegrityError):
                self._drop_deleted()
            return False

        self.stats.commits += 1
        self.stats.deltas += len(flushes)
        events = []  # one publish for the whole tick: a broker hears one batch
        for gen, end, _ in flushes:
            gen.persisted_end = end
            gen.last_flush_at = gen.last_heartbeat_at = now
            events.append((thread_channel(gen.thread_id),
                           {"type": "persisted", "message": gen.message_id, "end": end}))
        flushed = {gen.message_id for gen, _, _ in flushes}
        for gen, values, step_events in parts:
            gen.persisted_reasoning_end = len(values["reasoning"] or "")
            gen.persisted_step_events = step_events
            gen.last_heartbeat_at = now
            if gen.message_id not in flushed:  # followers hear of it as of a text flush
                events.append((thread_channel(gen.thread_id),
                               {"type": "persisted", "message": gen.message_id,
                                "end": gen.persisted_end}))
        for gen in heartbeats:
            gen.last_heartbeat_at = now
        self._apply_cancels(cancelled)
        for gen in finals:
            self._active.pop(gen.message_id, None)
            self.stats.finalized += 1
            gen.persisted_end = gen.end
            gen.finalized.set()
            events.append((thread_channel(gen.thread_id),
                           {"type": "persisted", "message": gen.message_id, "end": gen.end,
                            "status": gen.status}))
            if self._on_finalized is not None:
                self._on_finalized(gen)
        self._hub.publish_many(events)
        return True

    def _drop_deleted(self) -> None:
        """Stop and forget the generations whose message was deleted (its thread went):
        their rows can never be written, and must not hold back everyone else's."""
        try:
            with self._session_factory() as session:
                existing = set(session.scalars(
                    select(Message.id).where(Message.id.in_(list(self._active)))))
        except Exception as err:
            log.warning("delta writer could not look for deleted replies: %s", err)
            return
        for message_id in [m for m in self._active if m not in existing]:
            gen = self._active.pop(message_id)
            log.info("message %s was deleted while generating; dropping it", message_id)
            if not gen.done and self._on_cancel is not None:
                self._on_cancel(gen)
            gen.finalized.set()
            if self._on_finalized is not None:
                self._on_finalized(gen)

    def _apply_cancels(self, message_ids: set[int]) -> None:
        for message_id in message_ids:
            gen = self._active.get(message_id)
            if gen is not None and not gen.done and self._on_cancel is not None:
                self._on_cancel(gen)

    def _finalize(self, session: Session, gen: Generation, wall) -> None:
        timings = gen.timings()
        values = _parts_of(gen) if gen.has_parts else {}
        result = session.execute(
            update(Message)
            .where(Message.id == gen.message_id, Message.status == STREAMING)
            .values(content=gen.text, status=gen.status, error=gen.error, usage=gen.usage,
                    ttft_ms=timings["ttft_ms"], duration_ms=timings["duration_ms"],
                    heartbeat_at=wall, cancel_requested=False, streamed=gen.streamed,
                    **values))
        if result.rowcount == 0:
            # Someone else ended it meanwhile (a sweeper, a stop): keep their status, but
            # never drop text the reader could otherwise only find in the deltas.
            log.warning("message %s was no longer streaming when its reply ended",
                        gen.message_id)
            session.execute(update(Message).where(Message.id == gen.message_id)
                            .values(content=gen.text, usage=gen.usage, streamed=gen.streamed,
                                    **values))
        session.execute(delete(StreamDelta).where(StreamDelta.message_id == gen.message_id))


def _parts_of(gen: Generation) -> dict:
    """A snapshot of a reply's reasoning and steps for the database (the generation goes on
    changing them while the commit waits)."""
    return {"reasoning": gen.reasoning or None,
            "steps": [dict(step) for step in gen.steps] or None,
            "reasoning_ms": gen.reasoning_ms}


def _cancelled(session: Session, message_ids: list[int]) -> set[int]:
    """Which of these replies someone asked to stop."""
    return set(session.scalars(select(Message.id).where(
        Message.id.in_(message_ids), Message.cancel_requested.is_(True))))
