"""What failures cost in Relay: SIGKILL detection time, text a SIGKILL loses, cancel latency.

Starts a fake model (this module's `serve-fake` command: `bench.fake_upstream` with a reply of
words, split words, a few 40-character unbroken tokens and one long run without a word
boundary per cycle) as its own process and Relay under gunicorn with one gevent worker and
Relay's default streaming settings, then measures

1. how long after a SIGKILL of the worker a reply that was streaming is marked `interrupted`
   (the sweeper's STALE_AFTER_S, 30 s by default, so each repetition takes ~30-40 s);
2. how many characters a tab had received that a SIGKILL at a random moment loses (the text
   the delta writer had not committed yet), against the writer's theoretical bound;
3. how long a cancel takes to end the tab's stream `aborted` and to close the upstream request,
   with 1 and with 100 streams cancelled at the same time.

    python -m bench.failure_bench [--parts 1,2,3] [--detect-reps 3] [--kills 20]
                                  [--cancel-streams 1,100] [--json out.json]

bench/README.md explains every figure and how it is measured.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime as dt
import math
import os
import random
import signal
import sqlite3
import string
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    REQUEST_TIMEOUT_S,
    BenchError,
    FakeUpstreamProcess,
    Rig,
    Tab,
    by_column,
    environment,
    finish,
    fmt,
    from_flag,
    health_problems,
    host_line,
    levels,
    listing,
    print_log,
    process_gone,
    raise_fd_limit,
    relay_setting,
    run,
    run_args,
    scan_log,
    server_line,
    summary,
    table,
    write_json,
)
from bench.relay_client import RelayClient

# How long a killed worker may take to be replaced and answer /healthz again.
RESTART_TIMEOUT_S = 60.0
# How long the tabs of a cancel batch may take until every one of them is streaming.
STREAMING_TIMEOUT_S = 60.0
# After the last tab of a cancel batch streams, wait this long before cancelling them all.
SETTLE_S = 0.5
# Part 2 kills a reply at a random moment this long or later after its first token.
KILL_MIN_OFFSET_S = 0.5
# A writer tick takes some time of its own (the commit): the bound lets ticks be this late.
TICK_SLACK_S = 0.025
# Seeds: the reply's text is always the same; --seed chooses the kill moments.
REPLY_SEED = 1009
DEFAULT_SEED = 20240601
# The reply: one cycle is ~WORDS_S of words, then one run without a word boundary.
WORDS_S = 5.0
LONG_TOKEN_CHARS = 40
LONG_TOKENS_PER_CYCLE = 3
SPLIT_WORD_P = 0.2  # a word sent as two tokens ("inter", "rupted"), as real models do
PUNCT_P = 0.08
PARAGRAPH_P = 0.02
WORD_LENGTHS = (1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 9, 10, 12)
UNBROKEN_CHARS = string.ascii_letters + string.digits
# Log lines a SIGKILL bench expects (counted, not listed as noteworthy).
EXPECTED_LOG = ("Booting worker", "Worker exiting", "was sent SIGKILL", "had no heartbeat for")


# -- the reply -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplyPlan:
    """The fake's reply: tokens, their kinds ("word", "long", "blob"), and its shape."""

    tokens: list[str]
    kinds: list[str]
    cycle_tokens: int
    word_tokens: int  # per cycle
    blob_tokens: int  # per cycle: consecutive 40-char tokens without any whitespace

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def build_reply(word_tokens: int, blob_tokens: int, cycles: int) -> ReplyPlan:
    """`cycles` copies of one cycle: `word_tokens` tokens of words (some split in two, three
    ` <40 unbroken chars>` tokens among them), then ` data:` and `blob_tokens` tokens of 40
    unbroken characters. Deterministic: the bench and the fake process build the same."""
    rng = random.Random(REPLY_SEED)
    tokens: list[str] = []
    kinds: list[str] = []
    long_at = {round(word_tokens * (i + 1) / (LONG_TOKENS_PER_CYCLE + 1))
               for i in range(LONG_TOKENS_PER_CYCLE)}

    def unbroken(n: int) -> str:
        return "".join(rng.choice(UNBROKEN_CHARS) for _ in range(n))

    while len(tokens) < word_tokens - 1:
        if len(tokens) in long_at:
            tokens.append(" " + unbroken(LONG_TOKEN_CHARS))
            kinds.append("long")
            continue
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.choice(WORD_LENGTHS)))
        if rng.random() < PUNCT_P:
            word += rng.choice(",.;:")
        if len(word) >= 4 and rng.random() < SPLIT_WORD_P and len(tokens) < word_tokens - 2:
            cut = rng.randint(2, len(word) - 2)
            tokens.extend([" " + word[:cut], word[cut:]])
            kinds.extend(["word", "word"])
        else:
            tokens.append(" " + word)
            kinds.append("word")
        if rng.random() < PARAGRAPH_P and len(tokens) < word_tokens - 1:
            tokens.append("\n\n")
            kinds.append("word")
    tokens.append(" data:")
    kinds.append("word")
    for _ in range(blob_tokens):
        tokens.append(unbroken(LONG_TOKEN_CHARS))
        kinds.append("blob")
    return ReplyPlan(tokens=tokens * cycles, kinds=kinds * cycles, cycle_tokens=len(tokens),
                     word_tokens=len(tokens) - blob_tokens, blob_tokens=blob_tokens)


def reply_shape(token_delay_ms: float, max_lag_ms: float, blob_ms: float | None,
                reply_s: float) -> tuple[int, int, int]:
    """(word tokens per cycle, blob tokens per cycle, cycles) for the pace and settings."""
    delay = max(token_delay_ms, 1.0)
    word_tokens = max(50, round(WORDS_S * 1000 / delay))
    blob = blob_ms if blob_ms is not None else 1.5 * max_lag_ms
    blob_tokens = max(1, math.ceil(blob / delay))
    cycle_s = (word_tokens + blob_tokens) * delay / 1000
    return word_tokens, blob_tokens, max(1, math.ceil(reply_s / cycle_s))


