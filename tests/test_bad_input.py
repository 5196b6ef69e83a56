"""Bad input in-process: text that is not UTF-8, JSON nested too deeply, blank content, a
hostile Host header. Each is a 400 with a message (or harmless), and nothing is stored
differently from what was sent."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from models import Message, Thread, db
from tests.conftest import JSON, csrf_of, new_thread, send

FORM = "application/x-www-form-urlencoded"


def multipart(name: str, value: bytes, extra: str = "") -> tuple[bytes, str]:
    body = (b"--b0und\r\nContent-Disposition: form-data; name=\"" + name.encode() + b"\"\r\n"
            + extra.encode() + b"\r\n" + value + b"\r\n--b0und--\r\n")
    return body, "multipart/form-data; boundary=b0und"


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def stored_messages(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Message.content).order_by(Message.id)))


def thread_title(app, thread_id: int) -> str:
    with app.app_context():
        return db.session.get(Thread, thread_id).title


# -- text that is not UTF-8 ----------------------------------------------------------------------
BAD_BODIES = {
    "percent-escaped": (b"content=%ff%fe", FORM, "'content' is not valid UTF-8"),
    "percent-escaped, truncated": (b"content=ok%c3", FORM, "'content' is not valid UTF-8"),
    "raw bytes": (b"content=\xff\xfe", FORM, "The form body is not valid UTF-8"),
    "field name": (b"%ff=1&content=hi", FORM, "field name in the form body is not valid"),
    "multipart": (*multipart("content", b"\xff\xfe"), "'content' is not valid UTF-8"),
    "multipart, declared UTF-8": (*multipart("content", b"caf\xe9",
                                             "Content-Type: text/plain; charset=utf-8\r\n"),
                                  "'content' is not valid UTF-8"),
    "json": (b'{"content": "\xff\xfe"}', "application/json", "JSON body is not valid UTF-8"),
    "json, declared latin-1": (b'{"content": "caf\xe9"}', "application/json; charset=latin-1",
                               "JSON body is not valid UTF-8"),
}


@pytest.mark.parametrize("body,content_type,why", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_prompt_that_is_not_utf8_is_a_400_and_stores_nothing(app, client, token, thread_id,
                                                                body, content_type, why):
    before = stored_messages(app)
    answer = client.post(f"/threads/{thread_id}/messages", data=body,
                         content_type=content_type, headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 400, answer.text
    assert why in answer.json["message"]
    assert stored_messages(app) == before


@pytest.mark.parametrize("body,content_type,why", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_new_thread_with_a_prompt_that_is_not_utf8_is_refused_whole(app, client, token, body,
                                                                       content_type, why):
    answer = client.post("/threads", data=body, content_type=content_type,
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 400, answer.text
    assert why in answer.json["message"]
    assert count(app, Thread) == 0  # not a thread without its prompt either


def test_the_csrf_token_in_a_form_that_is_not_utf8_is_a_400_not_a_403(app, client, token,
                                                                       thread_id):
    answer = client.post(f"/threads/{thread_id}/messages",
                         data=f"csrf_token={token}&content=%ff%fe".encode(), content_type=FORM,
                         headers=JSON)
    assert answer.status_code == 400
    assert answer.json["message"] == "'content' is not valid UTF-8."
    # A browser without JavaScript gets the message on a page.
    page = client.post(f"/threads/{thread_id}/messages",
                       data=f"csrf_token={token}&content=%ff%fe".encode(), content_type=FORM)
    assert page.status_code == 400 and "is not valid UTF-8" in page.text
    assert count(app, Message) == 0


def test_every_endpoint_that_takes_text_refuses_text_that_is_not_utf8(app, client, token):
    thread_id = new_thread(client, token)
    sent = send(client, token, thread_id, "Original")
    app.extensions["relay"].claim_and_start(sent["assistant_message"]["id"]).finalized.wait(10)
    before = stored_messages(app)
    headers = {"X-CSRF-Token": token, **JSON}
    user_id = sent["user_message"]["id"]
    posts = {
        f"/messages/{user_id}/edit": b"content=%ff%fe",
        f"/threads/{thread_id}/rename": b"title=%ff%fe",
        "/threads/broadcast": f"thread_ids={thread_id}&content=%ff%fe".encode(),
        f"/threads/{thread_id}/share": b"note=%ff",  # a field nobody reads is refused too
    }
    for path, body in posts.items():
        answer = client.post(path, data=body, content_type=FORM, headers=headers)
        assert answer.status_code == 400, (path, answer.text)
        assert "is not valid UTF-8" in answer.json["message"], path
    for path in posts:
        data, content_type = multipart("content" if "rename" not in path else "title",
                                       b"\xff\xfe")
        answer = client.post(path, data=data, content_type=content_type, headers=headers)
        assert answer.status_code == 400, (path, answer.text)
    assert stored_messages(app) == before
    assert thread_title(app, thread_id) == "Original"
    with app.app_context():
        assert db.session.get(Thread, thread_id).share_token is None


@pytest.mark.parametrize("url,name", [
    ("/search?q=%ff", "q"), ("/search?q=caf%e9", "q"), ("/messages/1/stream?after=%ff", "after"),
    ("/?before=%c3", "before"), ("/threads/list?%ff=1", None), ("/no-such-page?x=%fe", "x"),
])
def test_a_query_string_that_is_not_utf8_is_a_400(client, url, name):
    answer = client.get(url, headers=JSON)
    assert answer.status_code == 400
    expected = f"'{name}' is not valid UTF-8." if name else \
        "A field name in the query string is not valid UTF-8."
    assert answer.json["message"] == expected
    page = client.get(url)  # and a page that says so, for a browser
    assert page.status_code == 400 and "not valid UTF-8" in page.text


def test_a_search_for_escaped_percent_signs_still_finds_them(app, client, token):
    thread_id = new_thread(client, token)
    send(client, token, thread_id, "100%FF is a colour")
    hits = client.get("/search?q=100%25FF", headers=JSON)
    assert hits.status_code == 200 and hits.json and hits.json[0]["thread_id"] == thread_id


@pytest.mark.parametrize("text", ["%FF%FE", "caf\u00e9 \U0001f30d", "\ufffd", "a+b=c&d"])
def test_valid_text_is_stored_exactly_as_sent_in_every_encoding(app, client, token, thread_id,
                                                                text):
    from urllib.parse import quote

    headers = {"X-CSRF-Token": token, **JSON}
    bodies = [(f"content={quote(text, safe='')}".encode(), FORM),
              multipart("content", text.encode("utf-8")),
              (json.dumps({"content": text}, ensure_ascii=False).encode(), "application/json")]
    for body, content_type in bodies:
        answer = client.post(f"/threads/{thread_id}/messages", data=body,
                             content_type=content_type, headers=headers)
        assert answer.status_code == 201, answer.text
        assert answer.json["user_message"]["content"] == text
        with app.app_context():  # the reply is done: the next prompt may follow
            db.session.execute(db.update(Message).values(status="complete"))
            db.session.commit()
    assert [c for c in stored_messages(app) if c] == [text, text, text]


def test_a_multipart_field_declared_latin1_is_decoded_as_latin1(app, client, token, thread_id):
    data, content_type = multipart("title", "été".encode("latin-1"),
                                   "Content-Type: text/plain; charset=iso-8859-1\r\n")
    answer = client.post(f"/threads/{thread_id}/rename", data=data, content_type=content_type,
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 200 and answer.json["thread"]["title"] == "été"


def test_an_import_that_is_not_utf8_says_so(app, client, token):
    data, content_type = multipart("file", b'{"format": "relay.thread", "x": "\xff"}',
                                   "Content-Type: application/json\r\n")
    data = data.replace(b'name="file"', b'name="file"; filename="t.json"')
    answer = client.post("/threads/import", data=data, content_type=content_type,
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 400 and answer.json["message"] == "The file is not valid UTF-8."
    assert count(app, Thread) == 0


# -- JSON nested too deeply ------------------------------------------------------------------
def deep(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"content": ' + b"[" * depth + inner + b"]" * depth + b"}"


@pytest.mark.parametrize("path", ["/threads/{t}/messages", "/threads", "/threads/{t}/rename",
                                  "/messages/{m}/edit", "/threads/broadcast",
                                  "/messages/{r}/regenerate", "/threads/import"])
@pytest.mark.parametrize("depth", [950, 5000, 100_000])
def test_json_nested_too_deeply_is_a_400_at_every_json_endpoint(app, client, token, path, depth):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash would show as a 500, not a raise
    thread_id = new_thread(client, token)
    sent = send(client, token, thread_id)
    app.extensions["relay"].claim_and_start(sent["assistant_message"]["id"]).finalized.wait(10)
    before = (count(app, Thread), stored_messages(app))
    url = path.format(t=thread_id, m=sent["user_message"]["id"], r=sent["assistant_message"]["id"])
    answer = client.post(url, data=deep(depth), content_type="application/json",
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 400, answer.text
    assert "nested too deeply" in answer.json["message"]
    assert (count(app, Thread), stored_messages(app)) == before


def test_json_nested_a_little_is_still_read(client, token, thread_id):
    answer = client.post(f"/threads/{thread_id}/messages", data=deep(50),
                         content_type="application/json", headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 400
    assert answer.json["message"] == "Write a message first: 'content' is empty."


# -- one definition of "empty" -----------------------------------------------------------------
BLANKS = ["", " ", "\n\t", "\u00a0", "\u2003\u3000", "\u200b", "\u200b\u200c\u200d",
          "\u2060", "\ufeff", " \u200b\u00a0\ufeff\n"]


@pytest.mark.parametrize("blank", BLANKS)
def test_blank_content_is_refused_the_same_way_everywhere(app, client, token, blank):
    thread_id = new_thread(client, token)
    sent = send(client, token, thread_id, "Original")
    app.extensions["relay"].claim_and_start(sent["assistant_message"]["id"]).finalized.wait(10)
    before = stored_messages(app)
    headers = {"X-CSRF-Token": token, **JSON}
    for path in (f"/threads/{thread_id}/messages", f"/messages/{sent['user_message']['id']}/edit",
                 "/threads"):
        for kwargs in ({"json": {"content": blank}}, {"data": {"content": blank}}):
            answer = client.post(path, headers=headers, **kwargs)
            assert answer.status_code == 400, (path, answer.text)
            assert answer.json["message"] == "Write a message first: 'content' is empty."
    for kwargs in ({"json": {"title": blank}}, {"data": {"title": blank}}):
        answer = client.post(f"/threads/{thread_id}/rename", headers=headers, **kwargs)
        assert answer.status_code == 400
        assert answer.json["message"] == "A thread's title cannot be empty."
    assert stored_messages(app) == before
    assert thread_title(app, thread_id) == "Original"
    assert count(app, Thread) == 1


def test_invisible_characters_inside_real_text_are_kept(app, client, token, thread_id):
    text = "\u200bword\u00a0joined\u200dhere\ufeff"
    assert send(client, token, thread_id, text)["user_message"]["content"] == text
    renamed = client.post(f"/threads/{thread_id}/rename", json={"title": "a\u200bb"},
                          headers={"X-CSRF-Token": token, **JSON})
    assert renamed.json["thread"]["title"] == "a\u200bb"


# -- share links and the Host header -------------------------------------------------------------
def share_from(client, token: str, thread_id: int, **headers: str):
    if "Host" in headers:  # the browser's cookie goes to that host too
        cookie = client.get_cookie("relay_session")
        client.set_cookie("relay_session", cookie.value, domain=headers["Host"])
    return client.post(f"/threads/{thread_id}/share",
                       headers={"X-CSRF-Token": token, **JSON, **headers})


def test_a_share_link_never_carries_the_requests_host(app, client, token, thread_id):
    answer = share_from(client, token, thread_id, Host="evil.example",
                        **{"X-Forwarded-Host": "evil.example"})
    assert answer.status_code == 201
    link = answer.json["share_url"]
    assert "evil.example" not in link
    assert link.startswith("http://localhost/s/")  # the address it listens on
    page = client.get(f"/threads/{thread_id}", headers={"Host": "evil.example"})
    assert "evil.example" not in page.text
    fragment = client.post(f"/threads/{thread_id}/share",
                           headers={"X-CSRF-Token": token, "HX-Request": "true",
                                    "Host": "evil.example"})
    assert "evil.example" not in fragment.text and link in fragment.text


def test_a_share_link_is_built_from_public_url(app, client, token, thread_id):
    app.config["PUBLIC_URL"] = "https://relay.example.com/"
    link = share_from(client, token, thread_id, Host="evil.example").json["share_url"]
    assert link.startswith("https://relay.example.com/s/")
    page = client.get(f"/threads/{thread_id}", headers={"Host": "evil.example"})
    assert f'value="{link}"' in page.text


def test_behind_a_trusted_proxy_the_share_link_has_the_proxys_host(tmp_path):
    from app import create_app
    from config import TestConfig

    app = create_app(TestConfig, {"DATABASE_URL": f"sqlite:///{tmp_path / 'relay.sqlite3'}",
                                  "TRUSTED_PROXIES": 1})
    try:
        with app.app_context():
            db.create_all()
        client = app.test_client()
        token = csrf_of(client)
        thread_id = new_thread(client, token)
        link = share_from(client, token, thread_id, **{
            "X-Forwarded-Host": "relay.example.org", "X-Forwarded-Proto": "https"}
        ).json["share_url"]
        assert link.startswith("https://relay.example.org/s/")
    finally:
        app.extensions["relay"].shutdown(timeout=2)


@pytest.mark.parametrize("url", ["relay.example.com", "ftp://relay.example.com",
                                 "https://", "https://relay.example.com/?x=1"])
def test_a_public_url_links_cannot_be_built_on_stops_the_start(tmp_path, url):
    from app import create_app
    from config import TestConfig

    with pytest.raises(ValueError, match="PUBLIC_URL"):
        create_app(TestConfig, {"DATABASE_URL": f"sqlite:///{tmp_path / 'r.sqlite3'}",
                                "PUBLIC_URL": url})


# -- websocket upgrades (the handshake itself is tested under gunicorn) -----------------------
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "MDEyMzQ1Njc4OWFiY2RlZg=="}


@pytest.mark.parametrize(("changes", "status"), [
    ({"Sec-WebSocket-Version": None}, 426), ({"Sec-WebSocket-Version": "99"}, 426),
    ({"Sec-WebSocket-Key": None}, 400), ({"Sec-WebSocket-Key": "x" * 5000}, 400),
    ({"Sec-WebSocket-Key": "MDEyMzQ1Njc4OWFiY2Rl"}, 400),  # 15 bytes
    ({"Upgrade": None, "Connection": None}, 426),
])
def test_a_malformed_websocket_upgrade_is_a_4xx_before_any_socket(app, client, thread_id,
                                                                    changes, status):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    headers = {k: v for k, v in {**UPGRADE, **changes}.items() if v is not None}
    answer = client.get(f"/threads/{thread_id}/ws", headers={**headers, **JSON})
    assert answer.status_code == status, answer.text
    assert answer.json["message"]
    if status == 426:
        assert answer.headers["Sec-WebSocket-Version"] == "13"
        assert answer.headers["Upgrade"] == "websocket"


def test_a_client_gone_during_the_websocket_handshake_is_no_error(app, client, thread_id,
                                                                  monkeypatch, caplog):
    import flask_sock

    def gone(environ, **options):
        raise BrokenPipeError(32, "Broken pipe")  # the 101 written to a closed socket

    app.config["PROPAGATE_EXCEPTIONS"] = False
    monkeypatch.setattr(flask_sock, "Server", gone)
    answer = client.get(f"/threads/{thread_id}/ws", headers=UPGRADE)
    assert answer.status_code == 400
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_websocket_upgrade_to_a_page_is_a_4xx(client, thread_id):
    answer = client.get("/", headers={**UPGRADE, **JSON})
    assert answer.status_code == 400
    assert answer.json["message"] == "This address is not a websocket."
    assert client.get(f"/threads/{thread_id}", headers={**UPGRADE, **JSON}).status_code == 405


def test_a_strangers_upgrade_is_a_404_and_a_bad_key_a_400_whoever_asks(client, thread_id,
                                                                        stranger):
    answer = stranger.get(f"/threads/{thread_id}/ws", headers={**UPGRADE, **JSON})
    assert answer.status_code == 404 and answer.json["message"] == "No such thread."
    bad_key = {**UPGRADE, "Sec-WebSocket-Key": "short", **JSON}
    assert stranger.get(f"/threads/{thread_id}/ws", headers=bad_key).status_code == 400
    assert stranger.get("/threads/999/ws", headers=bad_key).status_code == 400
