"""The bench's floor relays the model's text exactly, in Relay's event format."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from bench.fake_upstream import FakeUpstream, Reply
from bench.floor_relay import dechunk
from bench.harness import FakeUpstreamProcess
from bench.sse_client import SSEConnection
from streaming.sse import decode_delta

TOKENS = ["Hé", " <b>&", "'quoted\"", "\r\n", "two\nlines", " 😀", " end."]


@pytest.fixture
def floor(tmp_path):
    replies = iter([Reply(tokens=TOKENS, token_delay_s=0.005), Reply(tokens=[], status=500)])
    with FakeUpstream(default_reply=lambda body: next(replies)) as fake:
        relay = FakeUpstreamProcess(tmp_path, "bench.floor_relay", ready_path="/healthz",
                                    upstream=fake.url).start()
        try:
            yield relay.root_url
        finally:
            relay.stop()


def events(url: str) -> list:
    with SSEConnection(url, timeout=10) as conn:
        assert conn.status == 200
        return list(conn)


def test_floor_streams_the_exact_text_one_event_per_token(floor):
    got = events(f"{floor}/stream?prompt={quote('hi there')}")
    assert [e.event for e in got] == ["delta"] * len(TOKENS) + ["done"]
    assert "".join(decode_delta(e.data) for e in got[:-1]) == "".join(TOKENS)
    ends = [sum(len(t) for t in TOKENS[:i + 1]) for i in range(len(TOKENS))]
    assert [int(e.id) for e in got[:-1]] == ends
    got = events(f"{floor}/stream?prompt=again")
    assert [e.event for e in got] == ["error"]


def test_dechunk_keeps_an_incomplete_chunk_for_later():
    assert dechunk(b"3\r\nabc\r\n4\r\nde") == (b"abc", b"4\r\nde", False)
    assert dechunk(b"2;x=1\r\nfg\r\n0\r\n\r\n") == (b"fg", b"", True)
