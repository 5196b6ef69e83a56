"""The Anthropic and Azure OpenAI providers: the real clients against real-socket fakes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fake_anthropic import FakeAnthropic
from bench.fake_upstream import FakeUpstream, Reply
from llm import Chunk, ProviderError
from llm.anthropic_provider import AnthropicProvider, request_messages, skip_held_space
from llm.azure_openai import AzureOpenAIProvider

from .test_providers import collect

KEY = "sk-ant-test-SECRET123456"
HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Tell me a joke"},
]
PATIENCE_S = 10.0


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_script(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("fake", "azure_fake"):
        if name in request.fixturenames:
            request.getfixturevalue(name).clear_queue()


@pytest.fixture(scope="module")
def provider(fake: FakeAnthropic) -> Iterator[AnthropicProvider]:
    p = AnthropicProvider(api_key=KEY, model="claude-fake", base_url=fake.url,
                          connect_timeout=5.0, read_timeout=PATIENCE_S)
    yield p
    p.close()


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def assert_user_facing(err: ProviderError) -> None:
    reason = str(err)
    assert KEY not in reason and "SECRET123456" not in reason
    assert 0 < len(reason) < 300 and "\n" not in reason
    assert "Traceback" not in reason and " object at 0x" not in reason


# -- Anthropic: the happy path --------------------------------------------------------------
def test_text_arrives_exactly_as_streamed_with_stop_reason_and_usage(fake, provider):
    tokens = ["Hel", "lo, ", "wörld 🌍", "\r\n", "<b>&amp;</b>", "  end"]
    fake.enqueue(Reply(tokens=tokens))
    chunks, err = collect(provider.stream(HISTORY))
    assert err is None
    assert [c.text for c in chunks if c.text] == tokens
    assert chunks[-1].finish_reason == "stop"
    record = fake.requests[-1]
    usage = chunks[-1].usage
    assert usage["completion_tokens"] == len(tokens)
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The system prompt is the `system` parameter; the turns alternate, starting with the user.
    assert record.body["system"] == "You are terse."
    assert [m["role"] for m in record.body["messages"]] == ["user", "assistant", "user"]
    assert record.body["stream"] is True and record.body["model"] == "claude-fake"
    assert record.headers.get("anthropic-version")


def test_max_tokens_stop_reason_is_length(fake, provider):
    fake.enqueue(Reply(tokens=["cut ", "short"], finish_reason="length"))
    chunks, err = collect(provider.stream(HISTORY))
    assert err is None and chunks[-1].finish_reason == "length"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=15))
def test_any_text_survives_the_wire_exactly(fake, provider, tokens):
    fake.enqueue(Reply(tokens=tokens))
    chunks, err = collect(provider.stream(HISTORY))
    assert err is None and text_of(chunks) == "".join(tokens)


def test_the_connection_is_reused_for_the_next_reply(fake, provider):
    fake.enqueue(Reply.words("one two"), Reply.words("three four"))
    collect(provider.stream(HISTORY))
    collect(provider.stream(HISTORY))
    first, second = fake.requests[-2:]
    assert first.peer == second.peer


# -- Anthropic: continuing a partial reply ---------------------------------------------------
def test_a_partial_reply_is_continued_natively_and_the_seam_is_exact(fake, provider):
    partial = "The answer is:\n\n1. First "
    fake.enqueue(Reply(tokens=[" ", "second", " point."]))
    chunks, err = collect(provider.stream([*HISTORY, {"role": "assistant",
                                                      "content": partial}]))
    assert err is None
    sent = fake.requests[-1].body["messages"]
    # The API refuses trailing whitespace on the final assistant message: it is held back…
    assert sent[-1] == {"role": "assistant", "content": "The answer is:\n\n1. First"}
    # …and the model's own space that follows is not shown twice.
    assert partial + text_of(chunks) == "The answer is:\n\n1. First second point."
    assert provider.continues_exactly


def test_held_whitespace_is_matched_only_as_far_as_the_model_repeats_it():
    assert skip_held_space("\n\nNext", "\n") == ("\nNext", "")
    assert skip_held_space("Next", " ") == ("Next", "")
    assert skip_held_space(" ", "  ") == ("", " ")
    assert skip_held_space(" word", " ") == ("word", "")


def test_history_becomes_alternating_turns():
    system, turns, held = request_messages([
        {"role": "system", "content": "S"},
        {"role": "assistant", "content": "orphan reply cut off by the history limit"},
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "   "}])
    assert system == "S"
    assert turns == [{"role": "user", "content": "a\n\nb"}]
    assert held == "   "


# -- Anthropic: failures ---------------------------------------------------------------------
def test_http_429_is_retryable_with_the_servers_retry_after(fake, provider):
    fake.enqueue(Reply(tokens=[], status=429, retry_after="7",
                       error_message="Number of request tokens has exceeded your limit."))
    chunks, err = collect(provider.stream(HISTORY))
    assert chunks == [] and err is not None
    assert err.retryable and err.retry_after == 7.0 and err.status == 429
    assert "429" in err.reason and "7 s" in err.reason
    assert_user_facing(err)


def test_http_500_is_retryable(fake, provider):
    fake.enqueue(Reply(tokens=[], status=500, error_message="Internal server error"))
    _, err = collect(provider.stream(HISTORY))
    assert err is not None and err.retryable and err.status == 500
    assert "HTTP 500" in err.reason
    assert_user_facing(err)


def test_a_rejected_key_is_not_retried_and_never_shown(fake):
    wrong = AnthropicProvider(api_key="sk-ant-wrong-SECRET123456", model="claude-fake",
                              base_url=fake.url, read_timeout=PATIENCE_S)
    _, err = collect(wrong.stream(HISTORY))
    assert err is not None and not err.retryable and "401" in err.reason
    assert "sk-ant-wrong" not in err.reason
    wrong.close()


def test_an_error_event_mid_stream_keeps_the_text_before_it(fake, provider):
    fake.enqueue(Reply(tokens=["Partial ", "answer ", "never"], error_after=2,
                       error_message="Overloaded"))
    chunks, err = collect(provider.stream(HISTORY))
    assert text_of(chunks) == "Partial answer "
    assert err is not None and "mid-reply" in err.reason and "Overloaded" in err.reason
    assert err.retryable
    assert_user_facing(err)


def test_a_cut_connection_is_an_error_after_the_text_so_far(fake, provider):
    fake.enqueue(Reply(tokens=["one ", "two ", "three"], drop_after=2))
    chunks, err = collect(provider.stream(HISTORY))
    assert text_of(chunks) == "one two "
    assert err is not None and err.retryable
    assert_user_facing(err)


def test_a_stream_without_a_stop_reason_is_cut_off_not_complete(fake, provider):
    fake.enqueue(Reply(tokens=["all ", "of ", "it"], finish_reason=None))
    chunks, err = collect(provider.stream(HISTORY))
    assert text_of(chunks) == "all of it"
    assert err is not None and "cut off" in err.reason and err.retryable


def test_a_silent_model_times_out_with_a_reason(fake):
    slow = AnthropicProvider(api_key=KEY, model="claude-fake", base_url=fake.url,
                             read_timeout=0.3)
    fake.enqueue(Reply(tokens=["late"], first_token_delay_s=3.0))
    _, err = collect(slow.stream(HISTORY))
    assert err is not None and err.retryable and "0.3 s" in err.reason
    slow.close()


def test_closing_the_stream_mid_reply_closes_the_upstream_connection(fake, provider):
    fake.enqueue(Reply(tokens=[f"w{i} " for i in range(200)], token_delay_s=0.02))
    stream = provider.stream(HISTORY)
    first = next(stream)
    assert first.text == "w0 "
    stream.close()
    record = fake.requests[-1]
    assert fake.wait_for_outcome(record, timeout=PATIENCE_S) == "client_closed"
    assert record.closed_early and record.tokens_sent < 200


def test_check_says_whether_the_api_answers(fake, provider):
    assert provider.check(timeout=5.0) is None
    gone = AnthropicProvider(api_key=KEY, model="m", base_url="http://127.0.0.1:9")
    reason = gone.check(timeout=2.0)
    assert reason and "127.0.0.1:9" in reason and KEY not in reason


# -- Azure OpenAI --------------------------------------------------------------------------
AZURE_KEY = "azure-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def azure_fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(azure_api_key=AZURE_KEY) as server:
        yield server


def azure(fake: FakeUpstream, key: str = AZURE_KEY) -> AzureOpenAIProvider:
    return AzureOpenAIProvider(endpoint=fake.endpoint, api_key=key,
                               api_version="2024-10-21", deployment="my-deployment",
                               read_timeout=PATIENCE_S)


def test_azure_streams_from_the_deployment_path_with_the_api_key_header(azure_fake):
    provider = azure(azure_fake)
    azure_fake.enqueue(Reply(tokens=["Azure ", "says ", "hi 🌍"]))
    chunks, err = collect(provider.stream(HISTORY))
    assert err is None and text_of(chunks) == "Azure says hi 🌍"
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage["completion_tokens"] == 3
    record = azure_fake.requests[-1]
    assert record.path == "/openai/deployments/my-deployment/chat/completions"
    assert record.headers.get("api-key") == AZURE_KEY
    assert "authorization" not in record.headers
    assert provider.name == "azure" and provider.model == "my-deployment"
    assert provider.check(timeout=5.0) is None
    provider.close()


def test_azure_with_a_wrong_key_fails_clearly(azure_fake):
    provider = azure(azure_fake, key="wrong-key-SECRET0123456789abcdef")
    _, err = collect(provider.stream(HISTORY))
    assert err is not None and "401" in err.reason and not err.retryable
    assert "SECRET" not in err.reason
    provider.close()


def test_azure_cancel_closes_the_upstream_connection(azure_fake):
    provider = azure(azure_fake)
    azure_fake.enqueue(Reply(tokens=[f"w{i} " for i in range(200)], token_delay_s=0.02))
    stream = provider.stream(HISTORY)
    assert next(stream).text == "w0 "
    started = time.monotonic()
    stream.close()
    record = azure_fake.requests[-1]
    assert azure_fake.wait_for_outcome(record, timeout=PATIENCE_S) == "client_closed"
    assert time.monotonic() - started < PATIENCE_S
    provider.close()
