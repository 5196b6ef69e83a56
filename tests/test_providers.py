"""The model providers against a real-socket fake upstream, and the fake upstream itself."""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fake_upstream import FakeUpstream, Reply, split_words
from llm import Chunk, DemoProvider, OpenAICompatProvider, Provider, ProviderError, make_provider
from llm.demo import demo_reply

KEY = "sk-test-SECRET123"
HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Tell me a joke"},
]
# Bounds are generous on purpose: they catch hangs, not slow machines.
PATIENCE_S = 10.0


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_script(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").clear_queue()


@pytest.fixture(scope="module")
def provider(fake: FakeUpstream) -> Iterator[OpenAICompatProvider]:
    p = OpenAICompatProvider(base_url=fake.url, api_key=KEY, model="fake-model",
                             connect_timeout=5.0, read_timeout=PATIENCE_S)
    yield p
    p.close()


def collect(stream: Iterator[Chunk]) -> tuple[list[Chunk], ProviderError | None]:
    chunks: list[Chunk] = []
    try:
        for chunk in stream:
            chunks.append(chunk)
    except ProviderError as err:
        return chunks, err
    return chunks, None


def texts(chunks: list[Chunk]) -> list[str]:
    return [c.text for c in chunks if c.text]


def assert_user_facing(err: ProviderError) -> None:
    reason = str(err)
    assert reason == err.reason
    assert KEY not in reason and "SECRET123" not in reason
    assert 0 < len(reason) < 300
    assert "Traceback" not in reason and " object at 0x" not in reason
    assert "\n" not in reason


# -- OpenAICompatProvider: the happy path ---------------------------------------------------
def test_streamed_text_is_exactly_the_scripted_tokens(fake, provider):
    tokens = ["Hello", ", wörld", " 🎉👩‍💻", "\n\n", "", "line\ttwo", " 中文", "\r\n",
              " \"q\" \\ </s>", " end."]
    fake.enqueue(Reply(tokens=tokens))
    chunks, err = collect(provider.stream(HISTORY))
    assert err is None
    assert texts(chunks) == [t for t in tokens if t]
    assert "".join(c.text for c in chunks) == "".join(tokens)
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    assert chunks[-1].text == "" and chunks[-1].finish_reason == "stop"


def test_usage_comes_from_the_chunk_with_no_choices(fake, provider):
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    fake.enqueue(Reply(tokens=["a", "b", "c"], usage=usage), Reply.words("one two three four"))
    chunks, err = collect(provider.stream(HISTORY))
    assert err is None and chunks[-1].usage == usage
    chunks, err = collect(provider.stream(HISTORY))
    assert err is None
    assert chunks[-1].usage["completion_tokens"] == 4
    assert chunks[-1].usage["total_tokens"] == chunks[-1].usage["prompt_tokens"] + 4


def test_upstream_receives_history_usage_option_and_bearer_key(fake, provider):
    seen = len(fake.requests)
    collect(provider.stream(HISTORY))
    record = fake.wait_for_requests(seen + 1, PATIENCE_S)[seen]
    assert record.body["messages"] == HISTORY
    assert record.body["model"] == "fake-model"
    assert record.body["stream"] is True
    assert record.body["stream_options"] == {"include_usage": True}
    assert record.headers["Authorization"] == f"Bearer {KEY}"
    assert record.headers["User-Agent"].startswith("OpenAI/Python")
    assert record.problem is None
    assert fake.wait_for_outcome(record, PATIENCE_S) == "complete"


def test_finish_reason_other_than_stop_is_passed_through(fake, provider):
    fake.enqueue(Reply(tokens=["cut", " here"], finish_reason="length"))
    chunks, err = collect(provider.stream(HISTORY))
    assert err is None and chunks[-1].finish_reason == "length"


# -- OpenAICompatProvider: failures ---------------------------------------------------------
@pytest.mark.parametrize("send_done", [True, False])
def test_stream_without_finish_reason_is_an_error_after_the_text(fake, provider, send_done):
    fake.enqueue(Reply(tokens=["partial", " answer"], finish_reason=None, send_done=send_done))
    chunks, err = collect(provider.stream(HISTORY))
    assert texts(chunks) == ["partial", " answer"]
    assert err is not None and "cut off" in str(err) and err.retryable
    assert_user_facing(err)


@pytest.mark.parametrize(("status", "retryable", "expected"), [
    (500, True, "HTTP 500"),
    (503, True, "HTTP 503"),
    (401, False, "HTTP 401"),
    (400, False, "HTTP 400"),
    (404, False, "HTTP 404"),
])
def test_http_error_status_is_a_short_provider_error(fake, provider, status, retryable, expected):
    fake.enqueue(Reply(tokens=["never"], status=status,
                       error_message=f"Incorrect API key provided: {KEY}. Bearer {KEY}"))
    chunks, err = collect(provider.stream(HISTORY))
    assert chunks == []
    assert err is not None and err.status == status and err.retryable is retryable
    assert expected in str(err)
    assert_user_facing(err)


def test_rate_limit_with_retry_after_seconds(fake, provider):
    fake.enqueue(Reply(tokens=[], status=429, error_message="Slow down.", retry_after="20"))
    _, err = collect(provider.stream(HISTORY))
    assert err is not None and err.status == 429 and err.retryable
    assert err.retry_after == pytest.approx(20.0)
    assert "rate-limited (HTTP 429); try again in 20 s" in str(err)
    assert_user_facing(err)


def test_retry_after_as_an_http_date(fake, provider):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    fake.enqueue(Reply(tokens=[], status=503, error_message="busy", retry_after=when))
    _, err = collect(provider.stream(HISTORY))
    assert err is not None and err.retryable
    assert err.retry_after is not None and 20 < err.retry_after <= 31


def test_a_long_server_message_is_shortened_not_dropped(fake, provider):
    said = "The engine is overloaded: " + " ".join(f"detail{i}" for i in range(60))
    fake.enqueue(Reply(tokens=[], status=529, error_message=said))
    _, err = collect(provider.stream(HISTORY))
    assert err is not None and err.status == 529
    prefix = "The model is overloaded (HTTP 529); try again shortly. Server said: "
    assert str(err).startswith(prefix + "The engine is overloaded: detail0 detail1")
    shown = str(err).removeprefix(prefix)
    assert len(shown) == 200 and shown.endswith("…") and said.startswith(shown[:-1])
    assert_user_facing(err)


def test_a_secret_where_a_long_message_is_cut_is_still_scrubbed(fake, provider):
    # The key straddles the 200th character: scrubbing before cutting still finds it.
    said = "x" * 180 + f" key {KEY} rejected " + "y" * 100
    fake.enqueue(Reply(tokens=[], status=500, error_message=said))
    _, err = collect(provider.stream(HISTORY))
    assert err is not None and KEY[:8] not in str(err) and "[redacted]" in str(err)
    assert_user_facing(err)


@pytest.mark.parametrize(("said", "shown"), [
    ("<html><body><h1>502 Bad Gateway</h1></body></html>", None),
    ("<!DOCTYPE html><title>Error</title>", None),
    ("max_tokens must be <= 4096", "max_tokens must be <= 4096"),
])
def test_an_html_page_is_left_out_but_a_message_with_a_less_than_sign_is_kept(said, shown):
    from llm.reasons import server_message

    assert server_message(said, KEY) == shown


def test_error_event_mid_stream_after_earlier_tokens(fake, provider):
    fake.enqueue(Reply(tokens=["one", " two", " three"], error_after=2,
                       error_message=f"Engine overloaded (key {KEY})"))
    chunks, err = collect(provider.stream(HISTORY))
    assert texts(chunks) == ["one", " two"]
    assert err is not None and "mid-reply" in str(err) and "Engine overloaded" in str(err)
    assert_user_facing(err)


def test_dropped_connection_mid_stream(fake, provider):
    seen = len(fake.requests)
    fake.enqueue(Reply(tokens=["one", " two", " three"], drop_after=2))
    chunks, err = collect(provider.stream(HISTORY))
    assert texts(chunks) == ["one", " two"]
    assert err is not None and err.retryable and "dropped" in str(err)
    assert_user_facing(err)
    assert fake.wait_for_outcome(fake.requests[seen], PATIENCE_S) == "dropped"


def test_idle_gap_longer_than_read_timeout(fake):
    quick = OpenAICompatProvider(base_url=fake.url, api_key=KEY, model="m", read_timeout=0.3)
    fake.enqueue(Reply(tokens=["first", " late"], token_delay_s=30.0))
    started = time.monotonic()
    chunks, err = collect(quick.stream(HISTORY))
    assert time.monotonic() - started < PATIENCE_S
    assert texts(chunks) == ["first"]
    assert err is not None and err.retryable and "0.3 s" in str(err)
    assert_user_facing(err)


def test_no_first_token_within_read_timeout(fake):
    quick = OpenAICompatProvider(base_url=fake.url, api_key=KEY, model="m", read_timeout=0.3)
    fake.enqueue(Reply(tokens=["late"], first_token_delay_s=30.0))
    chunks, err = collect(quick.stream(HISTORY))
    assert chunks == []
    assert err is not None and str(err) == "The model did not answer within 0.3 s."


def test_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    p = OpenAICompatProvider(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, model="m")
    _, err = collect(p.stream(HISTORY))
    assert err is not None and err.retryable and "Could not connect" in str(err)
    assert_user_facing(err)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on Linux SYN drops")
def test_connect_timeout():
    # A listener whose accept queue is full drops new SYNs, so connect() hangs until timeout.
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        p = OpenAICompatProvider(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY,
                                 model="m", connect_timeout=0.3, read_timeout=0.3)
        started = time.monotonic()
        _, err = collect(p.stream(HISTORY))
    assert time.monotonic() - started < PATIENCE_S
    assert err is not None and err.retryable
    assert "within 0.3 s" in str(err)


@contextlib.contextmanager
def one_shot_server(response: bytes) -> Iterator[str]:
    """A base URL whose server reads one request, sends `response` verbatim and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_once() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(response)

    server = threading.Thread(target=serve_once, daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        listener.close()
        server.join(PATIENCE_S)


def test_lost_connection_after_the_finish_reason_still_completes():
    # The finish chunk arrives, then the server vanishes before usage and [DONE].
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "All"}}]},
        {"choices": [{"index": 0, "delta": {"content": " done."}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    body = b"".join(
        b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                                "model": "m", **e}).encode() + b"\n\n" for e in events)
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(body), body))
    with one_shot_server(response) as url:
        p = OpenAICompatProvider(base_url=url, api_key=KEY, model="m")
        chunks, err = collect(p.stream(HISTORY))
    assert err is None
    assert texts(chunks) == ["All", " done."]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is None


def test_tolerates_servers_that_leave_out_optional_fields():
    # llama.cpp-style: no `index`, no delta on the last chunk, usage on it, and no [DONE].
    events = [
        {"choices": [{"delta": {"content": "Hi"}}]},
        {"choices": [{"delta": {"content": " there"}, "finish_reason": None}]},
        {"choices": [{"finish_reason": "stop"}],
         "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}},
    ]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    with one_shot_server(response) as url:
        p = OpenAICompatProvider(base_url=url, api_key=KEY, model="m")
        chunks, err = collect(p.stream(HISTORY))
    assert err is None and texts(chunks) == ["Hi", " there"]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def test_error_status_with_a_truncated_body_is_still_a_provider_error():
    # The SDK reads an error body outside its own error mapping, so httpx2 errors escape it.
    response = (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{\"error\":")
    with one_shot_server(response) as url:
        p = OpenAICompatProvider(base_url=url, api_key=KEY, model="m")
        chunks, err = collect(p.stream(HISTORY))
    assert chunks == [] and err is not None and err.retryable
    assert_user_facing(err)


def test_closing_the_generator_closes_the_upstream_response(fake, provider):
    seen = len(fake.requests)
    fake.enqueue(Reply(tokens=[f"t{i} " for i in range(500)], token_delay_s=0.02))
    stream = provider.stream(HISTORY)
    first_two = [next(stream), next(stream)]
    assert texts(first_two) == ["t0 ", "t1 "]
    stream.close()
    record = fake.requests[seen]
    fake.wait_until(lambda: record.closed_early, PATIENCE_S, what="the client to hang up")
    assert record.outcome == "client_closed" and record.closed_at is not None
    assert record.tokens_sent < 500 and record.finished is None


def test_nothing_is_sent_before_the_generator_is_advanced(fake, provider):
    seen = len(fake.requests)
    stream = provider.stream(HISTORY)
    stream.close()
    assert len(fake.requests) == seen


def test_provider_error_keeps_its_details_when_pickled():
    import pickle

    err = ProviderError("Busy.", retryable=True, retry_after=2.5, status=429)
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.retryable, copy.retry_after, copy.status) == ("Busy.", True, 2.5, 429)


# -- make_provider -----------------------------------------------------------------------------
def test_make_provider_picks_demo_without_openai_settings():
    p = make_provider({})
    assert isinstance(p, DemoProvider) and isinstance(p, Provider)
    assert (p.name, p.model, p.label) == ("demo", "demo", "Demo model (offline)")
    assert p.token_delay_s == pytest.approx(0.035)
    assert isinstance(make_provider({"CHAT_PROVIDER": "", "OPENAI_API_KEY": ""}), DemoProvider)
    p = make_provider({"CHAT_PROVIDER": "demo", "OPENAI_API_KEY": "x", "DEMO_TOKEN_DELAY_MS": "0"})
    assert isinstance(p, DemoProvider) and p.token_delay_s == 0


def test_make_provider_picks_openai_when_a_key_or_base_url_is_set(fake):
    p = make_provider({"OPENAI_API_KEY": "sk-x"})
    assert isinstance(p, OpenAICompatProvider) and isinstance(p, Provider)
    assert (p.name, p.model, p.label) == ("openai", "gpt-4o-mini", "gpt-4o-mini")
    assert (p.connect_timeout, p.read_timeout) == (10.0, 60.0)
    p = make_provider({"CHAT_PROVIDER": " OpenAI ", "OPENAI_BASE_URL": fake.url,
                       "CHAT_MODEL": "llama3.2", "OPENAI_CONNECT_TIMEOUT_S": "2.5",
                       "OPENAI_READ_TIMEOUT_S": 30})
    assert isinstance(p, OpenAICompatProvider) and p.model == p.label == "llama3.2"
    assert (p.connect_timeout, p.read_timeout) == (2.5, 30.0)


def test_make_provider_without_key_talks_to_a_local_server(fake):
    seen = len(fake.requests)
    p = make_provider({"OPENAI_BASE_URL": fake.url, "CHAT_MODEL": "local"})
    chunks, err = collect(p.stream([{"role": "user", "content": "hi"}]))
    assert err is None and "".join(texts(chunks)) == "Hello from the fake model."
    record = fake.requests[seen]
    assert record.headers["authorization"] == "Bearer unused"
    assert record.body["model"] == "local"


def test_make_provider_rejects_unknown_names_and_bad_numbers():
    with pytest.raises(ValueError, match=r"'gpt'.*'openai', 'demo'"):
        make_provider({"CHAT_PROVIDER": "gpt"})
    with pytest.raises(ValueError, match="OPENAI_READ_TIMEOUT_S"):
        make_provider({"OPENAI_API_KEY": "k", "OPENAI_READ_TIMEOUT_S": "soon"})
    with pytest.raises(ValueError, match="OPENAI_CONNECT_TIMEOUT_S"):
        make_provider({"OPENAI_API_KEY": "k", "OPENAI_CONNECT_TIMEOUT_S": "0"})


# -- DemoProvider --------------------------------------------------------------------------------
TRICKY_PROMPT = ("# Not a heading\n- not a list\n```\n<img src=x onerror=alert(1)> "
                 "[link](javascript:alert(1)) *em* _u_ `code` &amp; | a | b |")


def run_demo(prompt: str, delay: float = 0.035) -> tuple[list[Chunk], list[float]]:
    sleeps: list[float] = []
    demo = DemoProvider(token_delay_s=delay, sleep=sleeps.append)
    messages = [*HISTORY[:-1], {"role": "user", "content": prompt}]
    return list(demo.stream(messages)), sleeps


def test_demo_reply_is_deterministic_word_tokens_with_usage():
    chunks, sleeps = run_demo("How do I use Relay?")
    again, sleeps_again = run_demo("How do I use Relay?")
    assert chunks == again and sleeps == sleeps_again
    body, last = chunks[:-1], chunks[-1]
    reply = "".join(c.text for c in body)
    assert reply == demo_reply("How do I use Relay?")
    assert all(re.fullmatch(r"\S+\s*", c.text) for c in body)
    assert 120 <= len(reply.split()) <= 220
    assert last.text == "" and last.finish_reason == "stop"
    usage = last.usage
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert len(sleeps) == len(body) - 1
    assert all(0.6 * 0.035 <= s <= 1.4 * 0.035 for s in sleeps) and len(set(sleeps)) > 1
    for needle in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "CHAT_MODEL",
                   "http://localhost:11434/v1", "http://localhost:8080/v1", "```", "vLLM"):
        assert needle in reply
    assert reply.startswith("### ")


def test_demo_quotes_the_prompt_without_breaking_markdown():
    markdown_it = pytest.importorskip("markdown_it")
    chunks, _ = run_demo(TRICKY_PROMPT)
    html = markdown_it.MarkdownIt("commonmark").render("".join(c.text for c in chunks))
    assert html.count("<h3>") == 1 and html.count("<blockquote>") == 1
    assert html.count("<pre>") == 1 and html.count("<ul>") == 1
    assert "<img" not in html and "<a " not in html and "<em>" not in html
    quote = re.search(r"<blockquote>\s*<p>(.*?)</p>", html, re.S).group(1)
    flat = " ".join(TRICKY_PROMPT.split())
    expected = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert quote == expected


def test_demo_truncates_long_prompts_and_handles_no_user_message():
    chunks, _ = run_demo("word " * 500)
    reply = "".join(c.text for c in chunks)
    assert "…" in reply and 120 <= len(reply.split()) <= 220
    demo = DemoProvider(sleep=lambda s: None)
    chunks = list(demo.stream([{"role": "system", "content": "x"}]))
    assert chunks[-1].finish_reason == "stop" and "empty message" in "".join(c.text for c in chunks)


def test_demo_default_sleep_is_looked_up_at_call_time(monkeypatch):
    # gevent patches time.sleep after import in some setups; the demo must use the patched one.
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    chunks = list(DemoProvider(token_delay_s=0.01).stream([{"role": "user", "content": "hi"}]))
    assert len(calls) == len(chunks) - 2


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=400))
def test_demo_reply_shape_holds_for_any_prompt(prompt):
    markdown_it = pytest.importorskip("markdown_it")
    reply = demo_reply(prompt)
    assert 120 <= len(reply.split()) <= 220
    html = markdown_it.MarkdownIt("commonmark").render(reply)
    assert html.count("<blockquote>") == 1 and html.count("<pre>") == 1
    assert html.count("<h3>") == 1 and html.count("<ul>") == 1


# -- the fake upstream itself -----------------------------------------------------------------
@given(st.text())
def test_reply_words_is_lossless(text):
    tokens = Reply.words(text).tokens
    assert "".join(tokens) == text
    assert tokens == split_words(text)
    assert all(t.strip() for t in tokens) or text.isspace() or not text


def _post(port: int, body: dict, conn: http.client.HTTPConnection | None = None):
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE_S)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return conn, response, response.read()


def test_fake_answers_non_streaming_requests_and_keeps_connections_alive(fake):
    seen = len(fake.requests)
    fake.enqueue(Reply.words("Plain answer."))
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    conn, response, raw = _post(fake.port, body)
    assert response.status == 200
    answer = json.loads(raw)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "Plain answer."
    _, response, raw = _post(fake.port, {**body, "stream": True}, conn)
    conn.close()
    assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
    events = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "",
                                                "refusal": None}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    first, second = fake.requests[seen:seen + 2]
    assert first.peer == second.peer  # one connection, two requests


def test_fake_rejects_requests_the_openai_client_would_not_send(fake):
    conn, response, raw = _post(fake.port, {"messages": [{"role": "user", "content": "q"}]})
    assert response.status == 400 and "model" in json.loads(raw)["error"]["message"]
    _, response, _ = _post(fake.port, {"model": "m", "messages": [], "stream": True}, conn)
    conn.close()
    assert response.status == 400


def test_fake_stats_endpoint(fake, provider):
    seen = len(fake.requests)
    collect(provider.stream(HISTORY))
    fake.wait_for_outcome(fake.requests[seen], PATIENCE_S)
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=PATIENCE_S)
    conn.request("GET", "/_fake/stats")
    stats = json.loads(conn.getresponse().read())
    conn.close()
    last = stats["requests"][-1]
    assert last["outcome"] == "complete" and last["tokens_sent"] == 5
    assert last["arrived"] <= last["first_token_sent"] <= last["finished"] <= stats["now"]
    assert "body" not in last


def test_fake_sustains_many_concurrent_streams():
    streams = 120
    tokens = [f"w{i} " for i in range(10)]
    # Every stream holds after its first token until all of them are open at once, however
    # slowly a busy machine starts the clients.
    all_open = threading.Event()
    with FakeUpstream(default_reply=lambda body: Reply(
            tokens=tokens, token_delay_s=0.05, hold=all_open, hold_at=1)) as up:
        results: list[str] = []
        gate = threading.Barrier(streams)

        def client() -> None:
            gate.wait()
            conn, response, raw = _post(up.port, {"model": "m", "stream": True,
                                                  "messages": [{"role": "user", "content": "q"}]})
            conn.close()
            results.append(raw.decode())

        workers = [threading.Thread(target=client, daemon=True) for _ in range(streams)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + PATIENCE_S * 3
        while up.active_streams < streams and time.monotonic() < deadline:
            time.sleep(0.01)
        all_open.set()
        for w in workers:
            w.join(PATIENCE_S * 3)
        assert len(results) == streams
        assert all(r.endswith("data: [DONE]\n\n") and r.count("w9 ") == 1 for r in results)
        assert up.max_active_streams == streams
        assert all(up.wait_for_outcome(r, PATIENCE_S) == "complete" for r in up.requests)


def test_replies_one_after_another_reuse_the_connection(fake, provider):
    fake.enqueue(Reply.words("first reply"), Reply.words("second reply"),
                 Reply.words("third reply"))
    for _ in range(3):
        chunks, err = collect(provider.stream(HISTORY))
        assert err is None and chunks[-1].finish_reason == "stop"
    peers = [r.peer for r in list(fake.requests)[-3:]]
    assert len(set(peers)) == 1, peers  # one TCP connection, no handshake per reply
