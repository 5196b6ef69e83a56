"""Followers under gunicorn + gevent: the websocket, poll-swap, share links, strangers."""

from __future__ import annotations

import re
import time

import pytest
import websocket

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient

from .test_server_streaming import terminal, wait_for

pytestmark = pytest.mark.server

STATUS = re.compile(r'<article[^>]*id="message-(\d+)"[^>]*data-status="([a-z]+)"', re.S)


def open_socket(server, client: RelayClient, thread_id: int,
                query: str = "") -> websocket.WebSocket:
    url = server.base_url.replace("http://", "ws://") + f"/threads/{thread_id}/ws{query}"
    return websocket.create_connection(url, cookie=client.cookie_header(), timeout=10)


def test_a_socket_opened_after_a_turn_ended_gets_it_when_it_says_what_it_has(server,
                                                                             upstream):
    """A turn asked and answered between the page's load and its socket's opening (or while
    the socket was closed) is in the first frame of a socket that says `after`."""
    owner = RelayClient(server.base_url).open()
    thread = owner.new_thread()
    first = owner.send(thread, upstream.script(Reply.words("the first answer")))
    terminal(owner, first["assistant_message"]["id"])
    had = first["assistant_message"]["id"]  # what the page showed
    later = owner.send(thread, upstream.script(Reply.words("answered before the socket")))
    assert terminal(owner, later["assistant_message"]["id"])["status"] == "complete"
    ws = open_socket(server, owner, thread, f"?after={had}")
    try:
        frame = ws.recv()
    finally:
        ws.close()
    shown = dict(STATUS.findall(frame))
    assert shown == {str(later["user_message"]["id"]): "complete",
                     str(later["assistant_message"]["id"]): "complete"}
    assert "answered before the socket" in frame
    ws = open_socket(server, owner, thread)  # without `after`: the live state only
    try:
        assert STATUS.findall(ws.recv()) == []
    finally:
        ws.close()
    for bad in ("abc", "-1", "9" * 40):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            open_socket(server, owner, thread, f"?after={bad}")
        assert refused.value.status_code == 400


def test_websocket_follower_gets_state_then_fragments_until_complete(server, upstream):
    owner = RelayClient(server.base_url).open()
    thread = owner.new_thread()
    text = " ".join(f"part{i}" for i in range(60))
    prompt = upstream.script(Reply.words(text, token_delay_s=0.02))
    ws = open_socket(server, owner, thread)
    try:
        first = ws.recv()
        assert 'id="live-status"' in first and 'data-state="live"' in first

        sent = owner.send(thread, prompt)  # nobody streams it: it runs headless
        reply_id = str(sent["assistant_message"]["id"])
        frames, statuses = [], []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            frame = ws.recv()
            frames.append(frame)
            statuses += [s for mid, s in STATUS.findall(frame) if mid == reply_id]
            if "complete" in statuses:
                break
    finally:
        ws.close()
    # New messages arrive appended to the list, then one fragment per persisted change.
    assert 'hx-swap-oob="beforeend:#messages"' in frames[0]
    assert statuses.count("streaming") >= 3
    assert statuses[-1] == "complete"
    last = frames[-1]
    assert 'hx-swap-oob="true"' in last and "hx-trigger" not in last
    assert "part59" in last


def test_poll_swap_fragment_polls_while_streaming_and_stops_when_complete(server, upstream):
    owner = RelayClient(server.base_url).open()
    text = " ".join(f"poll{i}" for i in range(80))
    prompt = upstream.script(Reply.words(text, token_delay_s=0.02))
    sent = owner.send(owner.new_thread(), prompt)
    url = f"/messages/{sent['assistant_message']['id']}"
    seen: list[tuple[str, bool]] = []

    def poll():
        html = owner.request("GET", url, headers={"HX-Request": "true"}).text
        status = STATUS.search(html).group(2)
        seen.append((status, 'hx-trigger="load delay:' in html))
        return status == "complete"

    wait_for(poll, timeout=30, interval=0.1)
    assert ("streaming", True) in seen  # an active fragment polls itself
    assert seen[-1] == ("complete", False)  # the finished one stops


