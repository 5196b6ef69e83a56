"""The per-worker engine that starts, tracks and stops generations; owned by the app."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import gevent
from flask import Flask
from gevent.event import Event as GeventEvent
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from llm import Provider
from models import (
    ACTIVE_STATUSES,
    INTERRUPTED,
    STREAMING,
    TERMINAL_STATUSES,
    Message,
    control_channel,
    thread_channel,
)

from .admission import Admission, LoopLag
from .chunking import make_chunker
from .claim import claim_generation
from .generation import (
    SHUTDOWN_REASON,
    Generation,
    GenerationCancelled,
    RetryPolicy,
    run_generation,
)
from .history import build_history, continuation
from .hub import Event, Hub, Subscription
from .reader import CursorError, ReadItem, persisted_text_after, read_live, read_persisted
from .sweeper import Sweeper
from .writer import DeltaWriter

log = logging.getLogger(__name__)


class ReplyEngine:
    """Generations running in this worker, their delta writer, and the hub.

    Greenlets start lazily on first use, so a forking server starts them in each worker,
    never in the master. Everything a test may want to replace (provider, hub, clock) is
    a constructor argument.
    """

    def __init__(self, app: Flask, provider: Provider, hub: Hub, *,
                 db_engine: Engine, background_engine: Engine | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        config = app.config
        self.app = app
        self._sessions = sessionmaker(db_engine, expire_on_commit=False)
        # The writer and sweeper never queue behind requests for a pooled connection.
        background = sessionmaker(background_engine or db_engine, expire_on_commit=False)
        self.provider = provider
        self.hub = hub
        self.clock = clock
        self.generations: dict[int, Generation] = {}
        # Per running reply, its thread's control channel: a Stop asked anywhere arrives here.
        self._controls: dict[int, Subscription] = {}
        self.writer = DeltaWriter(
            background, hub,
            chunker=make_chunker(config["STREAM_CHUNKING"]),
            throttle_s=config["STREAM_THROTTLE_MS"] / 1000,
            throttle_max_s=config["STREAM_THROTTLE_MAX_MS"] / 1000,
            grow_chars=config["STREAM_THROTTLE_GROW_CHARS"],
            max_lag_s=config["STREAM_MAX_LAG_MS"] / 1000,
            heartbeat_s=config["HEARTBEAT_S"],
            clock=clock,
            on_finalized=self._forget,
            on_cancel=self._cancel_local)
        self._headless: set[gevent.Greenlet] = set()
        self.loop_lag = LoopLag(then=self._admit_waiting)
        self.admission = Admission(
            max_running=config["MAX_GENERATIONS"], max_queued=config["MAX_QUEUED"],
            max_lag_s=config["MAX_LOOP_LAG_MS"] / 1000, lag=self.loop_lag,
            running=lambda: sum(1 for g in self.generations.values() if not g.done))
        self.stopping = GeventEvent()  # set on shutdown: readers end so the worker can exit
        stale_after = config["STALE_AFTER_S"]
        self.sweeper = Sweeper(
            background, stale_after_s=stale_after,
            unclaimed_after_s=config["DRIVER_GRACE_MS"] / 1000 + stale_after,
            interval_s=config["SWEEP_INTERVAL_S"] or min(5.0, stale_after / 3),
            publish=lambda thread_id, event: hub.publish(thread_channel(thread_id), event),
            start=self.claim_or_queue)

    def session(self) -> Session:
        """A new session of its own: one per greenlet, never shared."""
        return self._sessions()

    # -- starting ---------------------------------------------------------------------
    def claim_or_queue(self, message_id: int) -> Generation | None:
        """Generate a pending reply here now if this worker has a free slot (and nobody
        waits before it); otherwise it waits in this worker's queue. The generation, or
        None when it waits or someone else has it."""
        self.admission.enqueue(message_id)
        self._admit_waiting()
        return self.local(message_id)

    def _admit_waiting(self) -> None:
        """Start waiting replies, oldest first, while there are free slots."""
        while (message_id := self.admission.next_waiting()) is not None:
            try:
                self.claim_and_start(message_id)  # None: another worker took it meanwhile
            except (DBAPIError, PoolTimeout) as err:
                self.admission.waiting.appendleft(message_id)  # its turn stays its own
                # The database is away or saturated: the loop-lag tick tries again soon.
                log.warning("starting queued message %s failed, will retry: %s",
                            message_id, err)
                return

    def claim_and_start(self, message_id: int) -> Generation | None:
        """Claim a pending reply and generate it here; None when someone else has it."""
        with self.session() as session:
            if not claim_generation(session, message_id):
                return None
            message = session.get(Message, message_id)
            history = build_history(session, message,
                                    system_prompt=self.app.config["SYSTEM_PROMPT"],
                                    limit=self.app.config["HISTORY_MESSAGES"])
            if message.content:  # a continued reply: the model picks up where it stopped
                history += continuation(message.content)
            return self._start(message, history)

    def _start(self, message: Message, history: list[dict[str, str]]) -> Generation:
        generation = Generation(message.id, message.thread_id, prefix=message.content,
                                clock=self.clock, on_first_text=self.writer.wake)
        self.generations[message.id] = generation
        # No waiting for the broker to confirm: until it does, the database flag (read at
        # every tick) still carries a stop.
        self._controls[message.id] = self.hub.subscribe(
            control_channel(message.thread_id), on_event=self._on_control, wait=False)
        self.writer.add(generation)
        generation.greenlet = gevent.spawn(run_generation, generation, self.provider, history,
                                           self._generation_ended, retry=self.retry_policy)
        self.hub.publish(thread_channel(message.thread_id),
                         {"type": "started", "message": message.id, "end": generation.end})
        return generation

    def schedule_headless(self, message_id: int, delay_s: float | None = None) -> None:
        """Start the reply here after the driver's grace period if no tab has claimed it."""
        delay = self.app.config["DRIVER_GRACE_MS"] / 1000 if delay_s is None else delay_s
        greenlet = gevent.spawn_later(delay, self._headless_start, message_id)
        self._headless.add(greenlet)
        greenlet.link(self._headless.discard)

    def _headless_start(self, message_id: int) -> None:
        if self.local(message_id) is not None or self.admission.ahead_of(message_id) is not None:
            return  # its tab got here first: it runs, or waits its turn, in this worker
        try:
            if self.claim_or_queue(message_id) is not None:
                log.info("message %s had no driver; generating it headless", message_id)
        except Exception:
            log.exception("headless start of message %s failed", message_id)

    def _generation_ended(self, generation: Generation) -> None:
        self.writer.wake()

    def _forget(self, generation: Generation) -> None:
        self.generations.pop(generation.message_id, None)
        control = self._controls.pop(generation.message_id, None)
        if control is not None:
            control.close()
        if self.admission.waiting:  # a slot is free: the next reply starts (not in the tick)
            gevent.spawn(self._admit_waiting)

    # -- background work and shutdown -------------------------------------------------
    def start_background(self) -> None:
        """Start this worker's hub listener, sweeper and writer; once per worker process."""
        self.hub.start()
        self.writer.ensure_running()
        self.sweeper.start()
        self.loop_lag.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        """End every reply generating here as `interrupted`, its text flushed, then stop.

        Idempotent: a worker may be told to stop more than once (by its master and others).
        """
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.sweeper.stop()
        self.loop_lag.stop()
        for greenlet in list(self._headless):
            greenlet.kill(block=False)
        generations = [g for g in self.generations.values() if not g.done]
        for generation in generations:
            if generation.running and generation.greenlet is not None:
                generation.greenlet.kill(block=False)  # GreenletExit: ends `interrupted`
            else:
                generation.finish(INTERRUPTED, SHUTDOWN_REASON)
        self.writer.wake()
        deadline = self.clock() + timeout
        for generation in generations:
            if not generation.finalized.wait(max(0.0, deadline - self.clock())):
                log.error("message %s could not be saved before shutdown",
                          generation.message_id)
        self.writer.stop()
        self.hub.stop()
        log.info("shutdown: %d replies ended as interrupted", len(generations))

    # -- stopping ---------------------------------------------------------------------
    def cancel(self, message_id: int) -> Generation | None:
        """Stop a generation running in this worker now; None when it is not running here."""
        generation = self.generations.get(message_id)
        if generation is None or generation.done:
            return None
        self._cancel_local(generation)
        return generation

    def request_stop(self, message: Message) -> None:
        """Ask whichever worker or host runs `message` to stop it (the hub carries it)."""
        self.hub.publish(control_channel(message.thread_id),
                         {"type": "cancel", "message": message.id})

    def wait_for_end(self, subscription: Subscription, message_id: int,
                     timeout: float) -> bool:
        """Wait on `subscription` until `message_id` is reported ended; False on timeout."""
        deadline = self.clock() + timeout
        while (remaining := deadline - self.clock()) > 0:
            event = subscription.get(timeout=remaining)
            if event is not None and event.get("message") == message_id and \
                    event.get("status") in TERMINAL_STATUSES:
                return True
        return False

    def _on_control(self, event: Event) -> None:
        if event.get("type") != "cancel":
            return
        generation = self.generations.get(event.get("message"))
        if generation is not None and not generation.done:
            self._cancel_local(generation)

    def _cancel_local(self, generation: Generation) -> None:
        generation.cancel_requested = True
        greenlet = generation.greenlet
        # Raised inside the greenlet even mid-read, so the upstream response closes now.
        # A greenlet that has not run yet must not be killed (it would never finish the
        # reply); it sees the flag as its first step instead.
        if generation.running and greenlet is not None and not greenlet.dead:
            greenlet.kill(GenerationCancelled, block=False)

    # -- reading ----------------------------------------------------------------------
    def local(self, message_id: int) -> Generation | None:
        return self.generations.get(message_id)

    def check_cursor(self, message: Message, cursor: int) -> None:
        """Raise CursorError for a cursor past the end of what the reply can hold now."""
        generation = self.local(message.id)
        if generation is not None:
            limit = generation.end
        elif message.status == STREAMING:
            return  # generated elsewhere: its stream may be ahead of the database
        else:
            limit = len(message.content)
        if cursor > limit:
            raise CursorError(f"cursor {cursor} is past the reply's end ({limit})")

    def read(self, message: Message, cursor: int) -> Iterator[ReadItem]:
        """Every change of `message` after `cursor`: live if it runs here, else persisted.

        Raises CursorError at once for a cursor past the end of what can exist.
        """
        self.check_cursor(message, cursor)
        config = self.app.config
        generation = self.local(message.id)
        if generation is not None:
            return read_live(generation, cursor, idle_s=config["SSE_KEEPALIVE_S"])
        return read_persisted(
            self.session, message.id, cursor,
            subscribe=lambda: self.hub.subscribe(thread_channel(message.thread_id)),
            local=lambda: self.local(message.id),
            poll_s=config["RESUME_POLL_S"], idle_s=config["SSE_KEEPALIVE_S"], clock=self.clock,
            stopping=self.stopping, queued=lambda: self.admission.ahead_of(message.id))

    def current_text(self, message: Message, session: Session) -> str:
        """The freshest text of a message this worker can see (live, else persisted)."""
        generation = self.local(message.id)
        if generation is not None:
            return generation.text
        if message.status in ACTIVE_STATUSES:
            text = persisted_text_after(session, message, 0)
            # It may have ended meanwhile (its deltas folded into content): look again.
            session.refresh(message)
            return text if message.status in ACTIVE_STATUSES else message.content
        return message.content

    # -- health and shutdown ----------------------------------------------------------
    @property
    def retry_policy(self) -> RetryPolicy:
        config = self.app.config
        return RetryPolicy(attempts=config["MODEL_RETRIES"],
                           max_wait_s=config["MODEL_RETRY_MAX_WAIT_S"])

    def health(self) -> dict:
        stats = self.writer.stats
        return {"active_generations": len(self.generations),
                "queued": len(self.admission.waiting),
                "loop_lag_ms": round(self.loop_lag.lag_s * 1000, 1),
                "writer": {"commits": stats.commits, "deltas": stats.deltas,
                           "finalized": stats.finalized, "failures": stats.failures,
                           "ticks": stats.ticks, "tick_gaps_ms": stats.gaps_ms()}}
