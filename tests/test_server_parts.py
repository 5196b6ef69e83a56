"""Relay under gunicorn against the fake model: replies with reasoning and tool steps,
streamed, persisted, stopped and resumed with one cursor."""

from __future__ import annotations

import json
import random
import time

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_parts, read_parts_reconnecting

from .test_server_streaming import terminal

pytestmark = pytest.mark.server

TRICKY = ("Line one\r\nline two\n\n<b>bold</b> & \"quotes\" 'single' &amp; &#13; "
          "data: not a field\nid: 7\n😀 e\u0301 tail")
LONG_TEXT = " ".join(f"word{i}" for i in range(60)) + "\n\n" + TRICKY
REASONING = ("Let me think. <The user> wants & numbers; \"quoted\"\r\n" +
             " ".join(f"thought{i}" for i in range(40)))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_workers(request, server_factory):
    """Two workers: a reconnect may land on the one that does not generate the reply, and
    read it from the database (PostgreSQL: its hub is LISTEN/NOTIFY)."""
    if request.param == "postgresql":
        return server_factory(request.getfixturevalue("postgres_url"), workers=2)
    return server_factory(workers=2)


def test_two_step_tool_reply_is_exact_after_20_reconnects_at_random_points(two_workers,
                                                                          upstream):
    browser = RelayClient(two_workers.base_url).open()
    prompt = upstream.script(
        Reply.calling([("calculator", '{"expression": "2+3*4"}')], pieces=6,
                      reasoning=REASONING, token_delay_s=0.02),
        Reply.calling([("calculator", '{"expression": "(7-2)**3"}'), ("current_time", "{}")],
                      pieces=3, interleave=True, reasoning="Two more things to look up.",
                      text="Partial answer first. ", token_delay_s=0.02),
        Reply.thinking("Now I can answer.", LONG_TEXT, field="reasoning", token_delay_s=0.02))
    sent = browser.send(browser.new_thread(), prompt)
    # A reader on the other worker gets whole flushes per event: cut often.
    cuts = random.Random(12).choices([1, 2, 3], weights=[4, 2, 1], k=200)

    parts, reconnects = read_parts_reconnecting(browser, sent["stream_url"], cuts)

    assert parts.end_event == "done"
    assert reconnects >= 20
    stored = browser.message(sent["assistant_message"]["id"])
    assert stored["status"] == "complete"
    expected_text = "Partial answer first. " + LONG_TEXT
    expected_reasoning = REASONING + "\n\nTwo more things to look up.\n\nNow I can answer."
    assert parts.text == stored["content"] == expected_text
    assert parts.reasoning == stored["reasoning"] == expected_reasoning
    assert [(s["name"], s["result"], s["status"]) for s in stored["steps"]] == [
        ("calculator", "14", "ok"), ("calculator", "125", "ok"),
        ("current_time", stored["steps"][2]["result"], "ok")]
    assert stored["steps"][2]["result"].endswith("Z")
    assert parts.final_steps() == stored["steps"]
    # Every step event arrived once: a start and an end per step, in order.
    assert [(e["index"], e["status"] == "running") for e in parts.steps] == [
        (0, True), (0, False), (1, True), (1, False), (2, True), (2, False)]

    # A clean read from the start gives exactly the same parts, and the final cursor.
    clean = read_parts(browser.stream(sent["stream_url"]))
    assert (clean.text, clean.reasoning, clean.steps) == (parts.text, parts.reasoning,
                                                          parts.steps)
    assert clean.last_id == parts.last_id == \
        f"{len(expected_text)}.{len(expected_reasoning)}.6"
    # The model was told each result, in the OpenAI shape, under the id of its call.
    second, third = upstream.records_for(prompt)[1:3]
    tool_message = second.body["messages"][-1]
    assert tool_message == {"role": "tool", "tool_call_id": "call_0_calculator",
                            "content": "14"}
    assert second.body["messages"][-2]["tool_calls"][0]["function"] == {
        "name": "calculator", "arguments": '{"expression": "2+3*4"}'}
    assert [m["content"] for m in third.body["messages"][-2:]][0] == "125"
    assert {t["function"]["name"] for t in second.body["tools"]} >= {"calculator",
                                                                    "current_time"}