def test_share_link_reads_live_but_cannot_post_or_cancel(server, upstream):
    owner = RelayClient(server.base_url).open()
    thread = owner.new_thread()
    text = " ".join(f"shared{i}" for i in range(60))
    sent = owner.send(thread, upstream.script(Reply.words(text, token_delay_s=0.02)))
    share = owner.post_json(f"/threads/{thread}/share")
    assert share.status == 201
    share_path = share.json()["share_url"].split(server.base_url, 1)[1]

    viewer = RelayClient(server.base_url).open()
    page = viewer.request("GET", share_path)
    assert page.status == 200
    assert 'id="composer"' not in page.text
    assert 'data-action="cancel"' not in page.text
    assert f"/threads/{thread}/ws" in page.text  # follows over the websocket

    reply_id = sent["assistant_message"]["id"]
    ws = open_socket(server, viewer, thread)
    try:
        assert 'id="live-status"' in ws.recv()
    finally:
        ws.close()
    assert viewer.get_json(f"/messages/{reply_id}").status == 200
    assert viewer.post_json(f"/threads/{thread}/messages", {"content": "hi"}).status == 404
    assert viewer.post_json(f"/messages/{reply_id}/cancel").status == 404
    assert viewer.post_json(f"/threads/{thread}/share").status == 404
    done = terminal(viewer, reply_id)
    assert done["content"] == text  # the viewer read the whole reply
    assert owner.message(reply_id)["status"] == "complete"  # and stopped nothing


def test_revoking_a_share_shuts_out_the_viewers_following_live(server, upstream):
    """A viewer's open websocket is not a way around a revoked link: it gets a last frame
    saying the link was revoked, then the socket ends, while the owner goes on following."""
    owner = RelayClient(server.base_url).open()
    thread = owner.new_thread()
    text = " ".join(f"revoked{i}" for i in range(200))
    sent = owner.send(thread, upstream.script(Reply.words(text, token_delay_s=0.02)))
    share_path = owner.post_json(f"/threads/{thread}/share").json()["share_url"] \
        .split(server.base_url, 1)[1]
    viewer = RelayClient(server.base_url).open()
    assert viewer.request("GET", share_path).status == 200
    watching = open_socket(server, viewer, thread)
    following = open_socket(server, owner, thread)
    try:
        assert 'id="live-status"' in watching.recv()
        assert 'id="live-status"' in following.recv()
        assert owner.post_json(f"/threads/{thread}/share/revoke").status == 200
        last = ""
        deadline = time.monotonic() + 10
        while "thread--deleted" not in last:
            assert time.monotonic() < deadline, "the viewer was not shut out"
            last = watching.recv()
        assert "revoked" not in last.split("thread-gone", 1)[1]  # no reply text after it
        watching.settimeout(5)
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            while True:  # nothing but the close follows
                assert watching.recv() == ""
        # The owner still follows the reply.
        assert 'id="message-' in following.recv()
    finally:
        watching.close()
        following.close()
    assert viewer.get_json(f"/messages/{sent['assistant_message']['id']}").status == 404


def test_a_stranger_gets_404_or_403_everywhere_in_the_thread(server, upstream):
    owner = RelayClient(server.base_url).open()
    thread = owner.new_thread()
    sent = owner.send(thread, upstream.script(Reply.words("mine alone")))
    reply_id = sent["assistant_message"]["id"]
    stranger = RelayClient(server.base_url).open()
    attempts = [
        stranger.request("GET", f"/threads/{thread}"),
        stranger.get_json(f"/threads/{thread}"),
        stranger.request("GET", f"/threads/{thread}/messages"),
        stranger.get_json(f"/messages/{reply_id}"),
        stranger.request("GET", f"/messages/{reply_id}", headers={"HX-Request": "true"}),
        stranger.request("GET", f"/messages/{reply_id}/stream"),
        stranger.post_json(f"/threads/{thread}/messages", {"content": "intrude"}),
        stranger.post_json(f"/messages/{reply_id}/cancel"),
        stranger.post_json(f"/threads/{thread}/share"),
        stranger.request("GET", "/s/not-a-real-share-token-at-all"),
    ]
    assert [a.status for a in attempts if a.status not in (403, 404)] == []
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_socket(server, stranger, thread)
    assert refused.value.status_code == 404
    done = terminal(owner, reply_id)
    assert (done["status"], done["content"]) == ("complete", "mine alone")
