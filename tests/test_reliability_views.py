"""Reliability in the HTTP layer, in-process: continue and retry, rate limits, security headers,
oversized and malformed bodies, and the API key staying on the server.

Replies in a failed, stopped or interrupted state are written through the models (that is
how the engine leaves them); everything else goes through Flask's test client the way a
browser, an htmx request or an API client would.
"""

from __future__ import annotations

import datetime as dt

import gevent
import pytest
from sqlalchemy import func, select

from llm.demo import demo_reply, split_words
from models import (
    ABORTED,
    COMPLETE,
    ERROR,
    INTERRUPTED,
    PENDING,
    STREAMING,
    Message,
    StreamDelta,
    db,
    utcnow,
)
from streaming.sse import decode_delta
from tests.conftest import JSON, csrf_of, decoded, made_app, new_thread, sse_events
from tests.dom import Dom

HTMX = {"HX-Request": "true"}
PROMPT = "Explain resumable streams"
PARTIAL = "Resumable streams keep <every> character & \"quote\" 'as is'.\r\nThen "
REASONS = {
    ERROR: "The model service is unavailable (503).",
    ABORTED: None,
    INTERRUPTED: "The server handling this reply stopped; the text up to that point is kept.",
}
RESUMABLE = (ERROR, ABORTED, INTERRUPTED)


# -- helpers -----------------------------------------------------------------------------------
def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def stored(app, message_id: int) -> Message:
    with app.app_context():
        message = db.session.get(Message, message_id)
        db.session.expunge(message)
        return message


def add_reply(app, thread_id: int, status: str, content: str = PARTIAL,
              error: str | None = None) -> int:
    """A prompt and its reply left in `status` with `content`, as the engine leaves them."""
    with app.app_context():
        user = Message(thread_id=thread_id, role="user", content=PROMPT, status=COMPLETE)
        reply = Message(thread_id=thread_id, role="assistant", content=content, status=status,
                        error=error if error is not None else REASONS.get(status),
                        model="demo")
        db.session.add_all([user, reply])
        db.session.commit()
        return reply.id


def user_message_of(app, reply_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.max(Message.id)).where(
            Message.id < reply_id, Message.role == "user"))


# -- fixtures ----------------------------------------------------------------------------------
# -- continue and retry --------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["continue", "retry"])
@pytest.mark.parametrize("status", RESUMABLE)
def test_continue_a_stopped_reply_streams_old_plus_new_text_exactly(app, client, token,
                                                                    thread_id, status, action):
    reply_id = add_reply(app, thread_id, status)

    response = client.post(f"/messages/{reply_id}/{action}",
                           headers={"X-CSRF-Token": token, **JSON})

    assert response.status_code == 202, response.text
    body = response.json
    assert body["message"]["id"] == reply_id
    assert body["message"]["status"] == PENDING
    assert body["message"]["error"] is None
    assert body["message"]["content"] == PARTIAL
    assert body["stream_url"] == f"/messages/{reply_id}/stream?after={len(PARTIAL)}"
    assert stored(app, reply_id).status == PENDING

    # The tab resumes from the offset it already shows: only the new text arrives.
    events = sse_events(client.get(body["stream_url"]).data)
    assert events[-1].event == "done"
    new_text = decoded(events)
    assert new_text == demo_reply(PROMPT)  # not the demo's own start: it answers afresh
    offset = len(PARTIAL)  # each delta's id is the reply-wide offset right after it
    for event in events[:-1]:
        offset += len(decode_delta(event.data))
        assert event.id == str(offset)

    final = stored(app, reply_id)
    assert final.status == COMPLETE
    assert final.error is None
    assert final.content.startswith(PARTIAL)
    assert final.content == PARTIAL + new_text
    assert count(app, StreamDelta) == 0
    # Any client reading from the start sees the whole reply once, old text first.
    from_start = sse_events(client.get(f"/messages/{reply_id}/stream?after=0").data)
    assert decoded(from_start) == final.content
    assert from_start[-1].event == "done"
    assert from_start[-1].id == str(len(final.content))


