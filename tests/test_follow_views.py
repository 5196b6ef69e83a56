"""How a page follows a thread: SSE for the owner, the websocket, polling, share links."""

from __future__ import annotations

import re

import pytest

from tests.conftest import JSON, csrf_of, send


def article(html: str, message_id: int) -> str:
    return re.search(rf'<article[^>]*id="message-{message_id}"[^>]*>', html, re.S).group(0)


def test_owner_page_streams_its_active_reply_and_listens_on_the_websocket(client, token,
                                                                          thread_id):
    sent = send(client, token, thread_id)
    page = client.get(f"/threads/{thread_id}").text
    assert f'ws-connect="/threads/{thread_id}/ws"' in page
    reply = article(page, sent["assistant_message"]["id"])
    assert "sse-connect=" in reply and "hx-trigger" not in reply


def test_websocket_mode_renders_active_replies_for_the_socket_to_update(client, token,
                                                                        thread_id):
    sent = send(client, token, thread_id)
    page = client.get(f"/threads/{thread_id}?follow=ws").text
    assert f'ws-connect="/threads/{thread_id}/ws"' in page
    reply = article(page, sent["assistant_message"]["id"])
    assert "sse-connect=" not in reply and "hx-trigger" not in reply


def test_poll_mode_polls_active_replies_and_newer_messages_without_a_socket(client, token,
                                                                            thread_id):
    sent = send(client, token, thread_id)
    page = client.get(f"/threads/{thread_id}?follow=poll").text
    assert "ws-connect" not in page
    reply = article(page, sent["assistant_message"]["id"])
    assert 'hx-trigger="load delay:' in reply and "sse-connect" not in reply
    poller = re.search(r'<div class="poll-newer"[^>]*>', page, re.S).group(0)
    assert f"after={sent['assistant_message']['id']}" in poller


def test_poller_answers_newer_messages_and_a_poller_that_starts_after_them(client, token,
                                                                           thread_id):
    first = send(client, token, thread_id, "one")
    second = send(client, token, thread_id, "two", parallel=True)
    after = first["assistant_message"]["id"]
    html = client.get(f"/threads/{thread_id}/messages?after={after}&follow=poll",
                      headers={"HX-Request": "true"}).text
    ids = [int(i) for i in re.findall(r'<article[^>]*data-message-id="(\d+)"', html)]
    assert ids == [second["user_message"]["id"], second["assistant_message"]["id"]]
    assert f"after={second['assistant_message']['id']}" in html
    nothing_new = client.get(f"/threads/{thread_id}/messages?after={ids[-1]}&follow=poll").text
    assert "<article" not in nothing_new and f"after={ids[-1]}" in nothing_new


@pytest.mark.parametrize("query", ["after=abc", "after=-1", "before=1&after=1"])
def test_bad_after_cursor_is_a_400(client, thread_id, query):
    assert client.get(f"/threads/{thread_id}/messages?{query}").status_code == 400


def test_first_prompt_retitles_the_page_and_the_sidebar_out_of_band(client, token, thread_id):
    html = client.post(f"/threads/{thread_id}/messages", data={"content": "Plan a trip"},
                       headers={"X-CSRF-Token": token, "HX-Request": "true"}).text
    assert '<h1 id="thread-title" hx-swap-oob="true">Plan a trip</h1>' in html
    # The sidebar entry goes to the top of the list (the page drops the old one).
    assert re.search(rf'<div hx-swap-oob="afterbegin:#recent-list">\s*'
                     rf'<div class="thread-item" id="thread-item-{thread_id}"[^>]*>\s*'
                     rf'(?:<input[^>]*>\s*)?<a [^>]*'
                     rf'id="thread-link-{thread_id}"[^>]*>Plan a trip', html)


def test_share_link_gives_a_read_only_page_to_another_browser(app, client, token, thread_id):
    sent = send(client, token, thread_id, "shared question")
    created = client.post(f"/threads/{thread_id}/share", headers={"X-CSRF-Token": token, **JSON})
    assert created.status_code == 201
    path = "/" + created.json["share_url"].split("/", 3)[3]
    again = client.post(f"/threads/{thread_id}/share", headers={"X-CSRF-Token": token, **JSON})
    assert again.json["share_url"] == created.json["share_url"]  # one link per thread

    viewer = app.test_client()
    viewer_token = csrf_of(viewer)
    page = viewer.get(path)
    assert page.status_code == 200
    assert "shared question" in page.text
    assert 'id="composer"' not in page.text and 'data-action="cancel"' not in page.text
    reply_id = sent["assistant_message"]["id"]
    assert viewer.get(f"/messages/{reply_id}", headers=JSON).status_code == 200
    headers = {"X-CSRF-Token": viewer_token, **JSON}
    assert viewer.post(f"/threads/{thread_id}/messages", json={"content": "x"},
                       headers=headers).status_code == 404
    assert viewer.post(f"/messages/{reply_id}/cancel", headers=headers).status_code == 404
    # The owner following their own share link lands on the normal page.
    assert client.get(path).status_code == 302


