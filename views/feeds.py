"""Websocket fan-out: each change of a thread is rendered once per worker, for every follower.

A `ThreadFeed` exists while a thread has websocket followers in this worker. One greenlet
listens to the thread's hub channel, renders each batch of changes once per kind of
follower (owner or share viewer, and language), and offers the same frame to every
follower's bounded queue. A follower that falls a whole queue behind is dropped: its socket
is closed, and the page reconnects and starts again from a fresh state frame, never holding
back others.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gevent
from flask import Flask
from flask_babel import force_locale
from gevent.queue import Empty, Full, Queue
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from models import thread_channel
from streaming.hub import Event, Hub, Subscription

log = logging.getLogger(__name__)

MAX_BATCH = 64
# The messages a feed's followers may show (seen in events, or in a follower's first
# frame), newest last: after a RESYNC each is rendered again, so an end missed while the
# broker was away, or while this feed fell behind, still reaches the pages.
WATCHED_MESSAGES = 64
# The database away (restarting) or saturated: the changes are rendered again, from the
# state then, after these pauses (the last one repeats until it answers or the feed stops).
RENDER_RETRY_S = (0.2, 0.5, 1.0, 2.0)
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
# What a feed keeps of the request that opened it: enough to build URLs, nothing personal.
ENVIRON_KEYS = ("wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME",
                "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PREFIX")

# (thread id, events, readonly) -> the frame, or "" when nothing is worth sending
Renderer = Callable[[int, list[Event], bool], str]


class Follower:
    """One websocket's queue of frames; `dropped` once it fell a whole queue behind.
    Followers of a kind (owner or share viewer) and a language share their frames."""

    def __init__(self, readonly: bool, maxsize: int, language: str = "en") -> None:
        self.readonly = readonly
        self.language = language
        self._frames: Queue = Queue(maxsize=maxsize)
        self.dropped = False
        self.shut_out = False  # a share viewer whose link was revoked: its last frame says so

    def offer(self, frame: str) -> None:
        try:
            self._frames.put_nowait(frame)
        except Full:
            self.dropped = True

    def next_frame(self, timeout: float) -> str | None:
        try:
            return self._frames.get(timeout=timeout)
        except Empty:
            return None


class ThreadFeed:
    """The followers of one thread in this worker, and the greenlet that renders for them."""

    def __init__(self, thread_id: int, subscription: Subscription, app: Flask,
                 environ: dict[str, Any], render: Renderer) -> None:
        self.thread_id = thread_id
        self.followers: set[Follower] = set()
        self._stopped = False
        self._subscription = subscription
        self._app = app
        self._environ = environ
        self._render = render
        self._rendering = False
        self._watched: dict[int, None] = {}  # insertion-ordered: the newest last
        self._greenlet = gevent.spawn(self._run)

    def watch(self, message_ids) -> None:
        """Note messages the followers may show: a RESYNC renders them again."""
        for message_id in message_ids:
            self._watched.pop(message_id, None)
            self._watched[message_id] = None
        while len(self._watched) > WATCHED_MESSAGES:
            del self._watched[next(iter(self._watched))]

    def _noted(self, events: list[Event]) -> list[Event]:
        """`events`, with each RESYNC naming the messages the followers may show."""
        for event in events:
            if isinstance(event.get("message"), int):
                self.watch([event["message"]])
            self.watch(i for i in event.get("messages") or () if isinstance(i, int))
        return [{**event, "messages": list(self._watched)} if event.get("type") == "resync"
                else event for event in events]

    def _run(self) -> None:
        while not self._stopped:
            event = self._subscription.get(timeout=1.0)
            if event is None:
                continue
            events = [event]
            while len(events) < MAX_BATCH and (more := self._subscription.get(timeout=0)):
                events.append(more)
            self._rendering = True
            try:
                self._deliver(self._noted(events))
            finally:
                self._rendering = False

    def _deliver(self, events: list[Event]) -> None:
        """Render and offer `events`; while the database is away, again until it answers:
        dropped, a reply's end would never reach the followers."""
        for attempt in range(1_000_000):
            try:
                self._fan_out(events)
                return
            except DATABASE_UNAVAILABLE as err:
                if self._stopped:
                    return
                pause = RENDER_RETRY_S[min(attempt, len(RENDER_RETRY_S) - 1)]
                log.warning("rendering changes of thread %s waits for the database: %s",
                            self.thread_id, getattr(err, "orig", None) or err)
                gevent.sleep(pause)
            except Exception:  # a failed render must not end the feed for everyone
                log.exception("rendering changes of thread %s failed", self.thread_id)
                return

    def _fan_out(self, events: list[Event]) -> None:
        kinds = {(f.readonly, f.language) for f in self.followers}
        frames = {}
        with self._app.request_context(dict(self._environ)):
            for readonly, language in kinds:
                with force_locale(language):
                    frames[readonly, language] = self._render(self.thread_id, events, readonly)
        unshared = any(event.get("type") == "unshared" for event in events)
        for follower in list(self.followers):
            if follower.shut_out:
                continue
            frame = frames.get((follower.readonly, follower.language))
            if frame:
                follower.offer(frame)
            if unshared and follower.readonly:
                follower.shut_out = True

    def stop(self) -> None:
        self._stopped = True
        self._subscription.close()
        # Killed mid-render, a query would leave its pooled connection in a broken state:
        # a render finishes (for nobody) and the loop ends on its own.
        if not self._rendering:
            self._greenlet.kill(block=False)


class FollowerFeeds:
    """This worker's thread feeds; owned by the app (`app.extensions["relay_feeds"]`)."""

    def __init__(self, app: Flask, hub: Hub, render: Renderer, *, queue_frames: int) -> None:
        self._app = app
        self._hub = hub
        self._render = render
        self.queue_frames = queue_frames
        self._feeds: dict[int, ThreadFeed] = {}

    @contextlib.contextmanager
    def follow(self, thread_id: int, readonly: bool, environ: dict[str, Any],
               language: str = "en") -> Iterator[Follower]:
        """A follower of `thread_id` (frames in `language`), subscribed before this returns;
        removed on exit."""
        follower = Follower(readonly, self.queue_frames, language)
        feed = self._feeds.get(thread_id)
        if feed is None:
            subscription = self._hub.subscribe(thread_channel(thread_id))
            kept = {k: v for k, v in environ.items() if k in ENVIRON_KEYS}
            # Subscribing may have waited for the broker: another follower may have come.
            feed = self._feeds.get(thread_id)
            if feed is None:
                feed = self._feeds[thread_id] = ThreadFeed(
                    thread_id, subscription, self._app,
                    {**kept, "REQUEST_METHOD": "GET", "PATH_INFO": "/"}, self._render)
            else:
                subscription.close()
        feed.followers.add(follower)
        try:
            yield follower
        finally:
            feed.followers.discard(follower)
            if not feed.followers and self._feeds.get(thread_id) is feed:
                del self._feeds[thread_id]
                feed.stop()

    def shown(self, thread_id: int, message_ids) -> None:
        """A follower's first frame showed these messages of `thread_id` (see `watch`)."""
        feed = self._feeds.get(thread_id)
        if feed is not None:
            feed.watch(message_ids)

    def stats(self) -> dict[str, int]:
        return {"threads": len(self._feeds),
                "followers": sum(len(f.followers) for f in self._feeds.values())}
