"""The HTTP contract in-process: pages, partials, JSON, SSE, ownership, CSRF and errors.

Every test talks to Relay through Flask's test client the way a browser, an htmx request or
an API client would, asserts what that client sees, and then re-reads the database through
the models where the stored state matters.
"""

from __future__ import annotations

import json

import gevent
import pytest
from sqlalchemy import func, select

from bench.sse_client import Event, SSEParser
from llm.demo import demo_reply
from models import Message, StreamDelta, Thread, db
from streaming.sse import decode_delta
from tests.conftest import JSON, csrf_of, decoded, made_app, new_thread, send
from tests.dom import Dom
from views.markdown import render_markdown


# -- helpers -----------------------------------------------------------------------------------
def events_of(body: bytes) -> tuple[list[Event], SSEParser]:
    parser = SSEParser()
    return parser.feed(body), parser


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def stored(app, model, ident: int):
    """A fresh copy of a row, read in a new session (never a cached object)."""
    with app.app_context():
        return db.session.get(model, ident)


def seed_messages(app, thread_id: int, n: int) -> list[int]:
    """`n` finished messages (user and assistant in turn), inserted through the models."""
    with app.app_context():
        rows = [Message(thread_id=thread_id, role="user" if i % 2 == 0 else "assistant",
                        content=f"message number {i}", status="complete") for i in range(n)]
        db.session.add_all(rows)
        db.session.commit()
        return [row.id for row in rows]


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def sent(client, token, thread_id) -> dict:
    """A prompt just posted: its user message and a pending reply nobody has claimed."""
    return send(client, token, thread_id, "What is Relay?")


@pytest.fixture
def finished(client, sent) -> dict:
    """`sent`, with its reply streamed to the end by the driver's SSE request."""
    response = client.get(sent["stream_url"])
    assert response.status_code == 200
    assert b"event: done" in response.data  # reading the body runs the stream to its end
    return sent


