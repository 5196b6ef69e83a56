"""One reply being generated in this worker: the model's tokens in memory, in order, by offset."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.event import Event

from llm import Provider, ProviderError
from llm.usage import add_usage, estimate_usage
from models import ABORTED, COMPLETE, ERROR, INTERRUPTED
from observability.logs import current_message
from tools import ToolBox, ToolContext

from .parts import RUNNING, Cursor, step_event, step_event_count
from .seam import join_continuation
from .tool_steps import run_tool_calls, step_limit_note

log = logging.getLogger(__name__)

INTERNAL_ERROR_REASON = "Relay hit an internal error while generating this reply."
SHUTDOWN_REASON = ("The server restarted while this reply was being written; "
                   "the text so far is kept.")


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a failed model call only while nothing has been shown, briefly, a few times."""

    attempts: int = 2
    max_wait_s: float = 10.0
    base_delay_s: float = 0.5

    def delay(self, attempt: int, err: ProviderError) -> float | None:
        """Seconds to wait before retry number `attempt` (1-based), or None: give up."""
        if not err.retryable or attempt > self.attempts:
            return None
        wait = err.retry_after if err.retry_after is not None else \
            self.base_delay_s * 2 ** (attempt - 1)
        return wait if wait <= self.max_wait_s else None


def failure_kind(err: ProviderError) -> str:
    """Why the model failed, as one of a few short names (never the user-facing text)."""
    if err.status is None:
        return "model_transport"  # connect, timeout, a stream cut off, a malformed reply
    if err.status == 429:
        return "model_rate_limited"
    if err.status in (401, 403):
        return "model_auth"
    return "model_rejected" if err.status < 500 else "model_server"


class GenerationCancelled(gevent.GreenletExit):
    """Raised inside a generation greenlet to stop it now, even mid-read from the model."""


