"""Usage, estimates, prices, and the non-streaming fallback: units and the real openai client."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest

from app import create_app
from bench.fake_upstream import FakeUpstream, Reply
from config import TestConfig
from llm import Chunk, OpenAICompatProvider, ProviderError
from llm.pricing import Price, parse_prices
from llm.usage import add_usage, estimate_tokens, estimate_usage
from models import ABORTED, COMPLETE, ERROR, INTERRUPTED
from streaming.generation import Generation, GenerationCancelled, run_generation
from tests.test_generation import HISTORY, USAGE, Block, Done, FakeClock, ScriptedProvider

KEY = "sk-test-SECRET123"
PATIENCE_S = 10.0


# -- the estimate ------------------------------------------------------------------------------
def test_estimate_is_about_four_characters_per_token_plus_message_framing():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    usage = estimate_usage([{"role": "user", "content": "x" * 40}], "y" * 21)
    assert usage == {"prompt_tokens": 4 + 10, "completion_tokens": 6, "total_tokens": 20,
                     "estimated": True}


def test_usage_of_two_calls_adds_up_and_stays_estimated_when_either_was():
    exact = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    guessed = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "estimated": True}
    assert add_usage(None, exact) == exact
    assert add_usage(exact, None) == exact
    assert add_usage(exact, exact) == {"prompt_tokens": 20, "completion_tokens": 10,
                                       "total_tokens": 30}
    assert add_usage(exact, guessed)["estimated"] is True


# -- usage of a generation ---------------------------------------------------------------------
def run_to_end(provider: ScriptedProvider, generation: Generation | None = None) -> Generation:
    generation = generation or Generation(41, 7, clock=FakeClock())
    run_generation(generation, provider, HISTORY, Done())
    return generation


def test_a_complete_reply_keeps_the_models_own_usage_unmarked():
    generation = run_to_end(ScriptedProvider(["Hi ", "there", Chunk("", "stop", USAGE)]))
    assert generation.status == COMPLETE
    assert generation.usage == USAGE
    assert "estimated" not in generation.usage


def test_a_reply_stopped_before_usage_arrives_gets_an_estimate_marked_estimated():
    block = Block()
    provider = ScriptedProvider(["x" * 40, block, "never", Chunk("", "stop", USAGE)])
    generation = Generation(41, 7, clock=FakeClock())
    greenlet = gevent.spawn(run_generation, generation, provider, HISTORY, Done())
    assert block.reached.wait(5)
    greenlet.kill(GenerationCancelled, block=True, timeout=5)
    assert generation.status == ABORTED
    assert generation.usage == estimate_usage(HISTORY, "x" * 40)
    assert generation.usage["estimated"] is True
    assert generation.usage["completion_tokens"] == 10


@pytest.mark.parametrize("end, status", [
    (ProviderError("cut off", retryable=False), ERROR),
    (gevent.GreenletExit(), INTERRUPTED),
])
def test_a_reply_cut_off_or_interrupted_after_text_is_estimated(end, status):
    generation = run_to_end(ScriptedProvider(["abcdefgh", end]))
    assert generation.status == status
    assert generation.usage["estimated"] is True
    assert generation.usage["completion_tokens"] == 2


def test_a_request_refused_before_any_text_costs_nothing():
    generation = run_to_end(ScriptedProvider([ProviderError("no", status=400)]))
    assert generation.status == ERROR
    assert generation.usage is None


def test_a_continued_reply_adds_its_new_usage_to_the_earlier_calls():
    earlier = {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
               "estimated": True}
    generation = Generation(41, 7, prefix="Earlier", clock=FakeClock())
    generation.prior_usage = earlier
    run_to_end(ScriptedProvider([" more", Chunk("", "stop", USAGE)]), generation)
    assert generation.usage == {"prompt_tokens": 17, "completion_tokens": 7,
                                "total_tokens": 24, "estimated": True}


# -- prices ------------------------------------------------------------------------------------
def test_prices_give_usd_per_million_tokens_and_none_without_a_price():
    table = parse_prices('{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}')
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 500_000}
    assert table.cost("gpt-4o-mini", usage) == pytest.approx(0.45)
    assert table.cost("openai:gpt-4o-mini", usage) == pytest.approx(0.45)
    assert table.cost("demo", usage) is None
    assert table.cost("gpt-4o-mini", None) is None
    assert table.price_of("gpt-4o-mini") == Price(0.15, 0.6)
    assert not parse_prices("") and not parse_prices(None)


@pytest.mark.parametrize("text, says", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"m": 3}', "MODEL_PRICES['m']"),
    ('{"m": {"input": 1}}', "MODEL_PRICES['m']"),
    ('{"m": {"input": -1, "output": 1}}', "non-negative"),
    ('{"m": {"input": "1", "output": 1}}', "non-negative"),
    ('{"m": {"input": 1, "output": 1, "cached": 2}}', "MODEL_PRICES['m']"),
    ('{" ": {"input": 1, "output": 1}}', "empty model id"),
])
def test_a_bad_price_table_stops_the_start_with_a_message_naming_it(tmp_path, text, says):
    with pytest.raises(ValueError, match="MODEL_PRICES") as info:
        create_app(TestConfig, {"DATABASE_URL": f"sqlite:///{tmp_path / 'r.sqlite3'}",
                                "MODEL_PRICES": text})
    assert says in str(info.value)


# -- the fallback to a reply that is not streamed (the real openai client) ----------------------
@pytest.fixture
def refusing() -> Iterator[FakeUpstream]:
    with FakeUpstream(refuse_stream=400) as server:
        yield server


def provider_for(server: FakeUpstream) -> OpenAICompatProvider:
    return OpenAICompatProvider(base_url=server.url, api_key=KEY, model="fake-model",
                                connect_timeout=5.0, read_timeout=PATIENCE_S)


@pytest.mark.parametrize("status", [400, 405, 501])
def test_a_server_that_refuses_to_stream_is_asked_again_without_streaming(status):
    text = "One whole reply, all at once."
    with FakeUpstream(refuse_stream=status) as server:
        server.enqueue(Reply.words(text, usage={"prompt_tokens": 9, "completion_tokens": 7,
                                                "total_tokens": 16}))
        provider = provider_for(server)
        chunks = list(provider.stream(HISTORY))
        provider.close()
        first, second = server.requests
    assert [c.text for c in chunks if c.text] == [text]  # one piece: one delta
    assert chunks[-1] == Chunk(finish_reason="stop", usage={
        "prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}, streamed=False)
    assert (first.stream, first.status) == (True, status)
    assert second.stream is False and second.status == 200
    assert "stream_options" not in second.body
    assert second.body["messages"] == first.body["messages"]


def test_after_a_refusal_the_server_is_asked_without_streaming_straight_away(refusing):
    provider = provider_for(refusing)
    for _ in range(2):
        assert list(provider.stream(HISTORY))[-1].streamed is False
    provider.close()
    assert [r.stream for r in refusing.requests] == [True, False, False]


def test_a_bad_request_that_is_not_about_streaming_is_an_error_not_a_fallback():
    with FakeUpstream() as server:
        server.enqueue(Reply(tokens=[], status=400, error_message="Invalid 'temperature'."))
        provider = provider_for(server)
        with pytest.raises(ProviderError, match="HTTP 400"):
            list(provider.stream(HISTORY))
        provider.close()
        assert len(server.requests) == 1


def test_a_failure_of_the_non_streamed_request_is_a_provider_error(refusing):
    refusing.enqueue(Reply(tokens=[], status=503, error_message="Overloaded."))
    provider = provider_for(refusing)
    with pytest.raises(ProviderError, match="503") as info:
        list(provider.stream(HISTORY))
    provider.close()
    assert info.value.retryable and KEY not in str(info.value)


def test_a_generation_from_a_refusing_server_is_complete_and_marked_not_streamed(refusing):
    refusing.enqueue(Reply.words("Whole reply."))
    provider = provider_for(refusing)
    generation = run_to_end(provider)  # type: ignore[arg-type]
    provider.close()
    assert generation.status == COMPLETE
    assert generation.text == "Whole reply."
    assert generation.streamed is False
    assert generation.usage["completion_tokens"] == 2 and "estimated" not in generation.usage


# -- a reply whose worker died: the sweeper estimates -------------------------------------------
def test_a_reply_interrupted_by_the_sweeper_keeps_an_estimated_usage(engine):
    import datetime as dt

    from sqlalchemy.orm import Session, sessionmaker

    from models import STREAMING, Message, StreamDelta, Thread, utcnow
    from streaming.sweeper import Sweeper

    with Session(engine) as session:
        thread = Thread(owner="owner")
        session.add(thread)
        session.flush()
        prompt = Message(thread_id=thread.id, role="user", content="p" * 40)
        session.add(prompt)
        session.flush()
        reply = Message(thread_id=thread.id, parent_id=prompt.id, role="assistant",
                        status=STREAMING, heartbeat_at=utcnow() - dt.timedelta(minutes=5))
        session.add(reply)
        session.flush()
        session.add(StreamDelta(message_id=reply.id, start=0, end=10, text="r" * 10))
        session.commit()
        reply_id = reply.id
    sweeper = Sweeper(sessionmaker(engine), stale_after_s=30, unclaimed_after_s=60,
                      interval_s=5, publish=lambda *a: None, start=lambda m: None)
    assert sweeper.sweep()[0] == [reply_id]
    with Session(engine) as session:
        usage = session.get(Message, reply_id).usage
    assert usage == {"prompt_tokens": 4 + 10, "completion_tokens": 3, "total_tokens": 17,
                     "estimated": True}


def test_dollars_are_shown_in_cents_or_a_few_significant_digits():
    from views.usage import usd

    assert [usd(a) for a in (None, 0, 1234.5, 0.5, 0.012, 0.0061234, 1e-9)] == [
        "–", "$0", "$1,234.50", "$0.50", "$0.012", "$0.00612", "<$0.000001"]