# -- the home page -----------------------------------------------------------------------------
def test_home_page_has_csrf_meta_and_new_thread_form(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    dom = Dom(response.text)
    meta = dom.find("meta", name="csrf-token")
    assert meta["content"]
    form = dom.find_all("form", action="/threads")[0]
    assert form["method"] == "post"
    hidden = dom.find_all("input", name="csrf_token")
    assert hidden and all(field["value"] == meta["content"] for field in hidden)
    assert b"New thread" in response.data


def test_home_page_gives_the_browser_a_signed_http_only_session_cookie(client):
    response = client.get("/")
    header = response.headers["Set-Cookie"]
    assert header.startswith("relay_session=")
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert client.get_cookie("relay_session") is not None


def test_home_page_keeps_the_same_csrf_token_for_one_browser(client, stranger):
    assert csrf_of(client) == csrf_of(client)
    assert csrf_of(client) != csrf_of(stranger)


def test_home_page_as_json_lists_this_browsers_threads_newest_first(client, stranger, token):
    first = new_thread(client, token)
    second = new_thread(client, token)
    response = client.get("/", headers=JSON)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    threads = response.json["threads"]
    assert [t["id"] for t in threads] == [second, first]
    assert threads[0]["url"] == f"/threads/{second}"
    assert threads[0]["title"] == "New thread"
    # Another browser sees none of them.
    assert stranger.get("/", headers=JSON).json == {"threads": []}


# -- creating a thread -------------------------------------------------------------------------
def test_create_thread_without_csrf_token_is_403_with_a_message_and_creates_nothing(app, client):
    client.get("/")  # the browser has a session, but the form lacks its token
    html = client.post("/threads")
    assert html.status_code == 403
    assert b"CSRF" in html.data
    api = client.post("/threads", headers=JSON)
    assert api.status_code == 403
    assert api.json["status"] == 403
    assert "CSRF token" in api.json["message"]
    with app.app_context():
        assert count(Thread) == 0


def test_create_thread_with_another_browsers_csrf_token_is_403(app, client, stranger):
    client.get("/")
    response = client.post("/threads", headers={"X-CSRF-Token": csrf_of(stranger), **JSON})
    assert response.status_code == 403
    with app.app_context():
        assert count(Thread) == 0


def test_create_thread_with_form_token_redirects_303_to_the_new_thread(app, client, token):
    response = client.post("/threads", data={"csrf_token": token})
    assert response.status_code == 303
    location = response.headers["Location"]
    thread_id = int(location.rsplit("/", 1)[1])
    assert location == f"/threads/{thread_id}"
    page = client.get(location)
    assert page.status_code == 200
    thread = stored(app, Thread, thread_id)
    assert thread.title == "New thread"
    assert thread.owner  # the browser's anonymous identity


def test_create_thread_from_htmx_answers_with_hx_redirect(app, client, token):
    response = client.post("/threads", headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert 200 <= response.status_code < 300  # htmx only follows HX-Redirect on success
    target = response.headers["HX-Redirect"]
    assert target.startswith("/threads/")
    assert stored(app, Thread, int(target.rsplit("/", 1)[1])) is not None


def test_create_thread_as_json_is_201_with_the_thread(app, client, token):
    response = client.post("/threads", headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 201
    thread = response.json["thread"]
    assert thread["title"] == "New thread"
    assert thread["url"] == f"/threads/{thread['id']}"
    assert response.headers["Location"].endswith(thread["url"])
    assert stored(app, Thread, thread["id"]) is not None


# -- the thread page ---------------------------------------------------------------------------
def test_thread_page_has_the_composer_and_the_csrf_meta(client, token, thread_id):
    response = client.get(f"/threads/{thread_id}")
    assert response.status_code == 200
    dom = Dom(response.text)
    composer = dom.find("form", id="composer")
    assert composer["method"] == "post"
    assert composer["action"] == f"/threads/{thread_id}/messages"
    assert dom.find("textarea", name="content") is not None
    assert dom.find("meta", name="csrf-token")["content"] == token


def test_thread_page_renders_every_message_with_its_dom_hooks(client, token, thread_id):
    first = send(client, token, thread_id, "First question")
    assert b"event: done" in client.get(first["stream_url"]).data  # finish the first reply
    second = send(client, token, thread_id, "Second question")

    page = client.get(f"/threads/{thread_id}")
    dom = Dom(page.text)
    expected = [
        (first["user_message"]["id"], "user", "complete"),
        (first["assistant_message"]["id"], "assistant", "complete"),
        (second["user_message"]["id"], "user", "complete"),
        (second["assistant_message"]["id"], "assistant", "pending"),
    ]
    articles = dom.articles
    assert [(int(a["data-message-id"]), a["data-role"], a["data-status"]) for a in articles] \
        == expected
    for article in articles:
        assert article["id"] == f"message-{article['data-message-id']}"
    assert dom.bodies[str(first["user_message"]["id"])] == "First question"
    assert dom.bodies[str(second["assistant_message"]["id"])] == ""
    # A finished reply is shown as rendered markdown.
    rendered = Dom('<article class="message" id="message-0" data-message-id="0">'
                   '<div class="message-body">'
                   f'{render_markdown(demo_reply("First question"))}</div></article>')
    assert dom.bodies[str(first["assistant_message"]["id"])] == rendered.bodies["0"]
    assert "<h3>" in page.text


def test_thread_page_connects_a_pending_reply_to_its_stream_from_offset_zero(client, thread_id,
                                                                             sent):
    reply_id = sent["assistant_message"]["id"]
    dom = Dom(client.get(f"/threads/{thread_id}").text)
    article = dom.find("article", id=f"message-{reply_id}")
    assert article["data-status"] == "pending"
    assert article["sse-connect"] == f"/messages/{reply_id}/stream?after=0"
    assert dom.find_all("button", data_action="cancel")
    user = dom.find("article", id=f"message-{sent['user_message']['id']}")
    assert "sse-connect" not in user


def test_thread_page_escapes_html_in_message_text_and_title(client, token, thread_id):
    evil = '<script>alert("pwned")</script> & <b>bold</b>'
    sent = send(client, token, thread_id, evil)
    response = client.get(f"/threads/{thread_id}")
    assert b"<script>alert" not in response.data
    assert b"<b>bold</b>" not in response.data
    assert b"&lt;script&gt;alert(" in response.data
    dom = Dom(response.text)
    assert dom.bodies[str(sent["user_message"]["id"])] == evil


def test_thread_page_from_htmx_is_the_fragment_without_the_layout(client, thread_id):
    response = client.get(f"/threads/{thread_id}", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert b"<!doctype" not in response.data.lower()
    assert Dom(response.text).find("form", id="composer")


def test_thread_page_as_json_has_the_thread_and_its_messages(client, thread_id, sent):
    response = client.get(f"/threads/{thread_id}", headers=JSON)
    assert response.status_code == 200
    body = response.json
    assert body["thread"]["id"] == thread_id
    assert body["thread"]["title"] == "What is Relay?"
    assert [m["id"] for m in body["messages"]] == [sent["user_message"]["id"],
                                                   sent["assistant_message"]["id"]]
    assert body["has_more"] is False


# -- posting a message -------------------------------------------------------------------------
def test_post_message_from_htmx_returns_user_and_pending_reply_fragments(app, client, token,
                                                                         thread_id):
    response = client.post(f"/threads/{thread_id}/messages", data={"content": "Hello there"},
                           headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert response.status_code == 200
    assert b"<!doctype" not in response.data.lower()
    dom = Dom(response.text)
    user, reply = dom.articles
    assert (user["data-role"], user["data-status"]) == ("user", "complete")
    assert "sse-connect" not in user
    assert (reply["data-role"], reply["data-status"]) == ("assistant", "pending")
    assert reply["sse-connect"] == f"/messages/{reply['data-message-id']}/stream?after=0"
    assert dom.bodies[user["data-message-id"]] == "Hello there"
    assert stored(app, Message, int(reply["data-message-id"])).status == "pending"


def test_post_message_without_javascript_redirects_303_to_the_thread(app, client, token,
                                                                     thread_id):
    response = client.post(f"/threads/{thread_id}/messages",
                           data={"content": "No JS here", "csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/threads/{thread_id}"
    page = client.get(response.headers["Location"])
    assert Dom(page.text).bodies.get(str(_last_user_id(app, thread_id))) == "No JS here"


def _last_user_id(app, thread_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.max(Message.id)).where(
            Message.thread_id == thread_id, Message.role == "user"))


def test_post_message_as_json_is_201_with_both_messages_and_the_stream_url(app, client, token,
                                                                          thread_id):
    response = client.post(f"/threads/{thread_id}/messages", json={"content": "Hi\r\nthere"},
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 201
    body = response.json
    user, reply = body["user_message"], body["assistant_message"]
    assert body["messages"] == [user, reply]
    assert (user["role"], user["status"], user["content"]) == ("user", "complete", "Hi\nthere")
    assert (reply["role"], reply["status"], reply["content"]) == ("assistant", "pending", "")
    assert user["thread_id"] == reply["thread_id"] == thread_id
    assert body["stream_url"] == f"/messages/{reply['id']}/stream"
    row = stored(app, Message, reply["id"])
    assert (row.role, row.status, row.thread_id) == ("assistant", "pending", thread_id)
    assert stored(app, Message, user["id"]).content == "Hi\nthere"


def test_first_prompt_becomes_the_thread_title_and_later_ones_do_not(app, client, token,
                                                                     thread_id):
    send(client, token, thread_id, "  How do   SSE\nreconnects work?  ")
    send(client, token, thread_id, "And websockets?", parallel=True)
    assert stored(app, Thread, thread_id).title == "How do SSE reconnects work?"
    page = client.get(f"/threads/{thread_id}")
    assert b"<h1 id=\"thread-title\">How do SSE reconnects work?</h1>" in page.data


def test_a_long_first_prompt_is_shortened_for_the_title(app, client, token, thread_id):
    prompt = "word " * 100
    send(client, token, thread_id, prompt)
    title = stored(app, Thread, thread_id).title
    assert title.endswith("…")
    assert len(title) <= 80
    assert " ".join(prompt.split()).startswith(title[:-1])


@pytest.mark.parametrize("body", [
    {"json": {"content": ""}},
    {"json": {"content": "   \n\t "}},
    {"json": {}},
    {"json": {"content": 42}},
    {"data": {"content": "  "}},
    {"data": {}},
], ids=["json-empty", "json-whitespace", "json-missing", "json-not-text", "form-whitespace",
        "form-missing"])
def test_empty_or_whitespace_prompt_is_400_with_a_message(app, client, token, thread_id, body):
    response = client.post(f"/threads/{thread_id}/messages",
                           headers={"X-CSRF-Token": token, **JSON}, **body)
    assert response.status_code == 400
    assert "content" in response.json["message"]
    with app.app_context():
        assert count(Message) == 0


def test_empty_prompt_from_a_browser_is_a_readable_400_page(client, token, thread_id):
    response = client.post(f"/threads/{thread_id}/messages",
                           data={"content": " ", "csrf_token": token})
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert b"empty" in response.data


def test_prompt_longer_than_max_prompt_chars_is_413(app, client, token, thread_id):
    app.config["MAX_PROMPT_CHARS"] = 50
    response = client.post(f"/threads/{thread_id}/messages", json={"content": "x" * 51},
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 413
    assert "50" in response.json["message"]
    with app.app_context():
        assert count(Message) == 0
    # Exactly at the limit is fine.
    assert send(client, token, thread_id, "y" * 50)["user_message"]["content"] == "y" * 50


@pytest.mark.parametrize("raw", ['"just a string"', "[1, 2]", "42", "null", '{"content": '],
                         ids=["string", "array", "number", "null", "malformed"])
def test_json_body_that_is_not_an_object_is_400(app, client, token, thread_id, raw):
    response = client.post(f"/threads/{thread_id}/messages", data=raw,
                           content_type="application/json",
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 400
    assert response.json["message"]
    with app.app_context():
        assert count(Message) == 0


def test_post_message_without_csrf_is_403_and_creates_nothing(app, client, thread_id):
    response = client.post(f"/threads/{thread_id}/messages", json={"content": "hi"},
                           headers=JSON)
    assert response.status_code == 403
    with app.app_context():
        assert count(Message) == 0


def test_post_message_to_an_unknown_thread_is_404(app, client, token):
    response = client.post("/threads/4242/messages", json={"content": "hi"},
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 404
    with app.app_context():
        assert count(Message) == 0


# -- ownership ---------------------------------------------------------------------------------
OTHER_BROWSER_REQUESTS = [
    ("GET", "/threads/{thread}"),
    ("GET", "/threads/{thread}/messages"),
    ("GET", "/messages/{reply}"),
    ("GET", "/messages/{user}"),
    ("GET", "/messages/{reply}/stream"),
    ("POST", "/messages/{reply}/cancel"),
    ("POST", "/threads/{thread}/messages"),
]


@pytest.mark.parametrize("method,template", OTHER_BROWSER_REQUESTS,
                         ids=[f"{m} {t}" for m, t in OTHER_BROWSER_REQUESTS])
@pytest.mark.parametrize("accept", ["html", "json"])
def test_another_browser_gets_404_for_a_thread_it_does_not_own(app, stranger, thread_id, sent,
                                                               method, template, accept):
    url = template.format(thread=thread_id, reply=sent["assistant_message"]["id"],
                          user=sent["user_message"]["id"])
    headers = {"X-CSRF-Token": csrf_of(stranger)}  # a valid token of its own: CSRF passes
    if accept == "json":
        headers.update(JSON)
    response = stranger.open(url, method=method, headers=headers,
                             data={"content": "intruding"} if method == "POST" else None)
    assert response.status_code == 404
    assert b"What is Relay?" not in response.data  # nothing about the thread leaks
    if accept == "json":
        assert response.json["status"] == 404
    with app.app_context():
        assert count(Message) == 2
        reply = db.session.get(Message, sent["assistant_message"]["id"])
        assert reply.status == "pending"  # not claimed, not cancelled
        assert db.session.get(Thread, thread_id).title == "What is Relay?"


def test_another_browser_does_not_see_the_thread_in_its_list(client, stranger, thread_id):
    assert thread_id in [t["id"] for t in client.get("/", headers=JSON).json["threads"]]
    assert stranger.get("/", headers=JSON).json["threads"] == []
    assert f"/threads/{thread_id}".encode() not in stranger.get("/").data


# -- one message -------------------------------------------------------------------------------
def test_message_json_has_the_contract_fields(client, sent):
    reply_id = sent["assistant_message"]["id"]
    response = client.get(f"/messages/{reply_id}", headers=JSON)
    assert response.status_code == 200
    body = response.json
    assert {"id", "thread_id", "role", "status", "content", "error", "usage",
            "timings"} <= body.keys()
    assert (body["id"], body["role"], body["status"]) == (reply_id, "assistant", "pending")
    assert body["thread_id"] == sent["user_message"]["thread_id"]
    assert body["content"] == ""
    assert body["error"] is None
    assert body["usage"] is None
    assert body["timings"] == {"ttft_ms": None, "duration_ms": None}


def test_message_json_of_a_finished_reply_has_content_usage_and_timings(client, finished):
    body = client.get(f"/messages/{finished['assistant_message']['id']}", headers=JSON).json
    assert body["status"] == "complete"
    assert body["content"] == demo_reply("What is Relay?")
    assert body["usage"]["completion_tokens"] > 0
    assert body["timings"]["duration_ms"] is not None


def test_fragment_of_an_active_reply_polls_itself(app, client, sent):
    reply_id = sent["assistant_message"]["id"]
    response = client.get(f"/messages/{reply_id}")
    assert response.status_code == 200
    article = Dom(response.text).find("article", id=f"message-{reply_id}")
    assert article["data-status"] == "pending"
    assert article["hx-get"] == f"/messages/{reply_id}"
    assert article["hx-trigger"] == \
        f"load delay:{app.config['POLL_INTERVAL_MS']}ms, relay:resume"
    assert article["hx-swap"] == "outerHTML"
    assert "sse-connect" not in article  # a poll-swap follower opens no stream


@pytest.mark.parametrize("which", ["user_message", "assistant_message"])
def test_fragment_of_a_terminal_message_does_not_poll(client, finished, which):
    message_id = finished[which]["id"]
    dom = Dom(client.get(f"/messages/{message_id}").text)
    article = dom.find("article", id=f"message-{message_id}")
    assert article["data-status"] == "complete"
    assert "hx-trigger" not in article
    assert "hx-get" not in article
    assert "sse-connect" not in article


def test_unknown_message_is_404(client):
    client.get("/")
    assert client.get("/messages/4242").status_code == 404
    assert client.get("/messages/4242", headers=JSON).json["message"] == "No such message."


# -- streaming ---------------------------------------------------------------------------------
def test_stream_of_a_pending_reply_claims_it_and_streams_it_to_done(app, client, sent):
    reply_id = sent["assistant_message"]["id"]
    response = client.get(sent["stream_url"])
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"

    assert response.data.startswith(b"retry: ")
    events, parser = events_of(response.data)
    assert parser.retry is not None and parser.retry > 0
    *deltas, done = events
    assert deltas and all(e.event == "delta" for e in deltas)
    assert done.event == "done"
    text = decoded(deltas)
    assert text == demo_reply("What is Relay?")
    # Each delta's id is the offset right after it.
    offset = 0
    for event in deltas:
        offset += len(decode_delta(event.data))
        assert event.id == str(offset)
    # The terminal event carries the finished message's fragment.
    article = Dom(done.data).find("article", id=f"message-{reply_id}")
    assert article["data-status"] == "complete"
    assert "sse-connect" not in article

    with app.app_context():
        reply = db.session.get(Message, reply_id)
        assert reply.status == "complete"
        assert reply.content == text
        assert reply.usage["completion_tokens"] > 0
        assert count(StreamDelta) == 0


def test_stream_data_is_escaped_html_text_that_decodes_exactly(client, token, thread_id):
    prompt = "Tags <i>x</i> & 'quotes' \"too\""
    sent = send(client, token, thread_id, prompt)
    body = client.get(sent["stream_url"]).data
    events, _ = events_of(body)
    deltas = [e for e in events if e.event == "delta"]
    for event in deltas:
        assert "<" not in event.data and ">" not in event.data
        assert "'" not in event.data and '"' not in event.data
    assert decoded(deltas) == demo_reply(prompt)


def test_stream_of_a_finished_reply_answers_the_whole_text_and_done_at_once(client, finished):
    response = client.get(finished["stream_url"])
    assert response.status_code == 200
    events, _ = events_of(response.data)
    assert [e.event for e in events] == ["delta", "done"]
    assert decoded(events) == demo_reply("What is Relay?")
    assert 'data-status="complete"' in events[-1].data


def test_stream_after_an_offset_answers_exactly_the_rest(client, finished):
    events, _ = events_of(client.get(f"{finished['stream_url']}?after=5").data)
    text = demo_reply("What is Relay?")
    assert decoded(events) == text[5:]
    assert events[0].id == str(len(text))
    assert events[-1].event == "done"


def test_stream_at_the_end_sends_only_done(client, finished):
    length = len(demo_reply("What is Relay?"))
    events, _ = events_of(client.get(f"{finished['stream_url']}?after={length}").data)
    assert [e.event for e in events] == ["done"]


def test_last_event_id_header_wins_over_the_after_parameter(client, finished):
    response = client.get(f"{finished['stream_url']}?after=2", headers={"Last-Event-ID": "10"})
    events, _ = events_of(response.data)
    assert decoded(events) == demo_reply("What is Relay?")[10:]


@pytest.mark.parametrize("query,headers", [
    ("?after=-1", {}),
    ("?after=abc", {}),
    ("?after=1.5", {}),
    ("?after=" + "9" * 40, {}),
    ("", {"Last-Event-ID": "abc"}),
    ("?after=3", {"Last-Event-ID": "-1"}),
], ids=["negative", "letters", "fraction", "huge", "header-letters", "header-negative"])
def test_malformed_stream_cursor_is_400_and_does_not_claim_the_reply(app, client, sent, query,
                                                                     headers):
    response = client.get(sent["stream_url"] + query, headers=headers)
    assert response.status_code == 400
    assert "cursor" in response.json["message"]
    assert stored(app, Message, sent["assistant_message"]["id"]).status == "pending"


def test_stream_cursor_beyond_the_end_of_a_finished_reply_is_400(client, finished):
    length = len(demo_reply("What is Relay?"))
    response = client.get(f"{finished['stream_url']}?after={length + 1}")
    assert response.status_code == 400
    assert "cursor" in response.json["message"]
    response = client.get(finished["stream_url"], headers={"Last-Event-ID": str(10**9)})
    assert response.status_code == 400
    assert "cursor" in response.json["message"]


def test_stream_of_a_user_message_is_400(client, sent):
    response = client.get(f"/messages/{sent['user_message']['id']}/stream")
    assert response.status_code == 400
    assert response.json["message"]


def test_stream_of_an_unknown_message_is_404_json(client):
    client.get("/")
    response = client.get("/messages/4242/stream")
    assert response.status_code == 404
    assert response.json["status"] == 404


def test_stream_of_a_stopped_reply_ends_with_an_aborted_event(client, token, sent):
    client.post(f"/messages/{sent['assistant_message']['id']}/cancel",
                headers={"X-CSRF-Token": token, **JSON})
    events, _ = events_of(client.get(sent["stream_url"]).data)
    assert [e.event for e in events] == ["aborted"]
    assert 'data-status="aborted"' in events[0].data


# -- cancelling --------------------------------------------------------------------------------
def test_cancel_a_pending_reply_aborts_it(app, client, token, thread_id, sent):
    reply_id = sent["assistant_message"]["id"]
    response = client.post(f"/messages/{reply_id}/cancel", headers={"X-CSRF-Token": token,
                                                                    **JSON})
    assert response.status_code == 202
    assert response.json["id"] == reply_id
    assert response.json["status"] == "aborted"
    assert stored(app, Message, reply_id).status == "aborted"
    article = Dom(client.get(f"/threads/{thread_id}").text).find("article",
                                                                 id=f"message-{reply_id}")
    assert article["data-status"] == "aborted"
    assert "sse-connect" not in article


def test_cancel_from_htmx_returns_the_stopped_fragment(client, token, sent):
    reply_id = sent["assistant_message"]["id"]
    response = client.post(f"/messages/{reply_id}/cancel",
                           headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert response.status_code == 200
    dom = Dom(response.text)
    article = dom.find("article", id=f"message-{reply_id}")
    assert article["data-status"] == "aborted"
    assert not dom.find_all("button", data_action="cancel")


def test_cancel_without_javascript_redirects_303_to_the_thread(app, client, token, thread_id,
                                                               sent):
    reply_id = sent["assistant_message"]["id"]
    response = client.post(f"/messages/{reply_id}/cancel", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["Location"] == f"/threads/{thread_id}"
    assert stored(app, Message, reply_id).status == "aborted"


def test_cancel_a_user_message_is_400(app, client, token, sent):
    response = client.post(f"/messages/{sent['user_message']['id']}/cancel",
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 400
    assert "reply" in response.json["message"]
    assert stored(app, Message, sent["user_message"]["id"]).status == "complete"


def test_cancel_without_csrf_is_403_and_the_reply_keeps_going(app, client, sent):
    reply_id = sent["assistant_message"]["id"]
    response = client.post(f"/messages/{reply_id}/cancel", headers=JSON)
    assert response.status_code == 403
    assert stored(app, Message, reply_id).status == "pending"


def test_cancel_a_finished_reply_changes_nothing(app, client, token, finished):
    reply_id = finished["assistant_message"]["id"]
    response = client.post(f"/messages/{reply_id}/cancel", headers={"X-CSRF-Token": token,
                                                                    **JSON})
    assert response.status_code == 202
    assert response.json["status"] == "complete"
    row = stored(app, Message, reply_id)
    assert (row.status, row.content) == ("complete", demo_reply("What is Relay?"))


def test_cancel_with_get_is_405(client, sent):
    response = client.get(f"/messages/{sent['assistant_message']['id']}/cancel", headers=JSON)
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


def test_cancel_right_after_the_stream_claimed_the_reply_aborts_it(app, client, token, sent):
    app.config["CANCEL_WAIT_S"] = 0.5
    reply_id = sent["assistant_message"]["id"]
    # The driver's SSE request claims the reply and spawns its generation...
    stream = client.get(sent["stream_url"], buffered=False)
    assert stored(app, Message, reply_id).status == "streaming"
    # ...and the user presses Stop before the generation greenlet has had a turn.
    response = client.post(f"/messages/{reply_id}/cancel", headers={"X-CSRF-Token": token,
                                                                    **JSON})
    stream.close()
    assert stored(app, Message, reply_id).status == "aborted"
    assert response.json["status"] == "aborted"


# -- pagination --------------------------------------------------------------------------------
@pytest.fixture
def ten_messages(app, thread_id) -> list[int]:
    app.config["PAGE_SIZE"] = 4
    return seed_messages(app, thread_id, 10)


def test_thread_page_shows_the_newest_page_and_a_load_older_link(client, thread_id,
                                                                 ten_messages):
    response = client.get(f"/threads/{thread_id}")
    dom = Dom(response.text)
    assert [int(a["data-message-id"]) for a in dom.articles] == ten_messages[-4:]
    assert b"Load older messages" in response.data
    link = dom.find("a", **{"class": "load-older"})
    assert link["href"] == f"/threads/{thread_id}/messages?before={ten_messages[-4]}"
    assert link["hx-get"] == link["href"]


def test_load_older_pages_walk_back_in_order_to_the_first_message(client, thread_id,
                                                                  ten_messages):
    seen: list[int] = []
    url = f"/threads/{thread_id}/messages?before={ten_messages[-4]}"
    pages = 0
    while url:
        response = client.get(url, headers={"HX-Request": "true"})
        assert response.status_code == 200
        dom = Dom(response.text)
        ids = [int(a["data-message-id"]) for a in dom.articles]
        assert ids == sorted(ids)
        seen = ids + seen
        older = dom.find_all("a", **{"class": "load-older"})
        url = older[0]["href"] if older else None
        pages += 1
    assert pages == 2
    assert seen == ten_messages[:-4]


def test_older_messages_as_json_say_whether_more_exist(client, thread_id, ten_messages):
    page = client.get(f"/threads/{thread_id}/messages?before={ten_messages[6]}", headers=JSON)
    assert page.status_code == 200
    assert [m["id"] for m in page.json["messages"]] == ten_messages[2:6]
    assert page.json["has_more"] is True
    last = client.get(f"/threads/{thread_id}/messages?before={ten_messages[2]}", headers=JSON)
    assert [m["id"] for m in last.json["messages"]] == ten_messages[:2]
    assert last.json["has_more"] is False
    assert [m["content"] for m in last.json["messages"]] == ["message number 0",
                                                             "message number 1"]


@pytest.mark.parametrize("before", ["abc", "-3", "0", "1.5", ""])
def test_before_that_is_not_a_message_id_is_400(client, thread_id, before):
    response = client.get(f"/threads/{thread_id}/messages?before={before}", headers=JSON)
    assert response.status_code == 400
    assert "before" in response.json["message"]


def test_before_with_a_non_ascii_digit_is_400(app, client, thread_id):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.get(f"/threads/{thread_id}/messages?before=%C2%B2", headers=JSON)
    assert response.status_code == 400


def test_before_beyond_the_largest_id_is_not_a_server_error(app, client, thread_id):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.get(f"/threads/{thread_id}/messages?before={10**30}", headers=JSON)
    assert response.status_code < 500


# -- health and errors -------------------------------------------------------------------------
def test_healthz_reports_the_database_and_the_hub(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["hub"]["ok"] is True
    assert body["provider"]["name"] == "demo"
    assert "diagnostics" not in body  # a scan of the heap: only when asked for


def test_healthz_counts_greenlets_when_diagnostics_are_on(tmp_path):
    with made_app(tmp_path, HEALTH_DIAGNOSTICS=True) as app:
        before = app.test_client().get("/healthz").json["diagnostics"]
        parked = [gevent.spawn(gevent.sleep, 30) for _ in range(5)]
        try:
            after = app.test_client().get("/healthz").json["diagnostics"]
        finally:
            gevent.killall(parked)
    assert after["greenlets"] - before["greenlets"] >= 5
    assert after["greenlet_kinds"]["sleep"] >= 5  # what they run, to tell a leak's source


def test_unknown_url_is_a_404_page_or_json(client):
    page = client.get("/no/such/page")
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    assert b"404" in page.data
    api = client.get("/no/such/page", headers=JSON)
    assert api.status_code == 404
    assert api.mimetype == "application/json"
    assert (api.json["error"], api.json["status"]) == ("Not Found", 404)
    assert api.json["message"]


def test_unknown_thread_is_404(client):
    client.get("/")
    page = client.get("/threads/4242")
    assert page.status_code == 404
    assert b"No such thread." in page.data
    assert client.get("/threads/4242", headers=JSON).json["message"] == "No such thread."


def test_error_for_htmx_is_a_fragment(client):
    response = client.get("/threads/4242", headers={"HX-Request": "true"})
    assert response.status_code == 404
    assert b"<!doctype" not in response.data.lower()
    assert b'role="alert"' in response.data


@pytest.mark.parametrize("method,url", [
    ("GET", "/threads"),
    ("GET", "/messages/1/cancel"),
    ("POST", "/healthz"),
    ("POST", "/"),
    ("DELETE", "/messages/1"),
    ("GET", "/threads/1/rename"),
    ("GET", "/threads/import"),
])
def test_wrong_method_is_405_with_allow(client, method, url):
    page = client.open(url, method=method)
    assert page.status_code == 405
    assert page.headers["Allow"]
    api = client.open(url, method=method, headers=JSON)
    assert api.status_code == 405
    assert api.json["status"] == 405
    assert api.json["message"]


@pytest.mark.parametrize("path", ["/threads/{n}", "/messages/{n}", "/messages/{n}/stream",
                                  "/threads/{n}/messages"])
def test_an_id_beyond_the_integer_range_is_404(app, client, path):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client.get("/")
    response = client.get(path.format(n=10**30), headers=JSON)
    assert response.status_code == 404


def test_no_request_in_a_conversation_is_a_server_error(app, client, token, thread_id):
    """A whole session the way a user drives it: nothing along the way answers 5xx."""
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash shows as a 500, not a traceback
    sent = send(client, token, thread_id, "One")
    reply_id, user_id = sent["assistant_message"]["id"], sent["user_message"]["id"]
    responses = [
        client.get("/"),
        client.get(f"/threads/{thread_id}"),
        client.get(sent["stream_url"], buffered=True),
        client.get(f"/messages/{reply_id}"),
        client.get(f"/threads/{thread_id}/messages?before={user_id}"),
        client.post(f"/threads/{thread_id}/messages", data=json.dumps([]),
                    content_type="application/json", headers={"X-CSRF-Token": token}),
        client.post(f"/messages/{reply_id}/cancel", headers={"X-CSRF-Token": token}),
        client.get(f"/messages/{reply_id}/stream?after=x"),
        client.get("/healthz"),
    ]
    statuses = [response.status_code for response in responses]
    assert all(status < 500 for status in statuses), statuses
