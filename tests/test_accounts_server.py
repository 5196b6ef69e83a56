"""Accounts under gunicorn: sign-in attempts are counted across hosts that share Redis."""

from __future__ import annotations

import re
import uuid

import pytest

from bench.relay_client import RelayClient

pytestmark = pytest.mark.server


def attempt(base_url: str, username: str, password: str):
    """One sign-in attempt from a fresh browser: the sign-in page's token, then the POST."""
    browser = RelayClient(base_url)
    page = browser.request("GET", "/signin")
    browser.csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    return browser.post_json("/signin", {"username": username, "password": password})


def test_sign_in_attempts_are_limited_across_two_hosts_on_one_redis(server_factory, redis_url):
    shared = {"REDIS_URL": redis_url, "AUTH_MODE": "accounts", "SIGNUP": "off",
              "SIGNIN_RATE_LIMIT": "3/minute", "SIGNIN_ADDRESS_RATE_LIMIT": "100/minute",
              "HUB_PREFIX": f"relay-test-{uuid.uuid4().hex[:8]}:"}
    first, second = server_factory(**shared), server_factory(**shared)
    name = f"ann-{uuid.uuid4().hex[:8]}"
    statuses = [attempt(host.base_url, name, "wrong password").status
                for host in (first, second, first)]
    assert statuses == [401, 401, 401]
    limited = attempt(second.base_url, name, "wrong password")
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert "Too many attempts" in limited.json()["message"]