def serve_fake(argv: list[str]) -> int:
    """`python -m bench.failure_bench serve-fake ...`: the fake model with the bench's reply."""
    from bench.fake_upstream import FakeUpstream, Reply, serve_until_stopped

    parser = argparse.ArgumentParser(prog="python -m bench.failure_bench serve-fake")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--word-tokens", type=int, required=True)
    parser.add_argument("--blob-tokens", type=int, required=True)
    parser.add_argument("--cycles", type=int, required=True)
    parser.add_argument("--token-delay-ms", type=float, required=True)
    args = parser.parse_args(argv)
    plan = build_reply(args.word_tokens, args.blob_tokens, args.cycles)

    def reply(body: dict[str, Any]) -> Reply:
        return Reply(tokens=plan.tokens, token_delay_s=args.token_delay_ms / 1000)

    fake = FakeUpstream(args.host, args.port, default_reply=reply, max_records=10_000)
    print(f"fake upstream: {len(plan.tokens)} tokens ({len(plan.text)} chars) every "
          f"{args.token_delay_ms:g} ms at {fake.url}", flush=True)
    serve_until_stopped(fake)
    return 0


# -- the writer's bound --------------------------------------------------------------------------
@dataclass
class LossBound:
    """The most text a kill can cost under the writer's rules, per number of tokens generated."""

    worst: list[int]  # worst[j]: a kill while exactly j tokens were generated
    near_run: list[bool]  # near_run[j]: an unbroken run's token is among the last j's window
    throttle_chars: int  # most text the words generate in one throttle period
    longest_word: int  # longest run without whitespace among the words (an unfinished word)
    lag_chars: int  # most text of a no-boundary run in STREAM_MAX_LAG_MS + one throttle period
    words_max: int  # max of worst[j] where token j is a word
    blob_max: int  # max of worst[j] where near_run[j]

    def region(self, j: int) -> str:
        return "unbroken run" if self.near_run[j] else "words"


def loss_bound(plan: ReplyPlan, token_delay_s: float, throttle_s: float, max_lag_s: float,
               upto: int) -> LossBound:
    """Simulate the delta writer (word chunking + the max-lag guard) on the nominal schedule.

    Token i is generated at i * token_delay_s. The writer ticks every `throttle_s` (and, to
    allow for the time a commit takes, every throttle_s + TICK_SLACK_S), at every phase in
    1 ms steps; each tick commits the pending text up to its last whitespace, or all of it
    when nothing was committed for max_lag_s. worst[j] is the largest
    (text generated) - (text committed) just after token j arrives, over all of them.
    """
    n = min(upto, len(plan.tokens))
    times = [i * token_delay_s for i in range(n)]
    cum = [0]
    last_ws = [0]  # last_ws[j]: the index right after the last whitespace of j tokens' text
    pos = 0
    ws = 0
    for token in plan.tokens[:n]:
        for k, ch in enumerate(token):
            if ch.isspace():
                ws = pos + k + 1
        pos += len(token)
        cum.append(pos)
        last_ws.append(ws)
    worst = [0] * (n + 1)
    for period in (throttle_s, throttle_s + TICK_SLACK_S):
        steps = max(1, round(period * 1000))
        for step in range(steps):
            tick = step / 1000
            persisted = 0
            last_flush = 0.0
            for j in range(1, n + 1):
                arrived = times[j - 1]
                while tick < arrived:
                    generated = bisect.bisect_right(times, tick)
                    if cum[generated] > persisted:
                        if last_ws[generated] > persisted:
                            persisted, last_flush = last_ws[generated], tick
                        elif tick - last_flush >= max_lag_s:
                            persisted, last_flush = cum[generated], tick
                    tick += period
                worst[j] = max(worst[j], cum[j] - persisted)
    per_window = max(1, math.ceil(throttle_s / token_delay_s)) if token_delay_s else n
    lag_window = max(1, math.ceil((max_lag_s + throttle_s) / token_delay_s)) if token_delay_s \
        else n
    words = [len(t) if k != "blob" else 0 for t, k in zip(plan.tokens[:n], plan.kinds[:n],
                                                           strict=True)]
    blobs = [len(t) if k == "blob" else 0 for t, k in zip(plan.tokens[:n], plan.kinds[:n],
                                                           strict=True)]
    # The longest run without whitespace that holds no token of an unbroken run.
    # A kill is "near an unbroken run" when a token of one arrived within the last
    # STREAM_MAX_LAG_MS + one (late) throttle period: its loss may include that run's text.
    near_window = lag_window + math.ceil(TICK_SLACK_S / token_delay_s) + 1 if token_delay_s \
        else n
    near_run = [False] + [any(k == "blob" for k in plan.kinds[max(0, j - near_window):j])
                          for j in range(1, n + 1)]
    longest = run = 0
    in_blob = False
    for token, kind in zip(plan.tokens[:n], plan.kinds[:n], strict=True):
        in_blob = in_blob or kind == "blob"
        for ch in token:
            if ch.isspace():
                if not in_blob:
                    longest = max(longest, run)
                run, in_blob = 0, kind == "blob"
            else:
                run += 1
    if not in_blob:
        longest = max(longest, run)
    return LossBound(
        worst=worst,
        throttle_chars=max(sum(words[i:i + per_window]) for i in range(n)),
        longest_word=longest,
        lag_chars=max(sum(blobs[i:i + lag_window]) for i in range(n)),
        near_run=near_run,
        words_max=max((worst[j] for j in range(1, n + 1) if not near_run[j]), default=0),
        blob_max=max((worst[j] for j in range(1, n + 1) if near_run[j]), default=0))


# -- reading the database and the worker --------------------------------------------------------
@dataclass
class Persisted:
    status: str | None
    text: str  # content, then the contiguous deltas after it
    heartbeat_at: dt.datetime | None
    deltas: int
    anomaly: str | None = None  # a hole or an overlap among the deltas


