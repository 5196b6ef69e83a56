"""The delta writer: one per worker, one transaction per tick for every active reply."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from gevent.event import Event
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import STREAMING, Message, StreamDelta, thread_channel, utcnow
from observability.metrics import NullMetrics, reply_reason

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
                 metrics: NullMetrics | None = None,
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
        self._metrics = metrics or NullMetrics()
        self._tokens = 0  # tokens and first-token times not yet handed to the metrics
        self._ttfts: list[float] = []
        self._autostart = autostart  # False: the caller drives `tick()` (tests, tools)
        self._active: dict[int, Generation] = {}
        self._wake = Event()
        self._greenlet: gevent.Greenlet | None = None
        self.stats = WriterStats()
        # After a failed commit nobody knows whether it landed (the connection may have died
        # after COMMIT reached the server): what is persisted is read back before writing more.
        self._unsure = False

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
            started = time.perf_counter()
            try:
                self.tick()
            except Exception:  # never let one bad tick stop every stream's persistence
                log.exception("delta writer tick failed")
            self._metrics.writer_tick(time.perf_counter() - started)

    # -- one tick ---------------------------------------------------------------------
    def tick(self) -> bool:
        """Commit what is due for every active generation; True when a commit happened."""
        self.stats.ticks += 1
        if self._unsure and not self._resync():
            return False
        now = self._clock()
        flushes: list[tuple[Generation, int, str]] = []
        heartbeats: list[Generation] = []
        finals: list[Generation] = []
        parts: list[tuple[Generation, dict, int]] = []  # reasoning, steps, their events
        for gen in list(self._active.values()):
            # For the metrics, handed over at the next commit: tokens since the last look.
            self._tokens += gen.tokens - gen.tokens_counted
            gen.tokens_counted = gen.tokens
            if gen.first_token_at is not None and not gen.ttft_counted:
                gen.ttft_counted = True
                self._ttfts.append(gen.first_token_at - gen.started_at)
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
                looked_at = list(self._active.values())
                try:
                    with self._session_factory() as session:  # a read: nothing to commit
                        owned = _owned(session, looked_at, lock=False)
                except Exception as err:
                    log.warning("delta writer could not read stop requests: %s", err)
                    return False
                self._apply_cancels({m for m in running if owned.get(m)})
                for gen in looked_at:
                    if gen.message_id not in owned:
                        self._let_go(gen)
            return False

        wall = utcnow()
        cancelled: set[int] = set()
        lost: list[Generation] = []
        started = time.perf_counter()
        try:
            with self._session_factory() as session, session.begin():
                # First, which replies are still ours (their rows stay locked to the commit):
                # one claimed since by a newer generation, or deleted, is written no more.
                # (Of those active now: one added while this waits is looked at next tick.)
                looked_at = list(self._active.values())
                owned = _owned(session, looked_at)
                lost = [g for g in looked_at if g.message_id not in owned]
                if lost:
                    mine = owned.keys()
                    flushes = [f for f in flushes if f[0].message_id in mine]
                    parts = [p for p in parts if p[0].message_id in mine]
                    heartbeats = [g for g in heartbeats if g.message_id in mine]
                    finals = [g for g in finals if g.message_id in mine]
                cancelled = {m for m in running if owned.get(m)}
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
                for gen in finals:
                    self._finalize(session, gen, wall)
        except Exception as err:
            self.stats.failures += 1
            log.warning("delta writer commit failed, keeping %d streams in memory: %s",
                        len(flushes) + len(finals), err)
            self._unsure = True
            if isinstance(err, IntegrityError):
                self._drop_deleted()
            return False

        committed_s = time.perf_counter() - started
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
        for gen in lost:
            self._let_go(gen)
        # The metrics hear of a commit once per tick, never per token: its tokens before its
        # ended replies, so a scrape between the two never sees a reply without its tokens.
        lag = max((g.end - g.persisted_end for g in self._active.values() if not g.done),
                  default=None)
        self._metrics.writer_commit(committed_s, tokens=self._tokens, ttfts=self._ttfts,
                                    lag_chars=lag)
        self._tokens, self._ttfts = 0, []
        for gen in finals:
            self._active.pop(gen.message_id, None)
            self.stats.finalized += 1
            gen.persisted_end = gen.end
            gen.finalized.set()
            events.append((thread_channel(gen.thread_id),
                           {"type": "persisted", "message": gen.message_id, "end": gen.end,
                            "status": gen.status}))
            self._metrics.reply_ended(gen.status, reply_reason(gen.status, gen.failure))
            if self._on_finalized is not None:
                self._on_finalized(gen)
        self._hub.publish_many(events)
        return True

    def _resync(self) -> bool:
        """Take up where the database is: a commit reported as failed may have landed, and
        writing its deltas again would repeat their text (or, with the same start, fail every
        tick after it for every reply of this worker)."""
        ids = list(self._active)
        try:
            with self._session_factory() as session:
                ends = dict(session.execute(
                    select(StreamDelta.message_id, func.max(StreamDelta.end))
                    .where(StreamDelta.message_id.in_(ids))
                    .group_by(StreamDelta.message_id)).all()) if ids else {}
        except Exception as err:
            log.warning("delta writer could not read back what is persisted: %s", err)
            return False
        for message_id, end in ends.items():
            gen = self._active.get(message_id)
            if gen is not None and end > gen.persisted_end:
                log.warning("message %s: a commit reported as failed had landed; "
                            "going on from offset %s", message_id, end)
                gen.persisted_end = end
        self._unsure = False
        return True

    def _let_go(self, gen: Generation) -> None:
        """Stop a generation whose reply is no longer its own: deleted, or claimed by a newer
        generation (continued elsewhere after this one was given up for dead)."""
        log.warning("message %s is no longer this generation's (deleted, or taken over); "
                    "stopping it without writing", gen.message_id)
        if self._active.get(gen.message_id) is gen:
            del self._active[gen.message_id]
        if not gen.done and self._on_cancel is not None:
            self._on_cancel(gen)
        gen.finalized.set()
        if self._on_finalized is not None:
            self._on_finalized(gen)

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
        for gen in [g for m, g in self._active.items() if m not in existing]:
            self._let_go(gen)

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


def _owned(session: Session, generations, *, lock: bool = True) -> dict[int, bool]:
    """The replies still owned by these generations (their claim unchanged), each with
    whether someone asked to stop it. With `lock` the rows stay locked until the commit,
    so no claim can take one over between this look and the writes."""
    claims = {g.message_id: g.claim for g in generations}
    query = select(Message.id, Message.claim, Message.cancel_requested).where(
        Message.id.in_(list(claims)))
    rows = session.execute(query.with_for_update() if lock else query)
    return {mid: bool(stop) for mid, claim, stop in rows if claims[mid] == claim}
