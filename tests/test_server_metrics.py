"""/metrics and JSON logs of Relay under gunicorn with two workers, as an operator sees them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reply

from .test_server_streaming import terminal, wait_for

pytestmark = pytest.mark.server

METRICS_TOKEN = "metrics-token-for-the-scraper-7c1e"
API_KEY = "sk-planted-key-that-must-never-be-logged-5d2a9f"
SECRET_KEY = "planted-secret-key-never-logged-81f0c3"


@pytest.fixture(scope="module")
def metered(server_factory):
    """Two workers; 127.0.0.1 is not in METRICS_ALLOW, so only the token gets in."""
    return server_factory(workers=2, METRICS_ALLOW="192.0.2.0/24, 2001:db8::/32",
                          METRICS_TOKEN=METRICS_TOKEN, LOG_FORMAT="json", ACCESS_LOG="-",
                          OPENAI_API_KEY=API_KEY, SECRET_KEY=SECRET_KEY)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def scrape(server) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics (asked with the token) by (name, sorted labels)."""
    status, headers, body = fetch(server.base_url + "/metrics",
                                  {"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    assert "Set-Cookie" not in headers  # a scrape makes no session
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none yet)."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def test_metrics_count_a_streamed_reply_across_both_workers(metered, upstream):
    browser = RelayClient(metered.base_url).open()
    thread = browser.new_thread()
    words = [f"word{i} " for i in range(37)]
    before = scrape(metered)

    sent = browser.send(thread, upstream.script(Reply(tokens=words, token_delay_s=0.01)))
    with browser.stream(sent["stream_url"]) as conn:
        text, end_event, _ = read_reply(conn)
    assert (text, end_event) == ("".join(words), "done")
    terminal(browser, sent["assistant_message"]["id"])

    # The reply ran in one worker; whichever worker answers the scrape sees its counts.
    after = wait_for(lambda: (s := scrape(metered)) and value(
        s, "relay_replies_total", status="complete") > value(
        before, "relay_replies_total", status="complete") and s)
    for _ in range(4):  # the same from either worker, asked on fresh connections
        again = scrape(metered)
        assert value(again, "relay_tokens_relayed_total") - \
            value(before, "relay_tokens_relayed_total") == len(words)
    assert value(after, "relay_replies_total", status="complete", reason="none") - \
        value(before, "relay_replies_total", status="complete", reason="none") == 1
    assert value(after, "relay_time_to_first_token_seconds_count") - \
        value(before, "relay_time_to_first_token_seconds_count") == 1
    assert value(after, "relay_writer_commit_seconds_count") > \
        value(before, "relay_writer_commit_seconds_count")
    route = "/threads/<id:thread_id>/messages"
    assert value(after, "relay_http_requests_total", route=route, method="POST",
                 status="201") - value(before, "relay_http_requests_total", route=route,
                                       method="POST", status="201") == 1
    stream_route = "/messages/<id:message_id>/stream"
    assert value(after, "relay_http_request_duration_seconds_count", route=stream_route) >= 1
    # Routes are URL rules: no raw path (with its ids) ever becomes a label.
    assert not any(f"/threads/{thread}" in dict(labels).get("route", "")
                   for _, labels in after)
    # Both workers' hubs are live: a worker that booted late under load reports its broker
    # within a sample or two of connecting.
    hubs = wait_for(lambda: (s := scrape(metered)) and value(
        s, "relay_hub_backend_state", state="live") == 2 and s)
    assert value(hubs, "relay_hub_backend_state", state="degraded") == 0


def test_requests_answered_by_both_workers_add_up(metered):
    before = scrape(metered)
    workers = set()
    asked = 0
    while len(workers) < 2 or asked < 10:
        assert asked < 200, "one worker answered every request"
        status, _, body = fetch(metered.base_url + "/healthz")
        assert status == 200
        workers.add(json.loads(body)["worker"])
        asked += 1
    after = scrape(metered)
    assert value(after, "relay_http_requests_total", route="/healthz", status="200") - \
        value(before, "relay_http_requests_total", route="/healthz", status="200") == asked


def test_metrics_are_refused_outside_the_allow_list_without_the_token(metered):
    for headers in ({}, {"Authorization": "Bearer not-the-token"},
                    {"Authorization": f"Basic {METRICS_TOKEN}"}):
        status, response_headers, body = fetch(metered.base_url + "/metrics", headers)
        assert status == 403
        assert "METRICS_ALLOW" in body
        assert "Set-Cookie" not in response_headers


def test_json_logs_are_one_object_a_line_without_prompt_key_or_cookie(metered, upstream):
    browser = RelayClient(metered.base_url).open()
    thread = browser.new_thread()
    prompt = upstream.script(Reply.words("a short answer to a planted prompt"))
    sent = browser.send(thread, prompt)
    with browser.stream(sent["stream_url"]) as conn:
        assert read_reply(conn)[1] == "done"
    status, headers, _ = fetch(metered.base_url + "/healthz",
                               {"X-Request-Id": "from-an-untrusted-client"})
    request_id = headers["X-Request-Id"]
    assert request_id != "from-an-untrusted-client"  # no trusted proxy is configured

    def logged() -> list[dict]:
        lines = [line for line in metered.log().splitlines() if line.strip()]
        return [json.loads(line) for line in lines]

    entries = wait_for(lambda: (e := logged()) and any(x.get("request_id") == request_id
                                                       for x in e) and e)
    for entry in entries:
        assert isinstance(entry, dict)
        assert {"time", "level", "logger", "message"} <= set(entry)
    log = metered.log()
    cookie = next(c.value for c in browser.cookies if c.name == "relay_session")
    for secret in (prompt, API_KEY, SECRET_KEY, cookie, browser.csrf, METRICS_TOKEN):
        assert secret not in log
    access = [e for e in entries if e["logger"] == "gunicorn.access"]
    stream = [e for e in access if e.get("route") == "/messages/<id:message_id>/stream"]
    assert stream and stream[-1]["status"] == 200 and stream[-1]["request_id"]
    assert any(e["request_id"] == request_id and e["route"] == "/healthz" for e in access)
    assert any(e["logger"] == "gunicorn.error" for e in entries)  # the master's own lines