def test_unknown_share_token_is_404(client):
    assert client.get("/s/" + "x" * 32).status_code == 404
    assert client.get("/s/short").status_code == 404


def test_share_links_are_built_on_public_url_never_on_the_requests_host(app, client, token,
                                                                       thread_id):
    app.config["PUBLIC_URL"] = "https://relay.example.com/"
    created = client.post(f"/threads/{thread_id}/share", headers={"X-CSRF-Token": token, **JSON})
    assert created.json["share_url"].startswith("https://relay.example.com/s/")
    assert "localhost" not in created.json["share_url"]  # the test client's Host


def test_a_websocket_frame_is_written_whole_to_a_client_that_reads_slowly():
    # simple-websocket writes a frame with one socket.send, which may write only part of it
    # when the client's buffer is nearly full: the rest was lost and the stream was garbage.
    import socket

    import gevent
    from gevent import socket as gsocket

    from views.sockets import WholeSends

    frame = bytes(range(256)) * 4096  # 1 MiB: more than both kernel buffers hold
    for wrapped in (False, True):
        server, client = gsocket.socketpair()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        received = bytearray()

        def read_slowly(client=client, received=received):
            gevent.sleep(0.05)  # the writer finds the buffers full first
            while chunk := client.recv(65536):
                received.extend(chunk)

        reader = gevent.spawn(read_slowly)
        sock = WholeSends(server) if wrapped else server
        written = sock.send(frame)
        server.close()
        reader.join(10)
        client.close()
        if wrapped:
            assert written == len(frame) and bytes(received) == frame
        else:  # what the library did before: a part, and the caller never knew
            assert written == len(received) < len(frame)


class RecordingSocket:
    """What the websocket library's server object offers the handler, recording closes."""

    connected = True

    def __init__(self):
        self.sent, self.closed = [], []

    def send(self, data):
        self.sent.append(data)

    def close(self, reason=None, message=None):
        self.closed.append((reason, message))
        self.connected = False


@pytest.mark.parametrize("failure,code", [("database", 1013), ("other", 1011)])
def test_a_failure_after_the_upgrade_closes_the_socket_it_never_answers_http_on_it(
        app, token, thread_id, monkeypatch, caplog, failure, code):
    # Past the upgrade an error page written on the socket reached the page as a broken
    # frame ("rsv is not implemented" in a client): 192 followers in one soak, each time the
    # database was saturated as a follower connected.
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    import views.sockets as sockets
    from models import Thread, db

    def fails(*args, **kwargs):
        raise PoolTimeout("QueuePool limit reached") if failure == "database" else \
            RuntimeError("a bug")

    monkeypatch.setattr(sockets, "_state_frame", fails)
    ws = RecordingSocket()
    with app.test_request_context(f"/threads/{thread_id}/ws"):
        from flask import g

        g.thread = db.session.get(Thread, thread_id)
        sockets.follow_thread(ws, thread_id)  # returns: nothing for the server to answer
    assert ws.sent == [] and [reason for reason, _ in ws.closed] == [code]
    assert ("Traceback" in caplog.text) == (failure == "other")  # a busy database is no bug


def test_a_resync_brings_the_end_and_the_turn_a_follower_missed(app, client, token,
                                                                thread_id):
    """The broker was away: a websocket follower showed the reply streaming, and heard
    neither its end nor the next turn, asked and answered meanwhile. The resync's frame
    has both: the reply complete, the new turn to append."""
    from models import Message, db
    from views.sockets import render_changes

    def store(message_id: int, **values) -> None:
        with app.app_context():
            message = db.session.get(Message, message_id)
            for key, value in values.items():
                setattr(message, key, value)
            db.session.commit()

    first = send(client, token, thread_id, "one")["assistant_message"]["id"]
    store(first, status="complete", content="the whole first answer")
    later = send(client, token, thread_id, "two")
    store(later["assistant_message"]["id"], status="complete", content="the second answer")
    with app.test_request_context():
        frame = render_changes(thread_id, [{"type": "resync", "messages": [first - 1, first]}],
                               readonly=False)
    assert 'data-status="complete"' in article(frame, first)
    assert "the whole first answer" in frame
    for message in (later["user_message"], later["assistant_message"]):
        assert f'id="message-{message["id"]}"' in frame
    assert "the second answer" in frame
    assert 'hx-swap-oob="beforeend:#messages"' in frame  # appended where the page lacks it
