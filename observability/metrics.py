"""Relay's Prometheus metrics, one `RelayMetrics` per app (`app.extensions["relay_metrics"]`).

Under gunicorn every worker writes its values to files in PROMETHEUS_MULTIPROC_DIR (set up
by gunicorn.conf.py) and `/metrics` adds them up, whichever worker answers. Counters and
histograms are recorded where things happen, never per token: the generation counts its
tokens in an integer and the delta writer adds them once per tick. Gauges (replies running,
followers, the queue, the hub's state) are sampled from their owners every second and just
before a scrape, so no hot path keeps them.

`METRICS=off` gives `NullMetrics`: every recording method does nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

SAMPLE_INTERVAL_S = 1.0
FOLLOWER_KINDS = ("websocket", "sse", "poll")
HUB_STATES = ("live", "degraded")
# Seconds: model latency (TTFT) spans ms to a minute; database work spans sub-ms to seconds.
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0, 16, 64, 256, 1024, 4096, 16384)  # characters


class NullMetrics:
    """Metrics switched off: the same methods, recording nothing."""

    enabled = False

    def __init__(self) -> None:
        self.sse_streams = 0  # kept even when off: cheap, and the sampler's source
        self.pollers: dict[Any, float] = {}

    def writer_tick(self, seconds: float) -> None: ...

    def writer_commit(self, seconds: float, *, tokens: int, ttfts: Iterable[float],
                      lag_chars: int | None) -> None: ...

    def reply_ended(self, status: str, reason: str) -> None: ...

    def http_request(self, route: str, method: str, status: int,
                     seconds: float | None) -> None: ...

    def polled(self, key: Any) -> None: ...

    def start(self, sources: Callable[[], dict[str, Any]]) -> None: ...

    def stop(self) -> None: ...

    def sample(self) -> None: ...

    def exposition(self) -> tuple[bytes, str]:
        raise RuntimeError("metrics are switched off")


class RelayMetrics(NullMetrics):
    """The metrics of one app; in a gunicorn worker, of that worker's process."""

    enabled = True

    def __init__(self, *, poll_window_s: float) -> None:
        super().__init__()
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            MultiProcessCollector(self.registry)
            own = None  # values live in the per-process files the collector reads
        else:
            own = self.registry
        self.poll_window_s = poll_window_s
        self._sources: Callable[[], dict[str, Any]] | None = None
        self._greenlet = None
        self._hub_seen = (0, 0)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            # livesum: the workers' values add up, and a dead worker's drop out.
            return Gauge(name, doc, labels, registry=own, multiprocess_mode="livesum")

        self.generations = gauge("relay_generations_active",
                                 "Replies being generated now, summed over workers")
        self.queued = gauge("relay_queue_depth",
                            "Replies waiting for a free generation slot (admission queue)")
        self.followers = gauge("relay_followers", "Open followers of replies, by kind",
                               ("kind",))
        self.hub_state = gauge("relay_hub_backend_state",
                               "Workers whose hub backend is live or degraded", ("backend",
                                                                                  "state"))
        self.tokens = Counter("relay_tokens_relayed", "Model tokens (text and reasoning "
                              "chunks) relayed into replies", registry=own)
        self.ttft = Histogram("relay_time_to_first_token_seconds", "From a reply's start in "
                              "a worker to its first text token", registry=own,
                              buckets=TTFT_BUCKETS)
        self.tick = Histogram("relay_writer_tick_seconds", "Duration of one delta writer "
                              "tick", registry=own, buckets=DB_BUCKETS)
        self.commit = Histogram("relay_writer_commit_seconds", "Duration of the delta "
                                "writer's transaction (one per tick with work)",
                                registry=own, buckets=DB_BUCKETS)
        self.lag = Histogram("relay_persisted_lag_chars", "Characters generated but not yet "
                             "in the database after a commit, the worker's largest",
                             registry=own, buckets=LAG_BUCKETS)
        self.hub_messages = Counter("relay_hub_messages", "Hub events published by this "
                                    "Relay or received from other workers",
                                    ("backend", "direction"), registry=own)
        self.replies = Counter("relay_replies", "Replies ended, by final status and reason",
                               ("status", "reason"), registry=own)
        self.requests = Counter("relay_http_requests", "HTTP requests by route (URL rule), "
                                "method and status", ("route", "method", "status"),
                                registry=own)
        self.latency = Histogram("relay_http_request_duration_seconds", "Time to a "
                                 "response's headers (a stream's length is not counted)",
                                 ("route", "method"), registry=own, buckets=HTTP_BUCKETS)

    # -- recorded where it happens --------------------------------------------------------
    def writer_tick(self, seconds: float) -> None:
        self.tick.observe(seconds)

    def writer_commit(self, seconds: float, *, tokens: int, ttfts: Iterable[float],
                      lag_chars: int | None) -> None:
        self.commit.observe(seconds)
        if tokens:
            self.tokens.inc(tokens)
        for ttft in ttfts:
            self.ttft.observe(ttft)
        if lag_chars is not None:
            self.lag.observe(lag_chars)

    def reply_ended(self, status: str, reason: str) -> None:
        self.replies.labels(status, reason).inc()

    def http_request(self, route: str, method: str, status: int,
                     seconds: float | None) -> None:
        self.requests.labels(route, method, str(status)).inc()
        if seconds is not None:
            self.latency.labels(route, method).observe(seconds)

    def polled(self, key: Any) -> None:
        """A polling tab asked for news (a poll follower while it goes on asking)."""
        self.pollers[key] = time.monotonic()

    # -- sampled ------------------------------------------------------------------------
    def start(self, sources: Callable[[], dict[str, Any]]) -> None:
        """Sample the gauges from `sources()` every second, in this worker."""
        import gevent

        from streaming.periodic import Periodic

        self._sources = sources
        self._greenlet = Periodic(self.sample, SAMPLE_INTERVAL_S, name="metrics sampler")
        self._greenlet.start()
        gevent.spawn(self.sample)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.stop()

    def sample(self) -> None:
        if self._sources is None:
            return
        now = time.monotonic()
        self.pollers = {k: t for k, t in self.pollers.items()
                        if now - t <= self.poll_window_s}
        state = self._sources()
        self.generations.set(state["generations"])
        self.queued.set(state["queued"])
        counts = {"websocket": state["websocket"], "sse": self.sse_streams,
                  "poll": len(self.pollers)}
        for kind in FOLLOWER_KINDS:
            self.followers.labels(kind).set(counts[kind])
        hub = state["hub"]
        for name in HUB_STATES:
            self.hub_state.labels(hub["backend"], name).set(
                int(bool(hub["degraded"]) == (name == "degraded")))
        published, received = state["hub_counts"]
        seen_published, seen_received = self._hub_seen
        if published > seen_published:
            self.hub_messages.labels(hub["backend"], "published").inc(published - seen_published)
        if received > seen_received:
            self.hub_messages.labels(hub["backend"], "received").inc(received - seen_received)
        self._hub_seen = (published, received)

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every worker's metrics, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self.sample()  # this worker's gauges as of now
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def make_metrics(config) -> NullMetrics:
    """RelayMetrics, or NullMetrics when METRICS is off."""
    if not config["METRICS"]:
        return NullMetrics()
    window = max(2.0, 3 * config["POLL_INTERVAL_MS"] / 1000)
    return RelayMetrics(poll_window_s=window)


def reply_reason(status: str, failure: str | None) -> str:
    """A bounded label for why a reply ended (never its user-facing text)."""
    return {"complete": "none", "aborted": "stopped", "interrupted": "shutdown"}.get(
        status, failure or "internal")