class Generation:
    """The live text of one assistant message, readable from any offset while it grows.

    Offsets count code points of the whole reply. `prefix` is text the message already
    had (a continued reply); the model's tokens are appended after it. The delta writer
    owns `persisted_end`; readers use `text_between`, `end` and `wait_for_change`.
    """

    def __init__(self, message_id: int, thread_id: int, *, prefix: str = "",
                 clock: Callable[[], float],
                 on_first_text: Callable[[], None] | None = None,
                 reasoning: str = "", steps: list[dict[str, Any]] | None = None,
                 reasoning_ms: int | None = None, claim: int = 0) -> None:
        self.message_id = message_id
        self.thread_id = thread_id
        self.claim = claim  # the message's claim count when this generation took it
        self.clock = clock
        self._pieces: list[str] = [prefix] if prefix else []
        self._ends: list[int] = [len(prefix)] if prefix else []
        self.start_offset = len(prefix)
        self.end = len(prefix)
        self.status: str | None = None  # the terminal status once the model is done
        self.error: str | None = None
        self.usage: dict[str, Any] | None = None
        self.prior_usage: dict[str, Any] | None = None  # a continued reply's earlier calls
        self.streamed = True  # False: the server refused to stream and sent the reply whole
        self.finish_reason: str | None = None
        self.failure: str | None = None  # why it failed, as a short kind (a metrics label)
        self.cancel_requested = False
        self.running = False  # set once the greenlet runs: only then can it be interrupted
        self.started_at = clock()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.finalized = Event()  # set once the terminal state is committed
        self._changed: Event | None = None  # made by the first reader that waits
        # Writer bookkeeping: what the database has, and when it last heard from us.
        self.persisted_end = len(prefix)
        self.last_flush_at = self.started_at
        self.last_heartbeat_at = self.started_at
        self.greenlet: gevent.Greenlet | None = None
        # Model chunks appended so far, and what the writer has told the metrics of them.
        self.tokens = 0
        self.tokens_counted = 0
        self.ttft_counted = False
        # Followers see the first words at once rather than a throttle period later.
        self._on_first_text = on_first_text
        # The reply's other parts: its reasoning (the model's thinking) and its tool steps.
        # A step is {name, arguments, result, status}; each step makes two events (it
        # starts, it ends), and `step_events` counts the events so far.
        self.reasoning = reasoning
        self.steps: list[dict[str, Any]] = [dict(step) for step in steps or ()]
        self.step_events = step_event_count(self.steps)
        self.reasoning_ms = reasoning_ms
        self._thinking_since: float | None = None
        self._reasoning_break = False
        self.persisted_reasoning_end = len(reasoning)
        self.persisted_step_events = self.step_events

    # -- reading ----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.status is not None

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    def text_between(self, start: int, stop: int | None = None) -> str:
        """The reply's text in [start, stop) by code-point offset, in O(pieces touched)."""
        stop = self.end if stop is None else min(stop, self.end)
        if start >= stop:
            return ""
        first = bisect.bisect_right(self._ends, start)
        out: list[str] = []
        for i in range(first, len(self._pieces)):
            piece_end = self._ends[i]
            piece_start = piece_end - len(self._pieces[i])
            lo, hi = max(start, piece_start), min(stop, piece_end)
            if lo < hi:
                out.append(self._pieces[i][lo - piece_start:hi - piece_start])
            if piece_end >= stop:
                break
        return "".join(out)

    @property
    def has_parts(self) -> bool:
        """Whether the reply has more than text (its cursor is then compound)."""
        return bool(self.reasoning) or self.step_events > 0

    def cursor(self) -> Cursor:
        return Cursor(self.end, len(self.reasoning), self.step_events)

    def step_event(self, number: int) -> dict[str, Any]:
        """Step event `number` (0-based) as readers send it."""
        return step_event(self.steps, number)

    def wait_for_change(self, timeout: float | None) -> bool:
        """Block until text is appended or the reply ends; False when `timeout` passes first."""
        if self._changed is None:
            self._changed = Event()
        return self._changed.wait(timeout)

    # -- writing (the generation greenlet) --------------------------------------------
    def append(self, piece: str) -> None:
        if not piece:
            return
        if self.first_token_at is None:
            self.first_token_at = self.clock()
            if self._on_first_text is not None:
                self._on_first_text()
        self.tokens += 1
        self._pieces.append(piece)
        self.end += len(piece)
        self._ends.append(self.end)
        self._notify()

    def append_reasoning(self, piece: str) -> None:
        if not piece:
            return
        if self._thinking_since is None:
            self._thinking_since = self.clock()
        if self._reasoning_break:  # thinking again after a tool step: a new paragraph
            self._reasoning_break = False
            if self.reasoning and not self.reasoning.endswith("\n"):
                piece = "\n\n" + piece
        self.tokens += 1
        self.reasoning += piece
        self._notify()

    def stop_thinking(self) -> None:
        """The model turned from thinking to writing or calling a tool: count the time."""
        if self._thinking_since is not None:
            spent = round((self.clock() - self._thinking_since) * 1000)
            self.reasoning_ms = (self.reasoning_ms or 0) + spent
            self._thinking_since = None

    def start_step(self, name: str, arguments: str) -> int:
        """A tool call begins (an event); its index."""
        self.stop_thinking()
        self._reasoning_break = True
        self.steps.append({"name": name, "arguments": arguments, "result": None,
                           "status": RUNNING})
        self.step_events += 1
        self._notify()
        return len(self.steps) - 1

    def end_step(self, index: int, status: str, result: str | None) -> None:
        """A tool call ended (an event): `status` ok | error | aborted."""
        step = self.steps[index]
        if step["status"] != RUNNING:
            return
        step["status"], step["result"] = status, result
        self.step_events += 1
        self._notify()

    def finish(self, status: str, error: str | None = None) -> None:
        """Record the terminal state in memory; the delta writer commits it."""
        if self.done:
            return
        self.stop_thinking()
        for index, step in enumerate(self.steps):  # stopped mid-call: the step ends with it
            if step["status"] == RUNNING:
                self.end_step(index, "aborted", None)
        self.status, self.error = status, error
        self.finished_at = self.clock()
        self._notify()

    def timings(self) -> dict[str, int | None]:
        ttft = None if self.first_token_at is None else self.first_token_at - self.started_at
        end = self.finished_at if self.finished_at is not None else self.clock()
        return {"ttft_ms": None if ttft is None else round(ttft * 1000),
                "duration_ms": round((end - self.started_at) * 1000)}

    def _notify(self) -> None:
        # Wake the current waiters; the next one to wait makes a fresh event. A token that
        # arrives with nobody waiting (headless, or readers busy sending) allocates nothing.
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()


