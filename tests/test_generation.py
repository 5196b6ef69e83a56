"""run_generation and Generation: outcomes, retries before the first token, cancels, kills.

The model is a scripted in-process provider; waits between retries go through an injected
`sleep` that records them, so no test sleeps for real.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field

import gevent
import pytest
from gevent.event import Event
from hypothesis import given
from hypothesis import strategies as st

from llm import Chunk, ProviderError
from models import ABORTED, COMPLETE, ERROR, INTERRUPTED
from streaming.generation import (
    INTERNAL_ERROR_REASON,
    SHUTDOWN_REASON,
    Generation,
    GenerationCancelled,
    RetryPolicy,
    run_generation,
)

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
HISTORY = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
WAIT_S = 5.0  # a generous bound for a greenlet to reach a point it gets to at once


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Block:
    """Script step: the provider signals `reached`, then waits until `release` is set."""

    reached: Event = field(default_factory=Event)
    release: Event = field(default_factory=Event)


@dataclass
class StreamRecord:
    """What happened to one generator the provider handed out."""

    generator: Iterator[Chunk] | None = None
    finished: bool = False  # ran to its end
    exited_by: type[BaseException] | None = None  # what stopped it early, if anything
    cleaned_up: bool = False  # its `finally` ran

    @property
    def closed(self) -> bool:
        return inspect.getgeneratorstate(self.generator) == inspect.GEN_CLOSED


class ScriptedProvider:
    """A provider whose N-th call plays the N-th script (the last one repeats).

    A script is a list of steps: a str (a text Chunk), a Chunk, an exception instance
    (raised there), or a Block (waits, so a test can act mid-stream).
    """

    name = "scripted"
    model = "scripted-model"
    label = "Scripted model"

    def __init__(self, *scripts: list) -> None:
        self.scripts = list(scripts)
        self.calls: list[list[dict[str, str]]] = []
        self.streams: list[StreamRecord] = []

    def stream(self, messages: list[dict[str, str]]) -> Iterator[Chunk]:
        self.calls.append([dict(m) for m in messages])
        script = self.scripts[min(len(self.calls), len(self.scripts)) - 1]
        record = StreamRecord()
        record.generator = self._play(script, record)
        self.streams.append(record)
        return record.generator

    @staticmethod
    def _play(script: list, record: StreamRecord) -> Iterator[Chunk]:
        try:
            for step in script:
                if isinstance(step, str):
                    yield Chunk(text=step)
                elif isinstance(step, Chunk):
                    yield step
                elif isinstance(step, Block):
                    step.reached.set()
                    step.release.wait()
                else:
                    raise step
            record.finished = True
        except BaseException as exc:
            record.exited_by = type(exc)
            raise
        finally:
            record.cleaned_up = True


class Done:
    """The on_done callback: records every generation it is called with."""

    def __init__(self) -> None:
        self.calls: list[Generation] = []

    def __call__(self, generation: Generation) -> None:
        self.calls.append(generation)


def new_generation(prefix: str = "") -> Generation:
    return Generation(41, 7, prefix=prefix, clock=FakeClock())


def run(provider: ScriptedProvider, *, retry: RetryPolicy | None = None,
        generation: Generation | None = None) -> tuple[Generation, list[float], Done]:
    """Run a generation to its end in this greenlet; the waits it asked for are returned."""
    generation = generation or new_generation()
    waits: list[float] = []
    done = Done()
    run_generation(generation, provider, HISTORY, done, retry=retry, sleep=waits.append)
    return generation, waits, done


def unavailable(**kw) -> ProviderError:
    return ProviderError("The model service is unavailable (503).", retryable=True, **kw)


# -- the happy path ----------------------------------------------------------------------------
def test_a_full_stream_ends_complete_with_the_exact_text_usage_and_finish_reason():
    provider = ScriptedProvider(["Hel", "lo, ", "wörld 🌍", "\r\n!",
                                 Chunk(finish_reason="stop", usage=USAGE)])
    generation, waits, done = run(provider)
    assert generation.status == COMPLETE
    assert generation.error is None
    assert generation.text == "Hello, wörld 🌍\r\n!"
    assert generation.end == len("Hello, wörld 🌍\r\n!")
    assert generation.usage == USAGE
    assert generation.finish_reason == "stop"
    assert provider.calls == [HISTORY]
    assert provider.streams[0].finished
    assert waits == []
    assert done.calls == [generation]


def test_a_continued_reply_appends_the_models_text_after_its_prefix():
    provider = ScriptedProvider([" and more.", Chunk(finish_reason="stop")])
    generation, _, _ = run(provider, generation=new_generation(prefix="Earlier text"))
    assert generation.status == COMPLETE
    assert generation.text == "Earlier text and more."
    assert generation.start_offset == len("Earlier text")


# -- retries while nothing was shown -----------------------------------------------------------
def test_retryable_failures_before_any_token_are_retried_with_exponential_backoff():
    provider = ScriptedProvider([unavailable()], [unavailable()],
                                ["Fine ", "now.", Chunk(finish_reason="stop", usage=USAGE)])
    generation, waits, done = run(provider, retry=RetryPolicy(attempts=3, base_delay_s=0.5))
    assert generation.status == COMPLETE
    assert generation.text == "Fine now."
    assert generation.usage == USAGE
    assert len(provider.calls) == 3
    assert provider.calls == [HISTORY] * 3  # every attempt asks the same question
    assert waits == [0.5, 1.0]
    assert done.calls == [generation]


def test_a_retry_waits_the_retry_after_the_model_asked_for():
    provider = ScriptedProvider([unavailable(retry_after=3.0)],
                                ["ok", Chunk(finish_reason="stop")])
    generation, waits, _ = run(provider, retry=RetryPolicy(attempts=2, max_wait_s=10.0))
    assert generation.status == COMPLETE
    assert generation.text == "ok"
    assert waits == [3.0]
    assert len(provider.calls) == 2


def test_a_failure_after_tokens_were_shown_is_not_retried_and_keeps_the_text():
    dropped = ProviderError("The connection to the model dropped.", retryable=True)
    provider = ScriptedProvider(["Partial ", "answer", dropped],
                                ["never ", "asked", Chunk(finish_reason="stop")])
    generation, waits, done = run(provider, retry=RetryPolicy(attempts=5))
    assert generation.status == ERROR
    assert generation.error == "The connection to the model dropped."
    assert generation.text == "Partial answer"
    assert len(provider.calls) == 1
    assert waits == []
    assert done.calls == [generation]


def test_a_non_retryable_failure_is_not_retried():
    refused = ProviderError("The model rejected the API key (401).", retryable=False,
                            status=401)
    provider = ScriptedProvider([refused], ["never", Chunk(finish_reason="stop")])
    generation, waits, _ = run(provider, retry=RetryPolicy(attempts=5))
    assert generation.status == ERROR
    assert generation.error == "The model rejected the API key (401)."
    assert generation.text == ""
    assert len(provider.calls) == 1
    assert waits == []


def test_a_retry_after_longer_than_max_wait_is_not_waited_for():
    provider = ScriptedProvider([unavailable(retry_after=60.0)],
                                ["never", Chunk(finish_reason="stop")])
    generation, waits, _ = run(provider, retry=RetryPolicy(attempts=3, max_wait_s=10.0))
    assert generation.status == ERROR
    assert generation.error == "The model service is unavailable (503)."
    assert len(provider.calls) == 1
    assert waits == []


def test_when_attempts_are_exhausted_the_reply_ends_in_error_with_the_last_reason():
    provider = ScriptedProvider([unavailable()], [unavailable()],
                                [ProviderError("Still overloaded (529).", retryable=True)])
    generation, waits, done = run(provider, retry=RetryPolicy(attempts=2, base_delay_s=0.25))
    assert generation.status == ERROR
    assert generation.error == "Still overloaded (529)."
    assert len(provider.calls) == 3  # the first call and two retries
    assert waits == [0.25, 0.5]
    assert done.calls == [generation]


def test_without_a_retry_policy_a_retryable_failure_is_not_retried():
    provider = ScriptedProvider([unavailable()], ["never", Chunk(finish_reason="stop")])
    generation = new_generation()
    waits: list[float] = []
    run_generation(generation, provider, HISTORY, Done(), sleep=waits.append)
    assert generation.status == ERROR
    assert len(provider.calls) == 1
    assert waits == []


# -- cancels and kills -------------------------------------------------------------------------
def test_a_cancel_before_the_start_aborts_without_calling_the_model():
    provider = ScriptedProvider(["never", Chunk(finish_reason="stop")])
    generation = new_generation()
    generation.cancel_requested = True
    _, waits, done = run(provider, generation=generation)
    assert generation.status == ABORTED
    assert generation.text == ""
    assert provider.calls == []
    assert waits == []
    assert done.calls == [generation]


def start_blocked(provider: ScriptedProvider, block: Block,
                  retry: RetryPolicy | None = None) -> tuple[Generation, gevent.Greenlet, Done]:
    """Run a generation in its own greenlet until the provider reaches `block`."""
    generation = new_generation()
    done = Done()
    greenlet = gevent.spawn(run_generation, generation, provider, HISTORY, done, retry=retry,
                            sleep=lambda s: pytest.fail(f"no retry expected, asked to wait {s}"))
    assert block.reached.wait(WAIT_S), "the provider never reached the block"
    return generation, greenlet, done


def test_killing_with_generation_cancelled_mid_stream_aborts_keeps_text_and_closes_stream():
    block = Block()
    provider = ScriptedProvider(["Some ", "text", block, " never shown",
                                 Chunk(finish_reason="stop")])
    generation, greenlet, done = start_blocked(provider, block)
    assert generation.text == "Some text"

    greenlet.kill(GenerationCancelled, block=True, timeout=WAIT_S)

    assert greenlet.dead
    assert generation.status == ABORTED
    assert generation.cancel_requested
    assert generation.text == "Some text"
    assert len(provider.calls) == 1
    stream = provider.streams[0]
    assert stream.closed and stream.cleaned_up and not stream.finished
    assert stream.exited_by is GenerationCancelled
    assert done.calls == [generation]


def test_a_cancel_flag_seen_between_chunks_closes_the_providers_generator_and_aborts():
    block = Block()
    provider = ScriptedProvider(["Some ", block, "more ", "text", Chunk(finish_reason="stop")])
    generation, greenlet, done = start_blocked(provider, block)

    generation.cancel_requested = True  # e.g. a stop that arrived through the database
    block.release.set()
    greenlet.join(WAIT_S)

    assert greenlet.dead
    assert generation.status == ABORTED
    # The chunk already produced when the flag was seen is dropped, nothing after it is read.
    assert generation.text == "Some "
    stream = provider.streams[0]
    assert stream.closed and stream.cleaned_up and not stream.finished
    assert stream.exited_by is GeneratorExit  # closed by run_generation: upstream released
    assert done.calls == [generation]


def test_killing_with_plain_greenlet_exit_marks_the_reply_interrupted_keeping_text():
    block = Block()
    provider = ScriptedProvider(["Half ", "way", block, Chunk(finish_reason="stop")])
    generation, greenlet, done = start_blocked(provider, block)

    greenlet.kill(block=True, timeout=WAIT_S)  # gevent.GreenletExit: a worker shutting down

    assert greenlet.dead
    assert generation.status == INTERRUPTED
    assert generation.error == SHUTDOWN_REASON
    assert generation.text == "Half way"
    assert not generation.cancel_requested
    assert provider.streams[0].closed
    assert done.calls == [generation]


def test_a_cancel_during_the_backoff_wait_aborts_without_calling_the_model_again():
    waiting = Block()
    provider = ScriptedProvider([unavailable()], ["never", Chunk(finish_reason="stop")])
    generation = new_generation()
    done = Done()

    def sleep(seconds: float) -> None:
        waiting.reached.set()
        waiting.release.wait()

    greenlet = gevent.spawn(run_generation, generation, provider, HISTORY, done,
                            retry=RetryPolicy(attempts=3), sleep=sleep)
    assert waiting.reached.wait(WAIT_S)
    greenlet.kill(GenerationCancelled, block=True, timeout=WAIT_S)

    assert generation.status == ABORTED
    assert len(provider.calls) == 1
    assert done.calls == [generation]


def test_an_unexpected_exception_ends_in_error_with_the_generic_reason_only():
    secret = "sk-live-do-not-show-me"
    provider = ScriptedProvider(["Some text", KeyError(f"bad key {secret}")])
    generation, waits, done = run(provider, retry=RetryPolicy(attempts=3))
    assert generation.status == ERROR
    assert generation.error == INTERNAL_ERROR_REASON
    assert secret not in generation.error
    assert "Traceback" not in generation.error and "KeyError" not in generation.error
    assert generation.text == "Some text"
    assert len(provider.calls) == 1  # not a model failure: never retried
    assert waits == []
    assert done.calls == [generation]


def test_a_provider_that_fails_to_start_a_stream_ends_in_error_with_the_generic_reason():
    class Broken(ScriptedProvider):
        def stream(self, messages):
            raise RuntimeError("connection pool exploded at 0xdeadbeef")

    generation, _, done = run(Broken())
    assert generation.status == ERROR
    assert generation.error == INTERNAL_ERROR_REASON
    assert done.calls == [generation]


def test_finish_is_recorded_once_and_later_calls_change_nothing():
    generation = new_generation()
    generation.append("x")
    generation.finish(ERROR, "first")
    generation.finish(COMPLETE)
    assert (generation.status, generation.error) == (ERROR, "first")


# -- RetryPolicy on its own ----------------------------------------------------------------------
@pytest.mark.parametrize("attempt,expected", [(1, 0.5), (2, 1.0), (3, 2.0), (4, None)])
def test_retry_policy_backs_off_exponentially_up_to_its_attempts(attempt, expected):
    assert RetryPolicy(attempts=3, base_delay_s=0.5).delay(attempt, unavailable()) == expected


def test_retry_policy_gives_up_on_a_backoff_beyond_max_wait():
    policy = RetryPolicy(attempts=10, base_delay_s=4.0, max_wait_s=10.0)
    assert [policy.delay(n, unavailable()) for n in (1, 2, 3)] == [4.0, 8.0, None]


# -- Generation.text_between ---------------------------------------------------------------------
pieces_strategy = st.lists(st.text(max_size=8), max_size=12)


@given(prefix=st.text(max_size=10), pieces=pieces_strategy, data=st.data())
def test_text_between_returns_exact_slices_for_any_pieces_and_offsets(prefix, pieces, data):
    generation = Generation(1, 1, prefix=prefix, clock=FakeClock())
    for piece in pieces:
        generation.append(piece)
    whole = prefix + "".join(pieces)
    assert generation.text == whole
    assert generation.end == len(whole)

    start = data.draw(st.integers(min_value=0, max_value=len(whole) + 3), label="start")
    stop = data.draw(st.none() | st.integers(min_value=0, max_value=len(whole) + 3),
                     label="stop")
    assert generation.text_between(start, stop) == whole[start:stop]


@given(pieces=pieces_strategy)
def test_text_between_consecutive_cursors_rebuild_the_text_without_gaps_or_doubles(pieces):
    generation = Generation(1, 1, clock=FakeClock())
    seen, cursor = [], 0
    for piece in pieces:
        generation.append(piece)
        seen.append(generation.text_between(cursor, generation.end))
        cursor = generation.end
    assert "".join(seen) == "".join(pieces)
