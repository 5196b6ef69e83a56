"""A model that cannot be reached is shown before anything is sent, and after a failure."""

from __future__ import annotations

import socket

import pytest

from .conftest import RELAY_ENV, new_thread, send_prompt, wait_for_reply, wait_until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def relay(server_factory):
    """Relay whose model server is a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return server_factory(**RELAY_ENV, OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
                          MODEL_RETRIES="0", MODEL_HEALTH_TTL_S="0")


def test_an_unreachable_model_is_shown_before_sending_and_checked_again_on_failure(page):
    checks = []
    page.on("request", lambda r: checks.append(r.url) if "/models/health" in r.url else None)
    new_thread(page)
    health = page.locator("#model-health")
    wait_until(lambda: health.get_attribute("data-state") == "down", what="the model's health")
    assert health.is_visible()
    assert health.text_content().startswith("Model unavailable: Could not connect to the "
                                            "model server")
    seen = len(checks)

    reply = send_prompt(page, "Anyone there?")
    wait_for_reply(page, reply, ("error",), timeout=40)
    wait_until(lambda: len(checks) > seen, what="a new health check after the failure",
               page=page)
    assert health.get_attribute("data-state") == "down"