def read_persisted(db_path: Path, message_id: int) -> Persisted:
    """What the SQLite file holds of a reply: its content, then its deltas in order."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db:
        row = db.execute("SELECT status, content, heartbeat_at FROM messages WHERE id = ?",
                         (message_id,)).fetchone()
        deltas = db.execute('SELECT start, "end", text FROM stream_deltas WHERE message_id = ? '
                            "ORDER BY start", (message_id,)).fetchall()
    if row is None:
        return Persisted(None, "", None, 0, "no such message")
    status, content, beat = row
    pieces = [content or ""]
    expected = len(pieces[0])
    anomaly = None
    for start, end, text in deltas:
        if end <= expected:
            continue
        if start != expected:
            anomaly = f"delta at {start} where {expected} was expected"
            if start > expected:
                break
        pieces.append(text[max(0, expected - start):])
        expected = end
    heartbeat = dt.datetime.fromisoformat(beat) if beat else None
    return Persisted(status, "".join(pieces), heartbeat, len(deltas), anomaly)


def utc_naive(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(tzinfo=None)


# -- one tab -------------------------------------------------------------------------------------
@dataclass
class RecordingTab(Tab):
    """A tab that notes when each delta came, and can cancel its reply."""

    times: list[float] = field(default_factory=list)  # when each delta arrived
    truncated: bool = False
    streaming: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    # Cancel (part 3):
    t_cancel: float | None = None  # right before the POST /cancel
    t_cancel_answered: float | None = None
    cancel_status: int | None = None
    cancel_json_status: str | None = None
    cancel_error: str | None = None

    def text_until(self, t: float) -> str:
        # `times` is appended before `pieces`: zip stops at a piece still being added.
        return "".join(p for at, p in zip(self.times, self.pieces) if at <= t)  # noqa: B905

    def on_delta(self, text: str, now: float) -> None:
        self.times.append(now)
        super().on_delta(text, now)
        self.streaming.set()

    def read(self, stream_url: str, deadline: float = math.inf) -> None:
        super().read(stream_url, deadline)
        if self.terminal is None and self.conn is not None:  # the stream ended without one
            self.t_end = time.monotonic()
            self.truncated = self.conn.truncated

    def run(self, start: threading.Barrier | None = None, stream_url: str | None = None) -> None:
        """Post the prompt (once `start` lets go) and read the reply, or read `stream_url`."""
        try:
            if start is not None:
                start.wait()
            self.read(stream_url or self.post()["stream_url"])
        except threading.BrokenBarrierError:
            self.error = "the start barrier broke"
        except Exception as err:  # reported per tab; a kill ends streams with errors
            self.error = f"{type(err).__name__}: {err}"
            self.t_end = self.t_end or time.monotonic()
        finally:
            self.ended.set()
            self.streaming.set()  # never leave a waiter hanging

    def cancel(self, go: threading.Event, timeout: float) -> None:
        try:
            if not go.wait(timeout) or self.message_id is None:
                self.cancel_error = "not cancelled (no reply, or the batch gave up)"
                return
            self.t_cancel = time.monotonic()
            answer = self.client.post_json(f"/messages/{self.message_id}/cancel")
            self.t_cancel_answered = time.monotonic()
            self.cancel_status = answer.status
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.cancel_json_status = answer.json()["status"]
        except Exception as err:
            self.cancel_error = f"{type(err).__name__}: {err}"


# -- the benchmark -------------------------------------------------------------------------------
class Bench(Rig):
    """SIGKILLs of the worker mid-reply, and cancels of N streams at once."""

    name = "failure-bench"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.rng = random.Random(args.seed)
        self.config = self.effective_settings()
        word_tokens, blob_tokens, cycles = reply_shape(
            args.token_delay_ms, self.config["max_lag_ms"], args.blob_ms, args.reply_s)
        self.plan = build_reply(word_tokens, blob_tokens, cycles)
        self.reply_text = self.plan.text
        self.token_ends = [0]  # token_ends[j]: the length of the first j tokens' text
        for token in self.plan.tokens:
            self.token_ends.append(self.token_ends[-1] + len(token))
        self.cycle_s = self.plan.cycle_tokens * args.token_delay_ms / 1000
        self.killed_pids: list[int] = []
        self.tab_count = 0
        self._bound: LossBound | None = None

    def effective_settings(self) -> dict[str, Any]:
        # The server inherits this process's environment, so its defaults are ours.
        from config import Config

        a = self.args
        throttle, throttle_src = from_flag(a.throttle_ms, Config.STREAM_THROTTLE_MS,
                                           "--throttle-ms")
        max_lag, max_lag_src = from_flag(a.max_lag_ms, Config.STREAM_MAX_LAG_MS, "--max-lag-ms")
        heartbeat, heartbeat_src = from_flag(a.heartbeat_s, Config.HEARTBEAT_S, "--heartbeat-s")
        stale, stale_src = from_flag(a.stale_after_s, Config.STALE_AFTER_S, "--stale-after-s")
        return {"throttle_ms": throttle, "throttle_source": throttle_src,
                "max_lag_ms": max_lag, "max_lag_source": max_lag_src,
                "heartbeat_s": heartbeat, "heartbeat_source": heartbeat_src,
                "stale_after_s": stale, "stale_source": stale_src,
                "sweep_interval_s": Config.SWEEP_INTERVAL_S or min(5.0, stale / 3),
                "cancel_wait_s": Config.CANCEL_WAIT_S, "chunking": Config.STREAM_CHUNKING,
                "driver_grace_ms": Config.DRIVER_GRACE_MS}

    def start(self) -> None:
        a = self.args
        fake = FakeUpstreamProcess(
            self.workdir, "bench.failure_bench", command="serve-fake",
            word_tokens=self.plan.word_tokens, blob_tokens=self.plan.blob_tokens,
            cycles=len(self.plan.tokens) // self.plan.cycle_tokens,
            token_delay_ms=a.token_delay_ms)
        self.start_servers(fake, STREAM_THROTTLE_MS=a.throttle_ms,
                           STREAM_MAX_LAG_MS=a.max_lag_ms, HEARTBEAT_S=a.heartbeat_s,
                           STALE_AFTER_S=a.stale_after_s)

    def settings(self) -> dict[str, Any]:
        a = self.args
        bound = self.bound()
        return {
            **self.config,
            "token_delay_ms": a.token_delay_ms,
            "reply_tokens": len(self.plan.tokens), "reply_chars": len(self.reply_text),
            "cycle_tokens": self.plan.cycle_tokens, "cycle_s": self.cycle_s,
            "cycle_word_tokens": self.plan.word_tokens,
            "long_tokens_per_cycle": LONG_TOKENS_PER_CYCLE,
            "unbroken_run_tokens": self.plan.blob_tokens,
            "unbroken_run_chars": self.plan.blob_tokens * LONG_TOKEN_CHARS,
            "unbroken_run_ms": self.plan.blob_tokens * a.token_delay_ms,
            "bound_throttle_chars": bound.throttle_chars,
            "bound_longest_word": bound.longest_word,
            "bound_lag_chars": bound.lag_chars,
            "bound_words_max": bound.words_max, "bound_unbroken_max": bound.blob_max,
            "tick_slack_ms": TICK_SLACK_S * 1000,
            "parts": a.parts, "detect_reps": a.detect_reps, "kills": a.kills,
            "cancel_streams": a.cancel_streams, "cancel_rounds": a.cancel_rounds,
            "cancel_min_samples": a.cancel_min_samples, "seed": a.seed,
            **environment(a.worker_connections, "gevent", "gunicorn", "flask", "sqlalchemy",
                          "openai"),
        }

    def bound(self) -> LossBound:
        if self._bound is None:
            upto = min(len(self.plan.tokens), 2 * self.plan.cycle_tokens + 100)
            self._bound = loss_bound(self.plan, self.args.token_delay_ms / 1000,
                                     self.config["throttle_ms"] / 1000,
                                     self.config["max_lag_ms"] / 1000, upto)
        return self._bound

    def next_tab(self, label: str) -> RecordingTab:
        """A new tab, numbered across batches."""
        self.tab_count += 1
        return self.new_tab(RecordingTab, self.tab_count, label)

    def tokens_in(self, text: str) -> int | None:
        """How many whole tokens of the reply `text` is, or None if it is not such a prefix."""
        if not self.reply_text.startswith(text):
            return None
        j = bisect.bisect_left(self.token_ends, len(text))
        return j if j < len(self.token_ends) and self.token_ends[j] == len(text) else None

    # -- a kill --------------------------------------------------------------------------
    def wait_restarted(self, old_pid: int) -> tuple[int, float]:
        """Wait for the replacement worker to answer /healthz; (its pid, when it did)."""
        assert self.server is not None and self.server.process is not None
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.server.process.poll() is not None:
                raise BenchError("the gunicorn master exited after a worker was killed")
            pids = [p for p in self.server.worker_pids() if p != old_pid]
            if len(pids) == 1:
                with contextlib.suppress(OSError, ValueError):
                    if self.health().get("status") == "ok":
                        return pids[0], time.monotonic()
            time.sleep(0.05)
        raise BenchError(f"no new worker answered within {RESTART_TIMEOUT_S:g} s of the kill")

    def kill_mid_reply(self, label: str, offset_s: float) -> dict[str, Any]:
        """One tab streams a reply; SIGKILL the worker `offset_s` after its first token."""
        tab = self.next_tab(label)
        self.live_tabs = [tab]
        sent = tab.post()
        reader = threading.Thread(target=tab.run, kwargs={"stream_url": sent["stream_url"]},
                                  name=f"tab-{tab.index}", daemon=True)
        reader.start()
        if not tab.streaming.wait(REQUEST_TIMEOUT_S) or not tab.times:
            tab.close()
            reader.join(5)
            raise BenchError(f"{label}: the reply never streamed ({tab.error or 'no delta'})")
        first = tab.times[0]
        time.sleep(max(0.0, first + offset_s - time.monotonic()))
        pid = self.single_worker()
        problems: list[str] = []
        if tab.ended.is_set():
            problems.append(f"the stream had ended before the kill ({tab.terminal or tab.error})")
        killed_wall = time.time()
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        self.killed_pids.append(pid)
        deadline = killed + 10
        while not process_gone(pid) and time.monotonic() < deadline:
            time.sleep(0.002)
        gone = time.monotonic()
        persisted = read_persisted(self.db_path, tab.message_id)
        reader.join(REQUEST_TIMEOUT_S)
        if reader.is_alive():
            tab.close()
            reader.join(5)
            problems.append("the tab's stream did not end after the kill")
        new_pid, back = self.wait_restarted(pid)
        self.live_tabs = []

        received = tab.text
        at_kill = tab.text_until(killed)
        survived = persisted.text
        j = self.tokens_in(received)
        bound = self.bound()
        allowed = bound.worst[j] if j is not None and j < len(bound.worst) else None
        region = bound.region(j) if j and j < len(bound.near_run) else None
        if j is None:
            problems.append("the tab's text is not a whole-token prefix of the model's reply")
        if not received.startswith(survived):
            problems.append("the persisted text is not a prefix of what the tab received")
        if persisted.status != "streaming":
            problems.append(f"status right after the kill: {persisted.status}")
        if persisted.anomaly:
            problems.append(f"persisted deltas: {persisted.anomaly}")
        lost = len(received) - len(survived)
        if allowed is not None and lost > allowed:
            problems.append(f"lost {lost} chars, beyond the writer's bound of {allowed} here")
        if tab.terminal is not None:
            problems.append(f"the stream ended with `{tab.terminal}` despite the kill")
        beat_age = ((utc_naive(killed_wall) - persisted.heartbeat_at).total_seconds()
                    if persisted.heartbeat_at is not None else None)
        return {
            "label": label, "tab": tab.index, "prompt": tab.prompt,
            "message_id": tab.message_id, "thread_id": tab.thread_id, "client": tab.client,
            "killed_pid": pid, "new_pid": new_pid, "offset_s": offset_s,
            "killed": killed, "killed_after_first_token_s": killed - first,
            "worker_gone_after_s": gone - killed, "worker_back_after_s": back - killed,
            "received_chars": len(received), "received_at_kill_chars": len(at_kill),
            "received_after_kill_chars": len(received) - len(at_kill),
            "tokens_received": j, "region": region,
            "survived_chars": len(survived), "lost_chars": lost, "bound_chars": allowed,
            "persisted_deltas": persisted.deltas, "status_after_kill": persisted.status,
            "heartbeat_age_at_kill_s": beat_age, "survived_text": survived,
            "stream_truncated": tab.truncated, "stream_error": tab.error,
            "problems": problems,
        }

    def random_offset(self) -> float:
        return KILL_MIN_OFFSET_S + self.rng.uniform(0.0, self.cycle_s)

    # -- part 1 --------------------------------------------------------------------------
    def detect(self) -> dict[str, Any]:
        reps = []
        stale = self.config["stale_after_s"]
        sweep = self.config["sweep_interval_s"]
        for rep in range(1, self.args.detect_reps + 1):
            print(f"  detection {rep}/{self.args.detect_reps}: kill, then wait for the sweeper "
                  f"(~{stale:g}-{stale + 1.25 * sweep + 3:.0f} s) ...", flush=True)
            sample = self.kill_mid_reply(f"detect{rep}", self.random_offset())
            client: RelayClient = sample["client"]
            timeout = stale + 2.5 * sweep + RESTART_TIMEOUT_S
            deadline = sample["killed"] + timeout
            marked = None
            message: dict[str, Any] = {}
            polls = 0
            while time.monotonic() < deadline:
                polls += 1
                with contextlib.suppress(OSError, ValueError):
                    answer = client.get_json(f"/messages/{sample['message_id']}")
                    if answer.status == 200:
                        message = answer.json()
                        if message.get("status") != "streaming":
                            marked = time.monotonic()
                            break
                time.sleep(0.1)
            if marked is None:
                sample["problems"].append(f"not marked within {timeout:g} s of the kill")
            elif message.get("status") != "interrupted":
                sample["problems"].append(f"ended `{message.get('status')}`, not `interrupted`")
            elif message.get("content") != sample["survived_text"]:
                sample["problems"].append(
                    f"`interrupted` content ({len(message.get('content') or '')} chars) differs "
                    f"from what the database held right after the kill "
                    f"({sample['survived_chars']} chars)")
            sample["kill_to_marked_s"] = None if marked is None else marked - sample["killed"]
            sample["final_status"] = message.get("status")
            sample["final_chars"] = len(message.get("content") or "")
            sample["polls"] = polls
            if marked is not None and sample["heartbeat_age_at_kill_s"] is not None:
                # When the reply became stale, and how long the sweeper took after that.
                stale_at = stale - sample["heartbeat_age_at_kill_s"]
                sample["stale_after_kill_s"] = stale_at
                sample["marked_after_stale_s"] = sample["kill_to_marked_s"] - stale_at
            reps.append(sample)
        marked_s = [r["kill_to_marked_s"] for r in reps if r["kill_to_marked_s"] is not None]
        return {"reps": [public(r) for r in reps], "kill_to_marked_s": summary(marked_s),
                "problems": [f"rep {i}: {p}" for i, r in enumerate(reps, 1)
                             for p in r["problems"]]}

    # -- part 2 --------------------------------------------------------------------------
    def losses(self) -> dict[str, Any]:
        kills = []
        for k in range(1, self.args.kills + 1):
            offset = self.random_offset()
            sample = self.kill_mid_reply(f"kill{k}", offset)
            print(f"  kill {k}/{self.args.kills} at {sample['killed_after_first_token_s']:.2f} s "
                  f"({sample['region']}): received {sample['received_chars']}, kept "
                  f"{sample['survived_chars']}, lost {sample['lost_chars']} chars "
                  f"(bound {sample['bound_chars']})", flush=True)
            kills.append(sample)
        return self.loss_summary(kills)

    def loss_summary(self, kills: list[dict[str, Any]]) -> dict[str, Any]:
        by_region: dict[str, dict[str, Any]] = {}
        for region in ("words", "unbroken run"):
            lost = [k["lost_chars"] for k in kills if k["region"] == region]
            by_region[region] = summary(lost)
        lost_all = [k["lost_chars"] for k in kills]
        beyond = [k for k in kills if k["bound_chars"] is not None
                  and k["lost_chars"] > k["bound_chars"]]
        return {"kills": kills, "lost": summary(lost_all), "by_region": by_region,
                "beyond_bound": len(beyond),
                "received": summary([k["received_chars"] for k in kills]),
                "after_kill": summary([k["received_after_kill_chars"] for k in kills]),
                "heartbeat_age_s": summary([k["heartbeat_age_at_kill_s"] for k in kills
                                            if k["heartbeat_age_at_kill_s"] is not None]),
                "worker_back_s": summary([k["worker_back_after_s"] for k in kills]),
                "problems": [f"kill {i}: {p}" for i, k in enumerate(kills, 1)
                             for p in k["problems"]]}

    def final_states(self, kills: list[dict[str, Any]], deadline: float) -> list[str]:
        """The sweeper must end every killed reply `interrupted` with the text we read."""
        problems = []
        pending = list(kills)
        while pending:  # at least one look, even once the deadline has passed
            still = []
            for k in pending:
                try:
                    message = k["client"].message(k["message_id"])
                except (OSError, ValueError):
                    still.append(k)
                    continue
                if message.get("status") == "streaming":
                    still.append(k)
                    continue
                k["final_status"] = message.get("status")
                k["final_chars"] = len(message.get("content") or "")
                if message.get("status") != "interrupted":
                    problems.append(f"{k['label']}: ended `{message.get('status')}`")
                elif message.get("content") != k["survived_text"]:
                    problems.append(f"{k['label']}: `interrupted` with {k['final_chars']} chars, "
                                    f"the database held {k['survived_chars']} after the kill")
            pending = still
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        problems.extend(f"{k['label']}: still `streaming` at the end" for k in pending)
        return problems

    # -- part 3 --------------------------------------------------------------------------
    def cancel_batch(self, n: int, label: str) -> dict[str, Any]:
        tabs = [self.next_tab(label) for _ in range(n)]
        self.live_tabs = tabs
        start = threading.Barrier(n, timeout=REQUEST_TIMEOUT_S)
        go = threading.Event()
        readers = [threading.Thread(target=t.run, args=(start,), name=f"tab-{t.index}",
                                    daemon=True) for t in tabs]
        cancellers = [threading.Thread(target=t.cancel, args=(go, STREAMING_TIMEOUT_S + 30),
                                       name=f"cancel-{t.index}", daemon=True) for t in tabs]
        for thread in readers + cancellers:
            thread.start()
        problems: list[str] = []
        deadline = time.monotonic() + STREAMING_TIMEOUT_S
        for tab in tabs:
            tab.streaming.wait(max(0.0, deadline - time.monotonic()))
        not_streaming = [t for t in tabs if not t.times]
        if not_streaming:
            problems.append(f"{len(not_streaming)} tabs were not streaming before the cancel")
        time.sleep(SETTLE_S)
        early = [t for t in tabs if t.ended.is_set()]
        if early:
            problems.append(f"{len(early)} streams ended before the cancel")
        health_before = self.health()
        go.set()
        end_deadline = time.monotonic() + REQUEST_TIMEOUT_S + 10
        finish(zip(tabs, readers, strict=True), end_deadline, RecordingTab.close)
        for thread in cancellers:
            thread.join(max(0.0, end_deadline - time.monotonic()))
        time.sleep(0.2)
        health_after = self.health()
        records = self.upstream_records({tab.prompt for tab in tabs})
        per_tab = []
        to_event, answered, to_upstream, after_cancel = [], [], [], []
        for tab in tabs:
            row: dict[str, Any] = {"tab": tab.index, "message_id": tab.message_id,
                                   "terminal": tab.terminal, "error": tab.error,
                                   "cancel_status": tab.cancel_status,
                                   "cancel_json_status": tab.cancel_json_status,
                                   "cancel_error": tab.cancel_error,
                                   "chars": len(tab.text)}
            if tab.error:
                problems.append(f"tab {tab.index}: {tab.error}")
            elif tab.terminal != "aborted":
                problems.append(f"tab {tab.index}: ended `{tab.terminal}`, not `aborted`")
            if tab.cancel_error or tab.cancel_status != 202:
                problems.append(f"tab {tab.index}: cancel answered {tab.cancel_status} "
                                f"{tab.cancel_error or ''}".rstrip())
            elif tab.cancel_json_status != "aborted":
                row["note"] = "cancel answered before the reply was aborted"
            if tab.t_cancel is not None:
                if tab.t_end is not None and tab.terminal == "aborted":
                    to_event.append(tab.t_end - tab.t_cancel)
                    row["cancel_to_aborted_event_s"] = tab.t_end - tab.t_cancel
                if tab.t_cancel_answered is not None:
                    answered.append(tab.t_cancel_answered - tab.t_cancel)
                    row["cancel_answered_s"] = tab.t_cancel_answered - tab.t_cancel
                shown_after = len(tab.text) - len(tab.text_until(tab.t_cancel))
                after_cancel.append(shown_after)
                row["chars_after_cancel"] = shown_after
            recs = records.get(tab.prompt, [])
            if len(recs) != 1:
                problems.append(f"tab {tab.index}: {len(recs)} upstream requests")
            else:
                rec = recs[0]
                row["upstream_outcome"] = rec.get("outcome")
                if rec.get("closed_at") is not None and tab.t_cancel is not None:
                    to_upstream.append(rec["closed_at"] - tab.t_cancel)
                    row["cancel_to_upstream_closed_s"] = rec["closed_at"] - tab.t_cancel
                if not rec.get("closed_early"):
                    problems.append(f"tab {tab.index}: upstream not closed early "
                                    f"(outcome {rec.get('outcome')})")
            per_tab.append(row)
        # What the server kept: `aborted`, exactly the text the tab was shown.
        for tab, row in zip(tabs, per_tab, strict=True):
            if tab.message_id is None:
                continue
            try:
                message = tab.client.message(tab.message_id)
            except (OSError, ValueError) as err:
                problems.append(f"tab {tab.index}: GET message failed: {err}")
                continue
            row["final_status"] = message.get("status")
            if message.get("status") != "aborted":
                problems.append(f"tab {tab.index}: message `{message.get('status')}`")
            elif message.get("content") != tab.text:
                problems.append(f"tab {tab.index}: kept {len(message.get('content') or '')} "
                                f"chars, the tab was shown {len(tab.text)}")
        problems += health_problems(health_after, health_before)
        self.live_tabs = []
        ok = sum(1 for t in tabs if t.terminal == "aborted" and not t.error)
        confirmed = sum(1 for t in tabs if t.cancel_json_status == "aborted")
        return {"streams": n, "aborted": ok, "confirmed": confirmed, "tabs": per_tab,
                "cancel_to_aborted_event_s": to_event, "cancel_answered_s": answered,
                "cancel_to_upstream_closed_s": to_upstream, "chars_after_cancel": after_cancel,
                "problems": problems}

    def cancel_level(self, n: int) -> dict[str, Any]:
        rounds = max(self.args.cancel_rounds, math.ceil(self.args.cancel_min_samples / n))
        merged: dict[str, Any] = {"streams": n, "rounds": rounds, "aborted": 0, "confirmed": 0,
                                  "samples": 0, "tabs": [], "problems": [], "warnings": []}
        keys = ("cancel_to_aborted_event_s", "cancel_answered_s", "cancel_to_upstream_closed_s",
                "chars_after_cancel")
        values: dict[str, list[float]] = {k: [] for k in keys}
        round_medians: list[float | None] = []
        for r in range(1, rounds + 1):
            batch = self.cancel_batch(n, f"cancel{n}-{r}")
            merged["aborted"] += batch["aborted"]
            merged["confirmed"] += batch["confirmed"]
            merged["samples"] += n
            merged["tabs"].extend(batch["tabs"])
            merged["problems"].extend(f"round {r}: {p}" if rounds > 1 else p
                                      for p in batch["problems"])
            for k in keys:
                values[k].extend(batch[k])
            round_medians.append(summary(batch["cancel_to_aborted_event_s"])["median"])
        merged["round_medians_s"] = round_medians
        for k in keys:
            merged[k] = summary(values[k])
        late = merged["samples"] - merged["confirmed"]
        if late:
            merged["warnings"].append(
                f"{late} of {merged['samples']} cancels were answered while the reply was still "
                f"`streaming` (the handler gave up waiting after CANCEL_WAIT_S "
                f"{self.config['cancel_wait_s']:g} s)")
        p99 = merged["cancel_to_aborted_event_s"]["p99"]
        if p99 is not None and p99 > 1.0:
            merged["warnings"].append(f"p99 from the cancel to the `aborted` event is "
                                      f"{p99:.2f} s (over 1 s)")
        return merged


def public(sample: dict[str, Any]) -> dict[str, Any]:
    """A kill sample without the parts that are not JSON (client) or too long (text)."""
    return {k: v for k, v in sample.items() if k not in ("client", "survived_text")}


# -- output --------------------------------------------------------------------------------------
def _round_range(r: dict[str, Any]) -> str:
    medians = [m for m in r["round_medians_s"] if m is not None]
    if not medians:
        return "-"
    return f"{fmt(min(medians), 1000.0)}..{fmt(max(medians), 1000.0)}"


def render(s: dict[str, Any], detect: dict[str, Any] | None, loss: dict[str, Any] | None,
           cancel: list[dict[str, Any]]) -> str:
    lines = [
        "Relay failure benchmark",
        f"  writer: STREAM_THROTTLE_MS {s['throttle_ms']} ({s['throttle_source']}), "
        f"STREAM_MAX_LAG_MS {s['max_lag_ms']} ({s['max_lag_source']}), chunking "
        f"{s['chunking']}; HEARTBEAT_S {s['heartbeat_s']:g} ({s['heartbeat_source']})",
        f"  sweeper: STALE_AFTER_S {s['stale_after_s']:g} ({s['stale_source']}), every "
        f"{s['sweep_interval_s']:g} s +-25 % per worker; CANCEL_WAIT_S {s['cancel_wait_s']:g}",
        f"  reply: {s['reply_tokens']:,} tokens ({s['reply_chars']:,} chars), one every "
        f"{s['token_delay_ms']:g} ms, in cycles of {s['cycle_s']:.2f} s: "
        f"{s['cycle_word_tokens']} tokens of words (some split in two, "
        f"{s['long_tokens_per_cycle']} ' <40 unbroken chars>' tokens), then an unbroken run of "
        f"{s['unbroken_run_tokens']} x 40 chars ({s['unbroken_run_ms']:g} ms)",
        f"{server_line(s)}; {s['database']}",
        f"{host_line(s)}; seed {s['seed']}",
    ]
    if detect is not None:
        lines += ["", "1. SIGKILL detection: kill the worker mid-reply, poll GET /messages/<id> "
                      "until it says `interrupted`"]
        rows = [[str(i), fmt(r["killed_after_first_token_s"], 1, 2),
                 fmt(r["heartbeat_age_at_kill_s"], 1, 3), fmt(r["worker_back_after_s"], 1, 2),
                 fmt(r.get("marked_after_stale_s"), 1, 2), fmt(r["kill_to_marked_s"], 1, 2),
                 f"{r['survived_chars']}/{r['received_chars']}", str(r.get("final_status"))]
                for i, r in enumerate(detect["reps"], 1)]
        k = detect["kill_to_marked_s"]
        rows.append(["median", "", "", "", "", fmt(k["median"], 1, 2), "", ""])
        rows.append(["max", "", "", "", "", fmt(k["max"], 1, 2), "", ""])
        lines += table(["rep", "kill at (s)", "heartbeat age (s)", "worker back (s)",
                         "sweep after stale (s)", "KILL->MARKED (s)", "kept/shown chars",
                         "status"], rows)
    if loss is not None:
        lines += ["", f"2. Characters a SIGKILL costs: {len(loss['kills'])} kills at random "
                      "moments; lost = shown to the tab - kept in the database"]
        cols = [("all", loss["lost"]), ("words", loss["by_region"]["words"]),
                ("unbroken run", loss["by_region"]["unbroken run"])]
        rows = [["kills", *[str(v["n"]) for _, v in cols]],
                ["lost chars, median", *[fmt(v["median"], 1, 0) for _, v in cols]],
                ["lost chars, p99", *[fmt(v["p99"], 1, 0) for _, v in cols]],
                ["lost chars, max", *[fmt(v["max"], 1, 0) for _, v in cols]],
                ["bound (writer simulated), max", str(max(s["bound_words_max"],
                                                          s["bound_unbroken_max"])),
                 str(s["bound_words_max"]), str(s["bound_unbroken_max"])]]
        lines += table(["", *[c for c, _ in cols]], rows)
        lines += [
            f"  kills beyond their own bound: {loss['beyond_bound']}; chars shown per killed "
            f"tab, median {fmt(loss['received']['median'], 1, 0)}; chars that reached the "
            f"tab after the kill, max {fmt(loss['after_kill']['max'], 1, 0)}",
            f"  heartbeat age at kill: median {fmt(loss['heartbeat_age_s']['median'], 1, 3)} s, "
            f"max {fmt(loss['heartbeat_age_s']['max'], 1, 3)} s; worker back after "
            f"{fmt(loss['worker_back_s']['median'], 1, 2)} s (median)",
            f"  theoretical bound: words: one throttle period of text (<= "
            f"{s['bound_throttle_chars']} chars here) + an unfinished word (<= "
            f"{s['bound_longest_word']}) = {s['bound_throttle_chars'] + s['bound_longest_word']};"
            f" no word boundary: STREAM_MAX_LAG_MS + one throttle period of text (<= "
            f"{s['bound_lag_chars']} chars here)",
        ]
    if cancel:
        lines += ["", "3. Cancel: every tab streams, then all POST /messages/<id>/cancel at "
                      "once (one thread each)"]
        ms = 1000.0
        spec: list[tuple[str, Any]] = [
            ("streams x rounds", lambda r: f"{r['streams']} x {r['rounds']}"),
            ("ended `aborted`", lambda r: f"{r['aborted']}/{r['samples']}"),
            ("POST answered `aborted` (else `streaming`)",
             lambda r: f"{r['confirmed']}/{r['samples']}"),
            ("POST -> `aborted` event, median (ms)",
             lambda r: fmt(r["cancel_to_aborted_event_s"]["median"], ms)),
            ("POST -> `aborted` event, p99 (ms)",
             lambda r: fmt(r["cancel_to_aborted_event_s"]["p99"], ms)),
            ("POST -> `aborted` event, max (ms)",
             lambda r: fmt(r["cancel_to_aborted_event_s"]["max"], ms)),
            ("  rounds' medians, best..worst (ms)", _round_range),
            ("POST -> upstream saw the close, median (ms)",
             lambda r: fmt(r["cancel_to_upstream_closed_s"]["median"], ms)),
            ("POST -> upstream saw the close, p99 (ms)",
             lambda r: fmt(r["cancel_to_upstream_closed_s"]["p99"], ms)),
            ("POST answered, median (ms)", lambda r: fmt(r["cancel_answered_s"]["median"], ms)),
            ("POST answered, p99 (ms)", lambda r: fmt(r["cancel_answered_s"]["p99"], ms)),
            ("chars shown after the POST, median",
             lambda r: fmt(r["chars_after_cancel"]["median"], 1, 0)),
            ("chars shown after the POST, max",
             lambda r: fmt(r["chars_after_cancel"]["max"], 1, 0)),
        ]
        lines += table(["", *[f"N={r['streams']}" for r in cancel]], by_column(spec, cancel))
        for r in cancel:
            lines.extend(f"  warning at N={r['streams']}: {w}" for w in r["warnings"])
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------------------
def parse_parts(value: str) -> list[int]:
    parts = sorted({int(p) for p in value.split(",") if p.strip().isdigit()})
    if not parts or any(p not in (1, 2, 3) for p in parts):
        raise argparse.ArgumentTypeError("parts are 1, 2 and 3, comma-separated")
    return parts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.failure_bench",
        description="What failures cost in Relay: SIGKILL detection, text lost to a SIGKILL, "
                    "cancel latency (see bench/README.md).")
    parser.add_argument("--parts", type=parse_parts, default=[1, 2, 3],
                        help="which measurements: 1 detection, 2 lost text, 3 cancel (1,2,3)")
    parser.add_argument("--detect-reps", type=int, default=3,
                        help="SIGKILL detection repetitions, ~STALE_AFTER_S each (3)")
    parser.add_argument("--kills", type=int, default=20,
                        help="SIGKILLs at random moments for the lost-text figures (20)")
    parser.add_argument("--cancel-streams", type=levels(1000, "level"), default=[1, 100],
                        help="concurrency levels of the cancel batches (1,100)")
    parser.add_argument("--cancel-rounds", type=int, default=3,
                        help="rounds (batches) per cancel level, at least (3)")
    parser.add_argument("--cancel-min-samples", type=int, default=10,
                        help="...and at least ceil(this / N) rounds for N streams (10)")
    parser.add_argument("--token-delay-ms", type=float, default=20.0,
                        help="the model's pace between tokens (20)")
    parser.add_argument("--reply-s", type=float, default=60.0,
                        help="length of the model's reply at that pace, in seconds (60)")
    parser.add_argument("--blob-ms", type=float, default=None,
                        help="length of the unbroken run per cycle (1.5 x STREAM_MAX_LAG_MS)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="chooses the kill moments")
    relay_setting(parser, "--throttle-ms", "STREAM_THROTTLE_MS", int)
    relay_setting(parser, "--max-lag-ms", "STREAM_MAX_LAG_MS", int)
    relay_setting(parser, "--heartbeat-s", "HEARTBEAT_S", float)
    relay_setting(parser, "--stale-after-s", "STALE_AFTER_S", float)
    run_args(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.detect_reps <= 100 or not 0 <= args.kills <= 1000:
        parser.error("--detect-reps must be within 0..100 and --kills within 0..1000")
    if not 1 <= args.cancel_min_samples <= 1000 or not 1 <= args.cancel_rounds <= 100:
        parser.error("--cancel-min-samples must be within 1..1000, --cancel-rounds 1..100")
    if not 1 <= args.token_delay_ms <= 1000:
        parser.error("--token-delay-ms must be within 1..1000")
    if not 10 <= args.reply_s <= 600:
        parser.error("--reply-s must be within 10..600")
    if args.worker_connections < 2 * max(args.cancel_streams) + 10:
        parser.error("--worker-connections is too small for the largest cancel level "
                     "(each tab holds a stream and sends a cancel)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-fake"]:
        return serve_fake(argv[1:])
    args = parse_args(argv)
    raise_fd_limit(max(4096, max(args.cancel_streams) * 10 + 256))
    bench = Bench(args)
    settings = bench.settings()
    detect: dict[str, Any] | None = None
    loss: dict[str, Any] | None = None
    cancel: list[dict[str, Any]] = []
    final_problems: list[str] = []

    def measure() -> None:
        nonlocal detect, loss, final_problems
        if 3 in args.parts:  # first, on a fresh worker
            print("warm-up: 1 stream cancelled (not measured) ...", flush=True)
            warm = bench.cancel_batch(1, "warmup")
            if warm["problems"]:
                print("warm-up problems:\n  " + "\n  ".join(warm["problems"]), flush=True)
            for n in args.cancel_streams:
                print(f"3. cancel at N={n} ...", flush=True)
                cancel.append(bench.cancel_level(n))
        killed: list[dict[str, Any]] = []
        if 2 in args.parts and args.kills:
            print(f"2. {args.kills} SIGKILLs at random moments ...", flush=True)
            loss = bench.losses()
            killed += loss["kills"]
        if 1 in args.parts and args.detect_reps:
            print(f"1. SIGKILL detection x {args.detect_reps} ...", flush=True)
            detect = bench.detect()
        if killed:
            print("waiting for the sweeper to mark every killed reply ...", flush=True)
            last = max(k["killed"] for k in killed)
            final_problems = bench.final_states(
                killed, last + settings["stale_after_s"] + 2.5 * settings["sweep_interval_s"]
                + RESTART_TIMEOUT_S)
            loss = bench.loss_summary(killed)  # now with the final states

    status = run(bench, measure)
    print()
    print(render(settings, detect, loss, cancel))
    problems = []
    if detect is not None:
        problems += [f"1. {p}" for p in detect["problems"]]
    if loss is not None:
        problems += [f"2. {p}" for p in loss["problems"]]
    problems += [f"2. {p}" for p in final_problems]
    for r in cancel:
        problems += [f"3. N={r['streams']}: {p}" for p in r["problems"]]
    for line in listing("problems", problems, most=40):
        print(line)

    findings, counts, noteworthy = scan_log(bench.server_log, EXPECTED_LOG)
    print_log(f"{counts['Booting worker']} worker boot(s), {counts['was sent SIGKILL']} 'was sent "
              f"SIGKILL' and {counts['had no heartbeat for']} 'marked interrupted' line(s) for "
              f"{len(bench.killed_pids)} kill(s); {len(noteworthy)} other noteworthy line(s)",
              noteworthy)
    if args.json:
        write_json(args.json, {
            "settings": settings, "detect": detect,
            "loss": None if loss is None else {**loss, "kills": [public(k) for k in loss["kills"]]},
            "cancel": cancel, "problems": problems, "gunicorn_log_findings": findings})
    if status == 0 and problems:
        status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
