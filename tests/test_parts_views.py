"""Reasoning and tool steps in every view: the poll fragment, the websocket frame, the
streaming tab's containers, the JSON, and the reply's stage."""

from __future__ import annotations

import re

from models import Message, db
from tests.conftest import JSON, send
from views.sockets import render_changes

STEPS = [{"name": "calculator", "arguments": '{"expression": "<b>2</b>"}', "result": "2",
          "status": "ok"},
         {"name": "current_time", "arguments": "{}", "result": None, "status": "running"}]


def store(app, message_id: int, **values) -> None:
    with app.app_context():
        message = db.session.get(Message, message_id)
        for key, value in values.items():
            setattr(message, key, value)
        db.session.commit()


def test_poll_fragment_shows_reasoning_steps_and_the_stage_of_a_streaming_reply(
        app, client, token, thread_id):
    reply = send(client, token, thread_id)["assistant_message"]["id"]
    store(app, reply, status="streaming", reasoning="I <think> & so", steps=STEPS)
    html = client.get(f"/messages/{reply}", headers={"HX-Request": "true"}).text
    assert '<details class="message-reasoning" open>' in html
    assert "I &lt;think&gt; &amp; so" in html
    assert "calling current_time…" in html  # the step running now, and the stage label
    assert re.search(r'class="message-status[^"]*">calling current_time…</span>', html)
    assert html.count('class="message-step ') == 2
    assert "{&#34;expression&#34;: &#34;&lt;b&gt;2&lt;/b&gt;&#34;}" in html  # escaped, not markup


def test_stage_is_thinking_while_only_reasoning_has_arrived(app, client, token, thread_id):
    reply = send(client, token, thread_id)["assistant_message"]["id"]
    store(app, reply, status="streaming", reasoning="hmm")
    html = client.get(f"/messages/{reply}", headers={"HX-Request": "true"}).text
    assert re.search(r'class="message-status[^"]*">thinking</span>', html)
    assert "Thinking…" in html


def test_websocket_frame_carries_the_parts(app, client, token, thread_id):
    reply = send(client, token, thread_id)["assistant_message"]["id"]
    store(app, reply, status="streaming", reasoning="deep thought", steps=STEPS[:1])
    with app.test_request_context():
        frame = render_changes(thread_id, [{"type": "persisted", "message": reply}],
                               readonly=False)
    assert 'hx-swap-oob="true"' in frame and "deep thought" in frame
    assert 'data-step-index="0"' in frame and 'data-status="ok"' in frame


def test_a_finished_reply_shows_how_long_it_thought_and_json_has_the_parts(
        app, client, token, thread_id):
    reply = send(client, token, thread_id)["assistant_message"]["id"]
    store(app, reply, status="complete", content="done", reasoning="r", reasoning_ms=2345,
          steps=[{**STEPS[1], "status": "aborted"}])
    html = client.get(f"/messages/{reply}", headers={"HX-Request": "true"}).text
    assert "Thought for 2.3 s" in html and '<details class="message-reasoning">' in html
    assert 'data-status="aborted"' in html and "stopped" in html
    body = client.get(f"/messages/{reply}", headers=JSON).json
    assert body["reasoning"] == "r" and body["timings"]["reasoning_ms"] == 2345
    assert body["steps"] == [{**STEPS[1], "status": "aborted"}]


def test_a_text_only_reply_has_no_parts_in_json_or_html(app, client, token, thread_id):
    reply = send(client, token, thread_id)["assistant_message"]["id"]
    store(app, reply, status="complete", content="plain")
    html = client.get(f"/messages/{reply}", headers={"HX-Request": "true"}).text
    assert "message-reasoning" not in html and "message-steps" not in html
    body = client.get(f"/messages/{reply}", headers=JSON).json
    assert (body["reasoning"], body["steps"]) == (None, [])
    assert "reasoning_ms" not in body["timings"]


def test_the_streaming_tab_gets_empty_hidden_containers_and_a_compound_cursor(
        app, client, token, thread_id):
    reply = send(client, token, thread_id)["assistant_message"]["id"]
    page = client.get(f"/threads/{thread_id}").text
    article = page[page.index(f'id="message-{reply}"'):]
    assert 'sse-swap="reasoning"' in article and 'sse-swap="step"' in article
    assert re.search(r'<details class="message-reasoning" hidden', article)
    store(app, reply, status="streaming", reasoning="abc", steps=STEPS)
    page = client.get(f"/threads/{thread_id}").text
    assert f"/messages/{reply}/stream?after=0.3.3" in page


def test_stage_is_connecting_then_thinking_until_the_model_writes_and_after_a_tool_step(
        app, client, token, thread_id):
    reply = send(client, token, thread_id)["assistant_message"]["id"]
    html = client.get(f"/messages/{reply}", headers={"HX-Request": "true"}).text
    # Pending: no generation has asked the model yet, in this tab or any other.
    assert re.search(r'class="message-status[^"]*">connecting</span>', html)
    # After a tool step, until the model answers again.
    store(app, reply, status="streaming", reasoning="r", steps=STEPS[:1])
    html = client.get(f"/messages/{reply}", headers={"HX-Request": "true"}).text
    assert re.search(r'class="message-status[^"]*">thinking</span>', html)
    store(app, reply, content="Now writing")
    html = client.get(f"/messages/{reply}", headers={"HX-Request": "true"}).text
    assert re.search(r'class="message-status[^"]*">writing</span>', html)


def test_reasoning_and_steps_survive_export_and_import(app, client, token, thread_id):
    import json

    reply = send(client, token, thread_id)["assistant_message"]["id"]
    store(app, reply, status="complete", content="done", reasoning="why", reasoning_ms=12,
          steps=[STEPS[0], {**STEPS[1], "status": "running"}])
    export = json.loads(client.get(f"/threads/{thread_id}/export?format=json").data)
    record = export["messages"][1]
    assert record["reasoning"] == "why" and record["timings"]["reasoning_ms"] == 12
    answer = client.post("/threads/import", json=export,
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 201, answer.text
    again = json.loads(client.get(
        f"/threads/{answer.json['thread']['id']}/export?format=json").data)["messages"][1]
    assert again["reasoning"] == "why" and again["timings"]["reasoning_ms"] == 12
    # Nothing runs in an imported thread: a step that was running is stopped.
    assert again["steps"] == [STEPS[0], {**STEPS[1], "status": "aborted"}]


def test_an_import_with_malformed_steps_is_a_400(app, client, token):
    body = {"format": "relay.thread", "version": 1, "thread": {"title": "T"},
            "messages": [{"id": 1, "role": "assistant", "content": "x",
                          "steps": [{"name": "calculator", "status": "ok"}]}]}
    answer = client.post("/threads/import", json=body, headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 400 and "'steps'" in answer.json["message"]