@pytest.mark.parametrize("words", [1, 7, 40])
def test_continue_of_a_demo_reply_joins_it_exactly(app, client, token, thread_id, words):
    whole = demo_reply(PROMPT)
    partial = "".join(split_words(whole)[:words])
    reply_id = add_reply(app, thread_id, "aborted", content=partial)

    response = client.post(f"/messages/{reply_id}/continue",
                           headers={"X-CSRF-Token": token, **JSON})
    new_text = decoded(sse_events(client.get(response.json["stream_url"]).data))
    # No instruction echoed, nothing repeated or missing at the seam: the reply it would
    # have written without the stop.
    assert partial + new_text == whole
    assert stored(app, reply_id).content == whole


def test_retry_of_a_failed_reply_without_text_answers_the_prompt_afresh(app, client, token,
                                                                       thread_id):
    reply_id = add_reply(app, thread_id, ERROR, content="")
    response = client.post(f"/messages/{reply_id}/retry",
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 202
    assert response.json["stream_url"] == f"/messages/{reply_id}/stream?after=0"
    events = sse_events(client.get(response.json["stream_url"]).data)
    assert decoded(events) == demo_reply(PROMPT)
    assert stored(app, reply_id).content == demo_reply(PROMPT)


def test_continue_twice_starts_only_one_generation(app, client, token, thread_id):
    reply_id = add_reply(app, thread_id, ABORTED)
    headers = {"X-CSRF-Token": token, **JSON}
    assert client.post(f"/messages/{reply_id}/continue", headers=headers).status_code == 202
    second = client.post(f"/messages/{reply_id}/continue", headers=headers)
    assert second.status_code == 409
    assert second.json["message"]
    assert stored(app, reply_id).status == PENDING


@pytest.mark.parametrize("action", ["continue", "retry"])
def test_continue_a_complete_reply_is_409_with_a_message(app, client, token, thread_id,
                                                         action):
    reply_id = add_reply(app, thread_id, COMPLETE, content="All done.")
    response = client.post(f"/messages/{reply_id}/{action}",
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 409
    assert response.json["status"] == 409
    assert "continued" in response.json["message"]
    row = stored(app, reply_id)
    assert (row.status, row.content) == (COMPLETE, "All done.")


def test_continue_a_user_message_is_409_with_a_message(app, client, token, thread_id):
    reply_id = add_reply(app, thread_id, ERROR)
    user_id = user_message_of(app, reply_id)
    response = client.post(f"/messages/{user_id}/continue",
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 409
    assert response.json["message"]
    row = stored(app, user_id)
    assert (row.role, row.status, row.content) == ("user", COMPLETE, PROMPT)


def test_continue_a_complete_reply_from_a_browser_is_a_readable_409_page(app, client, token,
                                                                        thread_id):
    reply_id = add_reply(app, thread_id, COMPLETE, content="All done.")
    response = client.post(f"/messages/{reply_id}/continue", data={"csrf_token": token})
    assert response.status_code == 409
    assert response.mimetype == "text/html"
    assert b"continued" in response.data


@pytest.mark.parametrize("action", ["continue", "retry"])
def test_continue_without_csrf_is_403_and_changes_nothing(app, client, thread_id, action):
    reply_id = add_reply(app, thread_id, ERROR)
    response = client.post(f"/messages/{reply_id}/{action}", headers=JSON)
    assert response.status_code == 403
    assert "CSRF" in response.json["message"]
    row = stored(app, reply_id)
    assert (row.status, row.error) == (ERROR, REASONS[ERROR])


@pytest.mark.parametrize("action", ["continue", "retry"])
def test_continue_from_another_browser_is_404_and_changes_nothing(app, stranger, thread_id,
                                                                  action):
    reply_id = add_reply(app, thread_id, INTERRUPTED)
    response = stranger.post(f"/messages/{reply_id}/{action}",
                             headers={"X-CSRF-Token": csrf_of(stranger), **JSON})
    assert response.status_code == 404
    assert PARTIAL.encode() not in response.data
    assert stored(app, reply_id).status == INTERRUPTED


def test_continue_from_htmx_returns_the_fragment_streaming_from_the_kept_text(app, client,
                                                                              token,
                                                                              thread_id):
    reply_id = add_reply(app, thread_id, INTERRUPTED)
    response = client.post(f"/messages/{reply_id}/continue",
                           headers={"X-CSRF-Token": token, **HTMX})
    assert response.status_code == 200
    assert b"<!doctype" not in response.data.lower()
    dom = Dom(response.text)
    article = dom.find("article", id=f"message-{reply_id}")
    assert article["data-status"] == PENDING
    assert article["sse-connect"] == f"/messages/{reply_id}/stream?after={len(PARTIAL)}"
    assert dom.find_all("button", data_action="cancel")
    assert not dom.find_all("button", data_action="continue")
    assert dom.errors == []  # the old reason is gone


def test_continue_without_javascript_redirects_303_to_the_thread(app, client, token,
                                                                 thread_id):
    reply_id = add_reply(app, thread_id, ABORTED)
    response = client.post(f"/messages/{reply_id}/continue", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/threads/{thread_id}"
    assert stored(app, reply_id).status == PENDING


@pytest.mark.parametrize("status,action", [(ERROR, "retry"), (ABORTED, "continue"),
                                           (INTERRUPTED, "continue")])
def test_a_stopped_reply_fragment_offers_the_right_button(app, client, thread_id, status,
                                                          action):
    reply_id = add_reply(app, thread_id, status)
    for url in (f"/messages/{reply_id}", f"/threads/{thread_id}"):
        dom = Dom(client.get(url, headers=HTMX).text)
        button = dom.find("button", data_action=action)
        # Both endpoints continue a reply; either may back the button.
        assert button["hx-post"] in (f"/messages/{reply_id}/continue",
                                     f"/messages/{reply_id}/retry")
        other = "continue" if action == "retry" else "retry"
        assert not dom.find_all("button", data_action=other)
        assert not dom.find_all("button", data_action="cancel")
        form = dom.find("form", action=button["hx-post"])
        assert form["method"] == "post"  # works without JavaScript too
        article = dom.find("article", id=f"message-{reply_id}")
        assert article["data-status"] == status
        assert "sse-connect" not in article


def test_a_failed_reply_fragment_shows_its_reason_in_message_error(app, client, thread_id):
    reply_id = add_reply(app, thread_id, ERROR, error="The model took too long <to answer>.")
    dom = Dom(client.get(f"/messages/{reply_id}").text)
    assert dom.errors == ["The model took too long <to answer>."]
    error_element = [a for t, a in dom.elements
                     if "message-error" in (a.get("class") or "").split()][0]
    assert error_element["role"] == "alert"


def test_a_complete_reply_fragment_offers_no_continue_or_retry(app, client, thread_id):
    reply_id = add_reply(app, thread_id, COMPLETE, content="Fine.")
    dom = Dom(client.get(f"/messages/{reply_id}").text)
    assert not dom.find_all("button", data_action="continue")
    assert not dom.find_all("button", data_action="retry")
    assert dom.errors == []


def test_a_share_link_viewer_sees_no_continue_button(app, client, stranger, token, thread_id):
    reply_id = add_reply(app, thread_id, INTERRUPTED)
    share = client.post(f"/threads/{thread_id}/share", headers={"X-CSRF-Token": token, **JSON})
    page = stranger.get(share.json["share_url"])
    assert page.status_code == 200
    dom = Dom(page.text)
    assert dom.find("article", id=f"message-{reply_id}")["data-status"] == INTERRUPTED
    assert not dom.find_all("button", data_action="continue")


def add_stale_streaming_reply(app, thread_id: int, deltas: list[str]) -> int:
    """A reply whose worker died mid-stream: flushed deltas, a heartbeat long gone."""
    with app.app_context():
        user = Message(thread_id=thread_id, role="user", content=PROMPT, status=COMPLETE)
        reply = Message(thread_id=thread_id, role="assistant", content="", status=STREAMING,
                        model="demo", heartbeat_at=utcnow() - dt.timedelta(hours=1))
        db.session.add_all([user, reply])
        db.session.flush()
        start = 0
        for text in deltas:
            db.session.add(StreamDelta(message_id=reply.id, start=start,
                                       end=start + len(text), text=text))
            start += len(text)
        db.session.commit()
        return reply.id


def test_a_reply_the_sweeper_interrupted_can_be_continued_exactly(app, client, token,
                                                                  thread_id):
    kept = ["Kept ", "<text> ", "& more\n"]
    reply_id = add_stale_streaming_reply(app, thread_id, kept)

    interrupted, _ = app.extensions["relay"].sweeper.sweep()

    assert interrupted == [reply_id]
    dom = Dom(client.get(f"/messages/{reply_id}", headers=HTMX).text)
    assert dom.find("article", id=f"message-{reply_id}")["data-status"] == INTERRUPTED
    assert dom.find_all("button", data_action="continue")
    response = client.post(f"/messages/{reply_id}/continue",
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 202
    old = "".join(kept)
    assert response.json["stream_url"] == f"/messages/{reply_id}/stream?after={len(old)}"
    new_text = decoded(sse_events(client.get(response.json["stream_url"]).data))
    final = stored(app, reply_id)
    assert (final.status, final.content) == (COMPLETE, old + new_text)
    assert decoded(sse_events(client.get(f"/messages/{reply_id}/stream").data)) == old + new_text


def test_a_follower_of_a_reply_whose_worker_died_gets_the_kept_text_then_error(app, client,
                                                                              thread_id):
    kept = ["Half ", "a reply"]
    reply_id = add_stale_streaming_reply(app, thread_id, kept)
    # The sweep runs as soon as the follower's stream waits for news (gevent is cooperative);
    # whichever comes first, the follower must see the same thing.
    sweep = gevent.spawn(app.extensions["relay"].sweeper.sweep)

    with gevent.Timeout(30, AssertionError("the follower's stream never ended")):
        events = sse_events(client.get(f"/messages/{reply_id}/stream").data)

    assert sweep.get(timeout=5)[0] == [reply_id]
    assert decoded(events) == "".join(kept)
    assert events[-1].event == "error"
    terminal = Dom(events[-1].data)
    assert terminal.find("article", id=f"message-{reply_id}")["data-status"] == INTERRUPTED
    assert terminal.find_all("button", data_action="continue")
    assert stored(app, reply_id).content == "".join(kept)


# -- rate limiting -----------------------------------------------------------------------------
def test_the_third_post_within_a_minute_is_429_with_retry_after_and_a_message(app, client,
                                                                             token, thread_id,
                                                                             stranger):
    app.config["RATE_LIMIT"] = "2/minute"
    headers = {"X-CSRF-Token": token, **JSON}
    for n in range(2):
        response = client.post(f"/threads/{thread_id}/messages",
                               json={"content": f"q{n}", "parallel": True}, headers=headers)
        assert response.status_code == 201, response.text

    limited = client.post(f"/threads/{thread_id}/messages",
                          json={"content": "q2", "parallel": True}, headers=headers)

    assert limited.status_code == 429
    retry_after = limited.headers["Retry-After"]
    assert retry_after.isdigit() and 0 < int(retry_after) <= 60
    assert limited.json["status"] == 429
    message = limited.json["message"]
    assert isinstance(message, str) and "too fast" in message and "<" not in message
    assert count(app, Message) == 4  # the limited prompt created nothing

    page = client.post(f"/threads/{thread_id}/messages",
                       data={"content": "q3", "csrf_token": token})
    assert page.status_code == 429
    assert page.mimetype == "text/html"
    assert b"Too Many Requests" in page.data

    # Another browser has its own allowance.
    other_thread = new_thread(stranger, csrf_of(stranger))
    other = stranger.post(f"/threads/{other_thread}/messages", json={"content": "hello"},
                          headers={"X-CSRF-Token": csrf_of(stranger), **JSON})
    assert other.status_code == 201


# -- security headers --------------------------------------------------------------------------
def assert_security_headers(response) -> None:
    csp = response.headers.get("Content-Security-Policy", "")
    directives = {part.strip().split(" ", 1)[0]: part.strip() for part in csp.split(";")}
    assert directives.get("script-src") == "script-src 'self'", csp
    assert directives.get("frame-ancestors") == "frame-ancestors 'none'", csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("Referrer-Policy")


def test_security_headers_are_on_pages_fragments_json_streams_and_errors(app, client, token,
                                                                        thread_id):
    reply_id = add_reply(app, thread_id, COMPLETE, content="Done.")
    responses = {
        "page": client.get(f"/threads/{thread_id}"),
        "home": client.get("/"),
        "fragment": client.get(f"/messages/{reply_id}", headers=HTMX),
        "json": client.get(f"/messages/{reply_id}", headers=JSON),
        "health": client.get("/healthz"),
        "stream": client.get(f"/messages/{reply_id}/stream"),
        "not found": client.get("/threads/999999"),
        "forbidden": client.post("/threads", headers=JSON),
        "post": client.post("/threads", headers={"X-CSRF-Token": token, **JSON}),
    }
    assert responses["stream"].mimetype == "text/event-stream"
    assert responses["fragment"].status_code == 200
    for name, response in responses.items():
        response.get_data()
        try:
            assert_security_headers(response)
        except AssertionError as err:
            raise AssertionError(f"{name} ({response.status_code}): {err}") from None


def test_pages_have_no_inline_script_the_policy_would_block(client, thread_id):
    page = client.get(f"/threads/{thread_id}").text
    dom = Dom(page)
    for attrs in dom.find_all("script"):
        # A JSON data block (the scripts' strings) is never run: the policy has nothing to block.
        assert attrs.get("src") or attrs.get("type") == "application/json", \
            "an inline <script> would be blocked by script-src 'self'"
    for _, attrs in dom.elements:
        assert not any(name.startswith("on") for name in attrs), attrs


# -- oversized and malformed bodies --------------------------------------------------------------
def test_a_body_over_max_content_length_is_413_with_a_message_and_creates_nothing(app, client,
                                                                                 token,
                                                                                 thread_id):
    app.config["MAX_CONTENT_LENGTH"] = 1024
    big = "x" * 4096
    as_json = client.post(f"/threads/{thread_id}/messages", json={"content": big},
                          headers={"X-CSRF-Token": token, **JSON})
    as_form = client.post(f"/threads/{thread_id}/messages", data={"content": big},
                          headers={"X-CSRF-Token": token, **JSON})
    token_in_form = client.post(f"/threads/{thread_id}/messages",
                                data={"content": big, "csrf_token": token})
    for response in (as_json, as_form):
        assert response.status_code == 413
        assert response.json["status"] == 413
        assert response.json["message"]
    assert token_in_form.status_code == 413
    assert token_in_form.mimetype == "text/html"
    assert count(app, Message) == 0
    # A body under the limit still works.
    small = client.post(f"/threads/{thread_id}/messages", json={"content": "short"},
                        headers={"X-CSRF-Token": token, **JSON})
    assert small.status_code == 201


@pytest.mark.parametrize("token_in", ["header", "form"])
def test_invalid_utf8_in_a_form_body_is_4xx_and_creates_nothing(app, client, token, thread_id,
                                                                token_in):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash shows as a 500, not a traceback
    body = b"content=caf\xe9+\xff\xfe\xc3"
    headers = dict(JSON)
    if token_in == "header":
        headers["X-CSRF-Token"] = token
    else:
        body += b"&csrf_token=" + token.encode()
    response = client.post(f"/threads/{thread_id}/messages", data=body, headers=headers,
                           content_type="application/x-www-form-urlencoded")
    assert 400 <= response.status_code < 500, response.text
    assert response.json["message"]
    assert count(app, Message) == 0


@pytest.mark.parametrize("body", [b'{"content": "caf\xe9 \xff"}', b"\xff\xfe{\x00",
                                  b'{"content": "\xc3\x28 \xf8\xa1\xa1\xa1\xa1"}'],
                         ids=["latin1-bytes", "garbage", "bad-sequences"])
def test_invalid_utf8_in_a_json_body_is_4xx_and_creates_nothing(app, client, token, thread_id,
                                                                body):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.post(f"/threads/{thread_id}/messages", data=body,
                           content_type="application/json",
                           headers={"X-CSRF-Token": token, **JSON})
    assert 400 <= response.status_code < 500, response.text
    assert response.json["message"]
    assert count(app, Message) == 0


@pytest.mark.parametrize("body", [
    b'{"content": "\xed\xa0\x80"}',
    b'\xef\xbb\xbf{"content": "ok \xed\xbf\xbf"}',
    b'{"content": "\\ud800"}',
    b'{"content": "before \\udfff after"}',
], ids=["surrogate-bytes", "bom-surrogate-bytes", "escape", "escape-in-text"])
def test_a_json_prompt_with_a_lone_surrogate_is_400_not_500(app, client, token, thread_id,
                                                            body):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.post(f"/threads/{thread_id}/messages", data=body,
                           content_type="application/json",
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 400, response.text
    assert response.json["message"]
    assert count(app, Message) == 0


def test_invalid_utf8_in_query_strings_is_4xx(app, client, token, thread_id):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    reply_id = add_reply(app, thread_id, COMPLETE, content="Done.")
    for url in (f"/threads/{thread_id}/messages?before=%ff%fe",
                f"/messages/{reply_id}/stream?after=%ff"):
        response = client.get(url, headers=JSON)
        assert response.status_code == 400, (url, response.text)


# -- the API key stays on the server -------------------------------------------------------------
CANARY = "sk-canary-RELAY-7f3a9c1e5b-do-not-leak"


@pytest.fixture
def keyed_app(tmp_path):
    with made_app(tmp_path, OPENAI_API_KEY=CANARY, CHAT_PROVIDER="demo") as app:
        yield app


def test_the_api_key_never_appears_in_any_page_fragment_json_or_stream(keyed_app):
    app = keyed_app
    assert app.config["OPENAI_API_KEY"] == CANARY
    client = app.test_client()
    token = csrf_of(client)
    thread = new_thread(client, token)
    sent = client.post(f"/threads/{thread}/messages", json={"content": "What is my key?"},
                       headers={"X-CSRF-Token": token, **JSON}).json
    reply = sent["assistant_message"]["id"]
    failed = add_reply(app, thread, ERROR)
    share = client.post(f"/threads/{thread}/share", headers={"X-CSRF-Token": token, **JSON})
    responses = [
        sent,
        client.get(sent["stream_url"], buffered=True),
        client.get("/"),
        client.get("/", headers=JSON),
        client.get(f"/threads/{thread}"),
        client.get(f"/threads/{thread}", headers=HTMX),
        client.get(f"/threads/{thread}", headers=JSON),
        client.get(f"/threads/{thread}/messages", headers=HTMX),
        client.get(f"/messages/{reply}"),
        client.get(f"/messages/{reply}", headers=JSON),
        client.get(f"/messages/{failed}"),
        client.get(f"/messages/{failed}/stream", buffered=True),
        client.post(f"/messages/{failed}/retry", headers={"X-CSRF-Token": token, **HTMX}),
        client.get("/healthz"),
        client.get("/threads/424242"),
        client.get("/threads/424242", headers=JSON),
        client.post("/threads", headers=JSON),
        share,
        app.test_client().get(share.json["share_url"]),
    ]
    for response in responses:
        if isinstance(response, dict):
            assert CANARY not in str(response)
            continue
        assert CANARY.encode() not in response.get_data(), response.request.path
        assert CANARY not in str(response.headers)
    assert CANARY not in str(dict(client.get("/").headers))


def test_a_database_gone_at_the_end_of_a_stream_ends_it_for_a_reconnect_not_a_traceback(
        app, client, thread_id, monkeypatch):
    from sqlalchemy.exc import OperationalError

    import views.stream

    reply_id = add_reply(app, thread_id, "complete", content="All of it.")

    def unreachable(message_id):
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(views.stream, "_terminal_event", unreachable)
    monkeypatch.setattr(views.stream, "TERMINAL_WAIT_S", 0.5)
    response = client.get(f"/messages/{reply_id}/stream")
    assert response.status_code == 200
    events = sse_events(response.data)
    assert decoded(events) == "All of it."
    assert [e.event for e in events if e.event != "delta"] == []  # no end: the client retries
    monkeypatch.undo()
    again = sse_events(client.get(f"/messages/{reply_id}/stream",
                                  headers={"Last-Event-ID": "10"}).data)
    assert [e.event for e in again] == ["done"]


def test_a_database_away_for_a_moment_at_the_end_of_a_stream_still_ends_it(
        app, client, thread_id, monkeypatch):
    from sqlalchemy.exc import OperationalError

    import views.stream

    reply_id = add_reply(app, thread_id, "complete", content="All of it.")
    real, calls = views.stream._terminal_event, []

    def away_twice(message_id):
        calls.append(message_id)
        if len(calls) <= 2:
            raise OperationalError("SELECT", {}, Exception("server closed the connection"))
        return real(message_id)

    monkeypatch.setattr(views.stream, "_terminal_event", away_twice)
    events = sse_events(client.get(f"/messages/{reply_id}/stream").data)
    assert decoded(events) == "All of it."
    assert [e.event for e in events if e.event != "delta"] == ["done"]
    assert len(calls) == 3


def test_a_reply_whose_start_finds_the_database_saturated_keeps_its_turn(app, monkeypatch):
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    relay = app.extensions["relay"]
    attempts = []

    def claim(message_id):
        attempts.append(message_id)
        if len(attempts) < 3:
            raise PoolTimeout("QueuePool limit reached")
        return None  # claimed elsewhere meanwhile

    monkeypatch.setattr(relay, "claim_and_start", claim)
    assert relay.claim_or_queue(42) is None
    relay.claim_or_queue(43)
    assert attempts == [42, 42]  # 42 failed twice and is still first: 43 waits behind it
    assert list(relay.admission.waiting) == [42, 43]
    relay._admit_waiting()  # what the event-loop tick does every 50 ms
    assert attempts == [42, 42, 42, 43] and not relay.admission.waiting


def test_a_start_that_fails_after_its_claim_leaves_the_reply_pending_and_asks_once(
        app, thread_id, monkeypatch):
    # Under load the history read after the claim can time out waiting for the pool. A claim
    # committed before it left the reply `streaming` with no generation anywhere: the tab
    # saw nothing until the sweeper gave it up. Now the claim is rolled back with it.
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    import streaming.engine as engine_module

    relay = app.extensions["relay"]
    reply_id = add_reply(app, thread_id, PENDING, content="", error=None)
    reading = engine_module.build_history
    failures = []

    def history_times_out_once(*args, **kwargs):
        if not failures:
            failures.append(True)
            raise PoolTimeout("QueuePool limit of size 5 overflow 5 reached")
        return reading(*args, **kwargs)

    monkeypatch.setattr(engine_module, "build_history", history_times_out_once)
    asked = []
    provider_stream = relay.provider.stream

    def counted(history, **kwargs):
        asked.append(history[-1]["content"])
        return provider_stream(history, **kwargs)

    monkeypatch.setattr(relay.provider, "stream", counted)

    assert relay.claim_or_queue(reply_id) is None  # it failed, and waits its turn
    assert failures == [True]
    assert stored(app, reply_id).status == PENDING  # not claimed by a start that failed
    assert stored(app, reply_id).claim == 0
    assert list(relay.admission.waiting) == [reply_id]

    relay._admit_waiting()  # the event-loop tick's retry
    generation = relay.local(reply_id)
    assert generation is not None and generation.claim == 1
    assert generation.finalized.wait(10)
    assert stored(app, reply_id).status == COMPLETE
    assert stored(app, reply_id).content == demo_reply(PROMPT)
    assert asked == [PROMPT]  # the model was asked once


def test_a_connection_lost_before_the_request_ends_does_not_fail_the_answer(app, client,
                                                                            monkeypatch):
    # A database restart between a request's query and its end: the rollback that ends its
    # session finds the connection closed by the server.
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    thread_id = new_thread(client, csrf_of(client))
    closing = Session.close
    lost = []

    def close_lost_once(self):
        if not lost:
            lost.append(True)
            raise OperationalError("ROLLBACK", {}, Exception("server closed the connection"))
        return closing(self)

    monkeypatch.setattr(Session, "close", close_lost_once)
    response = client.get(f"/threads/{thread_id}", headers=JSON)
    assert response.status_code == 200
    assert lost == [True]
    monkeypatch.setattr(Session, "close", closing)
    assert client.get(f"/threads/{thread_id}", headers=JSON).status_code == 200