def run_generation(generation: Generation, provider: Provider,
                   history: list[dict[str, Any]], on_done: Callable[[Generation], None], *,
                   retry: RetryPolicy | None = None,
                   sleep: Callable[[float], None] = gevent.sleep,
                   toolbox: ToolBox | None = None,
                   tool_context: ToolContext | None = None) -> None:
    """Drive `provider` into `generation` until the model ends, fails, or a cancel arrives.

    With a `toolbox` (and a provider that `supports_tools`), the model may call tools: each
    call runs here, its result goes back to the model, and the model goes on, for at most
    `toolbox.max_steps` rounds of calls.
    """
    generation.running = True
    current_message.set(generation.message_id)  # every log line of this greenlet names it
    retry = retry or RetryPolicy(attempts=0)
    asked = False
    if not (toolbox and tool_context is not None and getattr(provider, "supports_tools", False)):
        toolbox = None
    try:
        if generation.cancel_requested:  # stopped before it began: never ask the model
            raise GenerationCancelled
        asked = True
        attempt = 0
        while True:
            shown = generation.cursor()
            try:
                if toolbox is None:
                    _stream_into(generation, provider, history)
                else:
                    _stream_with_tools(generation, provider, history, toolbox, tool_context)
                break
            except ProviderError as err:
                attempt += 1
                # A retry after anything was shown would repeat or contradict it: never.
                wait = retry.delay(attempt, err) if generation.cursor() == shown else None
                if wait is None or generation.cancel_requested:
                    raise
                log.info("model call for message %s failed (%s); retry %d in %.1f s",
                         generation.message_id, err, attempt, wait)
                sleep(wait)
        generation.finish(ABORTED if generation.cancel_requested else COMPLETE)
    except ProviderError as err:
        if generation.cancel_requested:
            generation.finish(ABORTED)
        else:
            generation.failure = failure_kind(err)
            generation.finish(ERROR, str(err))
    except GenerationCancelled:
        generation.cancel_requested = True
        generation.finish(ABORTED)
    except gevent.GreenletExit:
        generation.finish(INTERRUPTED, SHUTDOWN_REASON)
    except Exception:
        log.exception("generation of message %s failed", generation.message_id)
        generation.finish(ERROR, INTERNAL_ERROR_REASON)
    finally:
        if asked:
            settle_usage(generation, history)
        on_done(generation)


def settle_usage(generation: Generation, history: list[dict[str, str]]) -> None:
    """The reply's usage once it ended: the model's counts, else (stopped, cut off, failed
    or interrupted before they came) an estimate marked `estimated`; a continued reply adds
    its earlier calls. A request that failed before any text costs nothing and gets none."""
    usage = generation.usage
    if usage is None:
        text = generation.text_between(generation.start_offset)
        if text or generation.status != ERROR:
            usage = estimate_usage(history, text)
    generation.usage = add_usage(generation.prior_usage, usage)


def _stream_into(generation: Generation, provider: Provider, history: list[dict[str, Any]],
                 tools: list[dict[str, Any]] | None = None, *, first: bool = True) -> tuple:
    """One model turn into `generation`; the tool calls it ends with (or none)."""
    stream: Iterator = provider.stream(history, tools=tools) if tools else \
        provider.stream(history)
    if first and generation.start_offset and \
            not getattr(provider, "continues_exactly", False):
        stream = join_continuation(generation.text, stream)  # a continued reply's seam
    calls: tuple = ()
    turn_usage = None
    try:
        for chunk in stream:
            if generation.cancel_requested:
                break
            if chunk.text:
                if generation._thinking_since is not None:
                    generation.stop_thinking()
                generation.append(chunk.text)
            elif chunk.reasoning:
                generation.append_reasoning(chunk.reasoning)
            if chunk.usage:
                turn_usage = chunk.usage  # the last count of this call (some send several)
            if chunk.finish_reason:
                generation.finish_reason = chunk.finish_reason
                if not chunk.streamed:
                    generation.streamed = False
            if chunk.tool_calls:
                calls = chunk.tool_calls
    finally:
        if turn_usage:  # a reply with tool steps paid for every call
            generation.usage = add_usage(generation.usage, turn_usage)
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # closes the upstream response: a cancelled reply stops costing money
    return calls


def _stream_with_tools(generation: Generation, provider: Provider,
                       history: list[dict[str, Any]], toolbox: ToolBox,
                       context: ToolContext) -> None:
    """Model turns and tool calls in turn, until the model answers without calling a tool."""
    schemas = toolbox.schemas()
    messages = list(history)
    rounds = 0
    while True:
        turn_start = generation.end
        calls = _stream_into(generation, provider, messages, schemas, first=rounds == 0)
        if not calls or generation.cancel_requested:
            return
        generation.stop_thinking()
        if rounds >= toolbox.max_steps:
            generation.append(step_limit_note(generation.text, toolbox.max_steps))
            generation.finish_reason = "tool_step_limit"
            return
        rounds += 1
        turn_text = generation.text_between(turn_start)
        messages += run_tool_calls(generation, calls, toolbox, context, turn_text)