def test_reasoning_and_text_resume_exactly_from_any_cursor(server, upstream):
    browser = RelayClient(server.base_url).open()
    prompt = upstream.script(Reply.thinking(REASONING, TRICKY, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    cuts = random.Random(3).choices([1, 2], k=200)  # many reconnects, however events coalesce

    parts, reconnects = read_parts_reconnecting(browser, sent["stream_url"], cuts)

    assert parts.end_event == "done" and reconnects >= 20
    assert (parts.text, parts.reasoning) == (TRICKY, REASONING)
    stored = terminal(browser, sent["assistant_message"]["id"], timeout=30.0)
    assert (stored["content"], stored["reasoning"], stored["steps"]) == (TRICKY, REASONING, [])
    assert stored["timings"]["reasoning_ms"] >= 0
    # From a compound cursor in the middle: the rest of each part, nothing else.
    rest = read_parts(browser.stream(sent["stream_url"] + "?after=10.20.0"))
    assert (rest.text, rest.reasoning, rest.end_event) == (TRICKY[10:], REASONING[20:], "done")
    # The page shows the thinking in its panel, with how long it took.
    page = browser.request("GET", f"/messages/{sent['assistant_message']['id']}",
                           headers={"HX-Request": "true"}).text
    assert 'class="message-reasoning"' in page and "Thought for" in page
    assert "&lt;The user&gt; wants &amp; numbers" in page


@pytest.mark.parametrize("cursor", ["1.2", "1.2.3.4", "a.b.c", "-1.0.0", "1..2", " 1.2.3x",
                                    "1.2.9999999999999"])
def test_a_malformed_compound_cursor_is_refused_with_400(server, upstream, cursor):
    browser = RelayClient(server.base_url).open()
    sent = browser.send(browser.new_thread(), upstream.script(Reply.words("short")))
    read_parts(browser.stream(sent["stream_url"]))
    answer = browser.request("GET", sent["stream_url"], headers={"Last-Event-ID": cursor})
    assert answer.status == 400
    assert "cursor" in answer.text


def test_a_cursor_past_any_part_of_a_finished_reply_is_refused(server, upstream):
    browser = RelayClient(server.base_url).open()
    prompt = upstream.script(Reply.thinking("abc", "hello"))
    sent = browser.send(browser.new_thread(), prompt)
    assert read_parts(browser.stream(sent["stream_url"])).end_event == "done"
    assert browser.request("GET", sent["stream_url"] + "?after=5.3.0").status == 200
    for cursor in ("5.4.0", "6.3.0", "5.3.1"):
        answer = browser.request("GET", sent["stream_url"] + f"?after={cursor}")
        assert answer.status == 400, cursor


def test_calculator_refuses_code_and_bad_arguments_fail_the_step_not_the_reply(server,
                                                                              upstream):
    browser = RelayClient(server.base_url).open()
    prompt = upstream.script(
        Reply.calling([("calculator", json.dumps({"expression": "__import__('os').getcwd()"})),
                       ("calculator", '{"expression": "2+'),
                       ("no_such_tool", "{}")]),
        Reply.words("I could not compute that."))
    sent = browser.send(browser.new_thread(), prompt)
    parts = read_parts(browser.stream(sent["stream_url"]))

    assert parts.end_event == "done"
    stored = browser.message(sent["assistant_message"]["id"])
    assert stored["status"] == "complete"
    assert stored["content"] == "I could not compute that."
    assert [s["status"] for s in stored["steps"]] == ["error", "error", "error"]
    assert "not allowed" in stored["steps"][0]["result"]
    assert "not valid JSON" in stored["steps"][1]["result"]
    assert "no tool named" in stored["steps"][2]["result"]
    told = [m for m in upstream.records_for(prompt)[1].body["messages"] if m["role"] == "tool"]
    assert len(told) == 3 and all(m["content"].startswith("Error:") for m in told)


def test_step_limit_ends_the_reply_with_a_clear_note(server_factory, upstream):
    relay = server_factory(MAX_TOOL_STEPS="2")
    browser = RelayClient(relay.base_url).open()
    prompt = upstream.script(Reply.calling([("calculator", '{"expression": "1+1"}')],
                                           text="Checking. "))
    sent = browser.send(browser.new_thread(), prompt)
    parts = read_parts(browser.stream(sent["stream_url"]))

    assert parts.end_event == "done"
    stored = browser.message(sent["assistant_message"]["id"])
    assert stored["status"] == "complete"
    assert [s["result"] for s in stored["steps"]] == ["2", "2"]
    assert stored["content"].startswith("Checking. Checking. Checking.")
    assert stored["content"].endswith("reached the limit of 2 tool steps (MAX_TOOL_STEPS).*")
    assert parts.text == stored["content"]
    assert len(upstream.records_for(prompt)) == 3  # two rounds of tools, then no more


def test_stop_during_a_tool_call_ends_aborted_with_the_steps_kept(server_factory, upstream):
    relay = server_factory(TOOL_MODULES="tests.slow_tools", TOOLS="calculator,wait")
    browser = RelayClient(relay.base_url).open()
    prompt = upstream.script(
        Reply.calling([("calculator", '{"expression": "6*7"}')]),
        Reply.calling([("wait", '{"seconds": 60}')], reasoning="Now wait."),
        Reply.words("never sent"))
    sent = browser.send(browser.new_thread(), prompt)
    reply_id = sent["assistant_message"]["id"]
    connection = browser.stream(sent["stream_url"])
    parts = read_parts(connection, stop_after=1)
    started = time.monotonic()
    connection = browser.stream(sent["stream_url"], last_event_id=parts.last_id)
    with connection:
        for event in connection:
            if event.event == "step" and json.loads(event.data)["name"] == "wait":
                assert json.loads(event.data)["status"] == "running"
                break
    stop = browser.post_json(f"/messages/{reply_id}/cancel")
    assert stop.status in (200, 202)

    stored = terminal(browser, reply_id, timeout=30.0)
    assert stored["status"] == "aborted"
    assert time.monotonic() - started < 30  # the 60 s tool did not run out
    assert [(s["name"], s["status"], s["result"]) for s in stored["steps"]] == [
        ("calculator", "ok", "42"), ("wait", "aborted", None)]
    assert stored["reasoning"] == "Now wait."
    # The stream ends the same way, with every step event, after a reconnect too.
    rest = read_parts(browser.stream(sent["stream_url"]))
    assert rest.end_event == "aborted"
    assert rest.final_steps() == stored["steps"]
    assert len(upstream.records_for(prompt)) == 2  # the model was not asked again

    # Continue: the reply goes on from all its parts; the steps and reasoning stay.
    answer = browser.post_json(f"/messages/{reply_id}/continue")
    assert answer.status == 202
    assert answer.json()["stream_url"].endswith(f"?after=0.{len('Now wait.')}.4")
    more = read_parts(browser.stream(answer.json()["stream_url"]))
    assert (more.text, more.reasoning, more.steps, more.end_event) == (
        "never sent", "", [], "done")
    stored = browser.message(reply_id)
    assert stored["status"] == "complete" and stored["content"] == "never sent"
    assert [s["status"] for s in stored["steps"]] == ["ok", "aborted"]
    assert stored["reasoning"] == "Now wait."
