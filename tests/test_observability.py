"""/metrics access rules, request ids and the JSON log format, in-process."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from observability.logs import JsonFormatter, current_message
from observability.requests import owner_hash

from .conftest import made_app

TOKEN = "a-scraper-token-of-some-length"


def samples(body: str) -> dict[str, float]:
    return {s.name + json.dumps(s.labels, sort_keys=True): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_metrics_from_the_local_address_by_default_without_a_session(client):
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert "Set-Cookie" not in response.headers
    found = samples(response.text)
    key = 'relay_http_requests_total{"method": "GET", "route": "/healthz", "status": "200"}'
    assert found[key] == 1


def test_metrics_outside_the_allow_list_need_the_bearer_token(tmp_path):
    with made_app(tmp_path, METRICS_ALLOW="10.0.0.0/8,fd00::/8", METRICS_TOKEN=TOKEN) as app:
        client = app.test_client()
        refused = client.get("/metrics")
        assert refused.status_code == 403
        assert "METRICS_ALLOW" in refused.text
        assert "Set-Cookie" not in refused.headers
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}
                          ).status_code == 403
        assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
                          ).status_code == 200
        inside = client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"})
        assert inside.status_code == 200
        assert client.get("/metrics", environ_base={"REMOTE_ADDR": "fd00::5"}
                          ).status_code == 200


def test_metrics_switched_off_are_a_404_that_says_so(tmp_path):
    with made_app(tmp_path, METRICS=False) as app:
        response = app.test_client().get("/metrics")
        assert response.status_code == 404
        assert "METRICS=off" in response.text
        assert "Set-Cookie" not in response.headers


def test_a_bad_allow_list_stops_the_start_with_a_message(tmp_path):
    with pytest.raises(ValueError, match="METRICS_ALLOW: 'ten.0.0.1'"), \
            made_app(tmp_path, METRICS_ALLOW="127.0.0.1, ten.0.0.1"):
        pass


def test_routes_are_labelled_by_url_rule_and_unknown_paths_by_none(client, token, thread_id):
    client.get(f"/threads/{thread_id}")
    client.get("/no/such/page/with-a-secret-in-its-path")
    body = client.get("/metrics").text
    assert 'route="/threads/<id:thread_id>"' in body
    assert 'route="(unmatched)",status="404"' in body
    assert "with-a-secret" not in body
    assert f"/threads/{thread_id}\"" not in body


def test_a_request_id_is_made_or_taken_from_a_trusted_proxy(tmp_path, client):
    made = client.get("/healthz").headers["X-Request-Id"]
    assert len(made) == 16
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}
                      ).headers["X-Request-Id"] != "abc-123"  # nobody is trusted by default
    with made_app(tmp_path, TRUSTED_PROXIES=1) as app:
        proxied = app.test_client()
        assert proxied.get("/healthz", headers={"X-Request-Id": "abc-123"}
                           ).headers["X-Request-Id"] == "abc-123"
        invalid = proxied.get("/healthz", headers={"X-Request-Id": "bad id\u00e9"})
        assert invalid.headers["X-Request-Id"] != "bad id\u00e9"
        assert len(invalid.headers["X-Request-Id"]) == 16


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    item = logging.LogRecord("relay.test", logging.WARNING, __file__, 1, message, args,
                             exc_info)
    item.__dict__.update(extra)
    return item


def test_a_json_line_has_the_context_and_no_exception_text_or_secret():
    formatter = JsonFormatter(lambda: {"request_id": "r1", "route": "/x"},
                              secrets=["sk-very-secret-key-123", None, "short"])
    try:
        raise ValueError("the prompt text that must not be logged")
    except ValueError:
        exc_info = sys.exc_info()
    token = current_message.set(42)
    try:
        line = formatter.format(record("failed with key %s", "sk-very-secret-key-123",
                                       exc_info=exc_info, status=500))
    finally:
        current_message.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed with key [redacted]"
    assert entry["level"] == "warning" and entry["logger"] == "relay.test"
    assert (entry["request_id"], entry["route"], entry["message_id"]) == ("r1", "/x", 42)
    assert entry["status"] == 500
    assert entry["exc_type"] == "ValueError"
    assert entry["exc_at"][-1].startswith("test_observability.py:")
    assert "prompt text" not in line
    assert entry["time"].endswith("Z")


def test_owner_hashes_are_short_stable_and_keyed():
    assert owner_hash("owner-1", "key") == owner_hash("owner-1", "key")
    assert owner_hash("owner-1", "key") != owner_hash("owner-1", "other key")
    assert len(owner_hash("owner-1", "key")) == 12
    assert "owner-1" not in owner_hash("owner-1", "key")


def test_an_uncaught_greenlet_error_is_logged_not_printed(caplog):
    import gevent

    from observability.logs import log_greenlet_errors

    hub = gevent.get_hub()
    try:
        log_greenlet_errors()
        with caplog.at_level(logging.ERROR, logger="gevent"):
            gevent.spawn(lambda: 1 / 0).join()
        assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    finally:
        del hub.print_exception  # the class's own again


def test_gauges_are_sampled_from_the_engine_feeds_and_polls(app, client, token, thread_id):
    metrics = app.extensions["relay_metrics"]
    engine = app.extensions["relay"]
    engine.admission.enqueue(999)  # a reply waiting for a slot
    client.get(f"/threads/{thread_id}/messages?after=1&follow=poll", headers={"HX-Request":
                                                                                 "true"})
    metrics.sse_streams = 2
    metrics._sources = engine._metric_sources  # what start() samples every second
    found = samples(client.get("/metrics").text)
    assert found['relay_queue_depth{}'] == 1
    assert found['relay_followers{"kind": "poll"}'] == 1
    assert found['relay_followers{"kind": "sse"}'] == 2
    assert found['relay_followers{"kind": "websocket"}'] == 0
    assert found['relay_generations_active{}'] == 0
    assert found['relay_hub_backend_state{"backend": "in-process", "state": "live"}'] == 1
    assert found['relay_hub_backend_state{"backend": "in-process", "state": "degraded"}'] == 0
    engine.admission.waiting.clear()
