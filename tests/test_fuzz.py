"""Fuzzing every HTTP endpoint in-process: whatever a client sends, Relay never answers 5xx
nor logs a traceback, and afterwards every reply it accepted can be driven to a terminal
status.

The routes come from the app's own url_map (static files and the websocket excepted), so a
new endpoint is fuzzed without touching this file.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import gevent
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from models import (
    ABORTED,
    ACTIVE_STATUSES,
    COMPLETE,
    ERROR,
    INTERRUPTED,
    PENDING,
    STREAMING,
    Message,
    Thread,
    db,
)
from tests.conftest import csrf_of, made_app

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
REQUEST_TIMEOUT_S = 30.0  # generous: a demo reply streams in well under a second
FINISH_TIMEOUT_S = 30.0
PLACEHOLDER = re.compile(r"<(?:(?P<converter>[a-z]+):)?(?P<name>\w+)>")

# Text as hostile clients send it: control characters, NUL, RTL marks, emoji, markup.
# (Lone surrogates cannot be sent in a form or URL; JSON bodies below add them.)
hostile_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(
        ["\x00", "\r", "\n", "\x1b", "\u202e", "\ufeff", "🌍", "<", "&", "'", '"', "%"]),
    max_size=40)
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["0", "-1", "00", "01", "1e3", "1.5", " 1", "1 ", "+1", "0x1",
                     "9" * 18, "9" * 19, "9" * 40, "", "²", "١"]),
)


# The fuzz runs with Relay as it ships (anonymous owners) and with accounts switched on.
ACCOUNT_PASSWORD = "fuzzing password"
ACCOUNT_FIELDS = ["username", "password", "invite", "current_password", "new_password",
                  "keep", "next"]


@pytest.fixture(params=["anonymous", "accounts"])
def fuzz_app(request, tmp_path):
    with made_app(tmp_path, AUTH_MODE=request.param, SIGNUP="open") as app:
        yield app


# Fields of the organising endpoints (folders, pin, archive, bulk, temporary) and values
# that get past their first checks.
FIELDS = ("folder", "pinned", "archived", "temporary", "ids", "action", "name")
FIELD_VALUES = st.sampled_from(["true", "false", "", "Work", "archive", "unarchive", "delete",
                                "pin", "1", "2"]) | st.booleans() | st.integers(-2, 60)


@dataclass
class World:
    """What the fuzzer knows: real ids and tokens to mix with junk."""

    thread_ids: list[int]
    message_ids: list[int]
    share_tokens: list[str]
    csrf: dict[str, str]
    folder_ids: list[int] = field(default_factory=list)
    clients: dict = field(default_factory=dict)


def fuzzable_routes(app) -> list[tuple[str, list[str]]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or getattr(rule, "websocket", False):
            continue
        routes.append((rule.rule, sorted(rule.methods - {"HEAD", "OPTIONS"})))
    return routes


def id_values(known_ids: list[int]) -> st.SearchStrategy[str]:
    """Mostly real ids (so requests get past routing and ownership), sometimes junk."""
    known = st.sampled_from(known_ids).map(str)
    return st.one_of(
        known, known, known,
        st.integers(min_value=1, max_value=60).map(str),  # ids created while fuzzing
        numbers.map(lambda s: quote(s, safe="")),
        hostile_text.map(lambda s: quote(s, safe="")),
    )


def path_for(draw, template: str, world: World) -> str:
    def value(match: re.Match) -> str:
        if match.group("name") == "token":
            return draw(st.one_of(st.sampled_from(world.share_tokens),
                                  hostile_text.map(lambda s: quote(s, safe=""))))
        known = {"thread_id": world.thread_ids, "folder_id": world.folder_ids}.get(
            match.group("name"), world.message_ids)
        return draw(id_values(known))

    return PLACEHOLDER.sub(value, template)


@st.composite
def http_requests(draw, routes: list[tuple[str, list[str]]], world: World) -> dict:
    if draw(st.integers(0, 19)) == 0:  # now and then a path that matches no route
        # Non-empty segments: a leading "//" would make the test client read a host name.
        segment = hostile_text.filter(bool).map(lambda s: quote(s, safe=""))
        path = "/" + "/".join(draw(st.lists(segment, max_size=4)))
        method = draw(st.sampled_from(METHODS))
    else:
        template, methods = draw(st.sampled_from(routes))
        path = path_for(draw, template, world)
        method = draw(st.sampled_from(methods) if draw(st.integers(0, 4)) else
                      st.sampled_from(METHODS))

    query: list[tuple[str, str]] = []
    for name in ("after", "before", "follow"):
        if draw(st.booleans()):
            query.append((name, draw(st.one_of(numbers, hostile_text,
                                               st.sampled_from(["auto", "ws", "poll"])))))
    query_string = urlencode(query)
    if draw(st.integers(0, 9)) == 0:
        query_string += draw(st.sampled_from(["&after=%ff%fe", "&before=%c3", "&follow=%00",
                                              "&&=", "after", "%zz=1"]))

    who = draw(st.sampled_from(["owner", "owner", "stranger", "anonymous", "forged"]))
    cookie = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                          max_size=80)) if who == "forged" else None
    headers: dict[str, str] = {}
    accept = draw(st.sampled_from([None, "application/json", "text/html", "*/*",
                                   "text/event-stream", "application/json;q=0.1, text/html",
                                   "garbage/;;q=x"]))
    if accept:
        headers["Accept"] = accept
    if draw(st.booleans()):
        headers["HX-Request"] = draw(st.sampled_from(["true", "false", "1"]))
    if draw(st.booleans()):
        headers["Last-Event-ID"] = draw(st.one_of(
            numbers, st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF),
                             max_size=20)))
    csrf = draw(st.sampled_from(["valid-header", "valid-form", "none", "junk"]))
    if csrf == "valid-header" and who in world.csrf:
        headers["X-CSRF-Token"] = world.csrf[who]
    elif csrf == "junk":
        headers["X-CSRF-Token"] = draw(st.text(st.characters(min_codepoint=0x21,
                                                             max_codepoint=0x7E), max_size=50))

    body_kind = draw(st.sampled_from(["none", "form", "json", "json-content", "json-fields",
                                      "bytes"]))
    data: bytes | dict | None = None
    content_type = None
    if body_kind == "form":
        data = draw(st.dictionaries(st.sampled_from(["content", "csrf_token", *ACCOUNT_FIELDS,
                                                     *FIELDS]) | hostile_text,
                                    hostile_text | FIELD_VALUES | st.sampled_from(
                                        ["owner", "stranger", ACCOUNT_PASSWORD]), max_size=3))
        if csrf == "valid-form" and who in world.csrf:
            data["csrf_token"] = world.csrf[who]
    elif body_kind in ("json", "json-content"):
        scalars = (st.none() | st.booleans() | st.integers() | st.floats() | hostile_text
                   | st.sampled_from(["\ud800", "a\udfffb", "\udc80\ud83d"]))
        value = draw(st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                                  | st.dictionaries(hostile_text, inner, max_size=3),
                                  max_leaves=6))
        if body_kind == "json-content":
            value = {draw(st.sampled_from(["content", *ACCOUNT_FIELDS])): value,
                     **({"password": ACCOUNT_PASSWORD} if draw(st.booleans()) else {})}
        elif body_kind == "json-fields":  # the organising endpoints' fields, good and bad
            value = draw(st.dictionaries(st.sampled_from(FIELDS), value | FIELD_VALUES
                                         | st.lists(FIELD_VALUES, max_size=3), max_size=4))
        data = json.dumps(value).encode()
        content_type = "application/json"
    elif body_kind == "bytes":
        data = draw(st.one_of(
            st.binary(max_size=60),
            st.sampled_from([b"content=\xff\xfe\xc3", b'{"content": "\xff"}', b"\x00" * 8,
                             b"--x\r\nContent-Disposition: form-data\r\n\r\n\xff\r\n--x--"]),
        ))
        content_type = draw(st.sampled_from([
            "application/x-www-form-urlencoded", "application/json",
            "multipart/form-data", "multipart/form-data; boundary=x", "text/plain",
            "application/json; charset=latin-1"]))
    return {"who": who, "cookie": cookie, "method": method, "path": path,
            "query_string": query_string, "headers": headers, "data": data,
            "content_type": content_type}


def seed_world(app) -> World:
    owner, stranger = app.test_client(), app.test_client()
    if app.config["AUTH_MODE"] == "accounts":  # each a signed-in user of their own
        for name, client in (("owner", owner), ("stranger", stranger)):
            page = client.get("/signup")
            token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
            assert client.post("/signup", data={"username": name, "password": ACCOUNT_PASSWORD,
                                                "csrf_token": token}).status_code == 303
    csrf = {"owner": csrf_of(owner), "stranger": csrf_of(stranger)}
    headers = {"X-CSRF-Token": csrf["owner"], "Accept": "application/json"}
    thread_id = owner.post("/threads", headers=headers).json["thread"]["id"]
    sent = owner.post(f"/threads/{thread_id}/messages", json={"content": "Hello, fuzz"},
                      headers=headers).json
    share_url = owner.post(f"/threads/{thread_id}/share", headers=headers).json["share_url"]
    folder = owner.post("/folders", json={"name": "Work"}, headers=headers).json["folder"]
    other_thread = stranger.post(
        "/threads", headers={"X-CSRF-Token": csrf["stranger"],
                             "Accept": "application/json"}).json["thread"]["id"]
    with app.app_context():
        replies = [Message(thread_id=thread_id, role="assistant", status=status,
                           content=content, error="The model failed." if status == ERROR
                           else None, model="demo")
                   for status, content in [(COMPLETE, "Done."), (ERROR, "Half an "),
                                           (ABORTED, ""), (INTERRUPTED, "Cut <off> & ")]]
        db.session.add_all(replies)
        db.session.commit()
        ids = [sent["user_message"]["id"], sent["assistant_message"]["id"]] + \
            [r.id for r in replies]
    return World(thread_ids=[thread_id, other_thread], message_ids=ids,
                 share_tokens=[share_url.rsplit("/", 1)[1]], csrf=csrf,
                 folder_ids=[folder["id"]],
                 clients={"owner": owner, "stranger": stranger})


def perform(app, world: World, request: dict):
    client = world.clients.get(request["who"])
    if client is None:  # a browser without a session, or with a forged session cookie
        client = app.test_client()
        if request["cookie"] is not None:
            client.set_cookie(app.config["SESSION_COOKIE_NAME"], request["cookie"])
    kwargs = {"method": request["method"], "query_string": request["query_string"],
              "headers": request["headers"], "buffered": True}
    if request["data"] is not None:
        kwargs["data"] = request["data"]
    if request["content_type"]:
        kwargs["content_type"] = request["content_type"]
    with gevent.Timeout(REQUEST_TIMEOUT_S, AssertionError(f"request hung: {request!r}")):
        response = client.open(request["path"], **kwargs)
        response.get_data()
    if request["who"] in world.clients:
        keep_signed_in(app, world, request["who"])
    return response


ACCOUNT_PATHS = ("/signin", "/signup", "/signout", "/account/password")


def keep_signed_in(app, world: World, who: str) -> None:
    """After a sign-in, sign-up, sign-out or password change (the fuzzer sends real names
    and the real password too), the browser is its own user again with its own token, so
    the fuzz goes on reaching the owner's endpoints."""
    if app.config["AUTH_MODE"] != "accounts":
        return
    client = world.clients[who]
    from models.accounts import find_user, open_session, session_user

    with client.session_transaction() as session, app.app_context():
        user = session_user(db.session, session.get("sid") or "")
        if user is not None and user.username == who and session.get("csrf") == world.csrf[who]:
            return
        session.clear()
        session["sid"] = open_session(db.session, find_user(db.session, who))
        session["csrf"] = world.csrf[who]


def finish_every_active_reply(app) -> None:
    """Drive each pending or streaming reply to its end through the engine."""
    relay = app.extensions["relay"]
    with app.app_context():
        active = list(db.session.scalars(
            select(Message.id).where(Message.status.in_(ACTIVE_STATUSES))))
        db.session.remove()
    for message_id in active:
        generation = relay.local(message_id) or relay.claim_and_start(message_id)
        if generation is None:  # claimed meanwhile: it must be running here
            generation = relay.local(message_id)
        if generation is not None:
            assert generation.finalized.wait(FINISH_TIMEOUT_S), \
                f"reply {message_id} did not finish"


def test_no_request_from_anyone_is_ever_a_server_error(fuzz_app):
    app = fuzz_app
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash shows as a 500 (logged), not a raise
    routes = fuzzable_routes(app)
    assert {"/messages/<id:message_id>/continue", "/threads/<id:thread_id>/messages",
            "/messages/<id:message_id>/stream", "/signin", "/signup", "/signout",
            "/account/password", "/account/claim"} <= {template for template, _ in routes}
    world = seed_world(app)
    statuses: list[int] = []
    deleted: set[int] = set()  # threads the owner deleted, as it may

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(request=http_requests(routes, world))
    def no_server_error(request: dict) -> None:
        response = perform(app, world, request)
        statuses.append(response.status_code)
        # A browser without JavaScript is answered with a redirect (303): deleted too.
        if response.status_code < 400 and (
                request["method"] == "DELETE" or request["path"].endswith("/delete")):
            deleted.add(int(request["path"].split("/")[2]))
        if response.status_code < 400 and request["path"] == "/threads/bulk":
            deleted.update(bulk_ids(request["data"]))
        assert response.status_code < 500, \
            f"{response.status_code} for {request!r}: {response.get_data()[:500]!r}"

    relay = app.extensions["relay"]
    try:
        with LoggedErrors() as logged:
            no_server_error()
            # Every reply that was accepted can still be finished; none is left hanging.
            finish_every_active_reply(app)
        assert logged.summary() == []  # no traceback, no error logged on the way
        with app.app_context():
            left = db.session.execute(
                select(Message.id, Message.status)
                .where(Message.status.in_((PENDING, STREAMING)))).all()
            threads = set(db.session.scalars(select(Thread.id)))
        assert left == [], f"replies left active: {left}"
        # A seeded thread is gone only when its owner's delete request succeeded.
        assert set(world.thread_ids) - threads <= deleted
        assert any(200 <= s < 300 for s in statuses)  # the fuzzer did get through sometimes
    finally:
        gevent.killall(list(relay._headless), block=True, timeout=2)
        for generation in list(relay.generations.values()):
            if generation.greenlet is not None:
                generation.greenlet.join(timeout=2)
        relay.writer.stop()


def bulk_ids(data) -> set[int]:
    """The thread ids a bulk request named (it may have deleted them)."""
    if isinstance(data, dict):
        values = [data.get("ids")]
    else:
        try:
            body = json.loads(data or b"null")
        except ValueError:
            return set()
        values = body.get("ids") if isinstance(body, dict) else None
        values = values if isinstance(values, list) else [values]
    return {int(v) for v in values if isinstance(v, int | str) and str(v).isdigit()}


class LoggedErrors(logging.Handler):
    """Every record logged at ERROR or with a traceback, wherever it comes from."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    def __enter__(self) -> LoggedErrors:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)

    def summary(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}"
                + (f" ({r.exc_info[0].__name__})" if r.exc_info and r.exc_info[0] else "")
                for r in self.records]


# Bodies a careless or hostile client sends, each with the content type it claims.
MALFORMED_BODIES: list[tuple[str | None, bytes]] = [
    (None, b""),
    (None, b"\xff\xfe\x00"),
    ("application/x-www-form-urlencoded", b"content=%ff%fe&title=%c3&thread_ids=%ff"),
    ("application/x-www-form-urlencoded", b"content=\xff\xfe&title=\xc3"),
    ("application/x-www-form-urlencoded", b"%zz=%%&&==&content&title=%&model=%2"),
    ("application/x-www-form-urlencoded", b"content=%E2%80%8B&title=%C2%A0&folder=%00"),
    ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="content"'
     b'\r\n\r\n\xff\xfe\r\n--b--\r\n'),
    ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="file"; '
     b'filename="x.json"\r\n\r\n{"format": "relay.thread", "version": 1}\r\n--b--\r\n'),
    ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data\r\n\r\n"),
    ("multipart/form-data", b"no boundary at all"),
    ("application/json", b'{"content": "\xff"}'),
    ("application/json", b"[" * 5000),
    ("application/json", b'{"content": ' + b"[" * 950 + b"]" * 950 + b"}"),
    ("application/json", b'{"title": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2000 + b"}"),
    ("application/json", b'{"content": "\\ud800", "title": "\\udfff", "model": [], '
     b'"models": {"a": 1}, "thread_ids": "x", "attachments": [null], "parallel": "yes"}'),
    ("application/json", b'{"content": 1e999, "title": -0, "thread_ids": [1e999, "1", -1]}'),
    ("application/json", b"not json"),
    ("application/json", b"null"),
    ("application/json", b'"a string"'),
    ("application/json; charset=utf-16", '{"content": "hi"}'.encode("utf-16")),
    ("text/plain", b"content=hello"),
    ("application/x-www-form-urlencoded", b"username=%ff&password=%00&invite=%c3&keep=%ff"),
    ("application/x-www-form-urlencoded", b"username=owner&password=&new_password=%E2%80%8B"),
    ("application/json", b'{"username": ["owner"], "password": {"a": 1}, "keep": [], '
     b'"current_password": null, "new_password": 1e999, "invite": true}'),
    ("application/json", b'{"username": "\\ud800", "password": "\\udfff\\ud800abcdefgh"}'),
    ("application/json", b'{"username": "owner", "password": "' + b"p" * 5000 + b'"}'),
    ("application/octet-stream", bytes(range(256))),
]
# Path ids, query strings and headers that are wrong in every way a client can be wrong.
MALFORMED_IDS = ["0", "-1", "01", "9" * 19, "1e3", "%ff", "%00", "abc", "%E2%80%8B"]
MALFORMED_QUERIES = [
    "after=-1", "after=%ff", "after=1e3", "after=" + "9" * 40, "after=&after=2",
    "before=abc", "before=0", "before=%c3", "before=1-1", "before=99999999999999999-1",
    "format=xml", "format=%ff", "q=" + "x" * 5000, "q=%00%01", "follow=%00", "follow=ws%ff",
    "model=%ff", "model=" + "m" * 500, "current=abc", "%ff=%fe", "&&&===",
]
MALFORMED_HEADERS: list[dict[str, str]] = [
    {"Last-Event-ID": "-5"}, {"Last-Event-ID": "9" * 40}, {"Last-Event-ID": "\xff\xfe"},
    {"Accept": "garbage/;;q=x"}, {"Accept": "application/json;q=nan"},
    {"HX-Request": "true", "HX-Current-URL": "http://%ff/?follow=%ff"},
    {"HX-Request": "true", "HX-Target": "\x00"},
    {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "99"},
    {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
     "Sec-WebSocket-Key": "k" * 5000},
    {"Range": "bytes=99999-0"}, {"If-None-Match": "\xff"}, {"Content-Length": "abc"},
    {"Cookie": "relay_session=\xff\xfe; x=%ff"},
]


def every_rule(app) -> list[tuple[str, list[str]]]:
    """Every route (websockets included) with every method it answers and some it does not."""
    return [(rule.rule, sorted(set(METHODS) | set(rule.methods)))
            for rule in app.url_map.iter_rules() if rule.endpoint != "static"]


def fill(template: str, world: World, value: str | None = None) -> str:
    def one(match: re.Match) -> str:
        if value is not None:
            return value
        if match.group("name") == "token":
            return world.share_tokens[0]
        known = world.thread_ids if match.group("name") == "thread_id" else world.message_ids
        return str(known[0] if match.group("name") == "thread_id" else known[-1])

    return PLACEHOLDER.sub(one, template)


def destructive(path: str, method: str) -> bool:
    """What may delete the seeded thread or its link, or sign the owner out."""
    return method == "DELETE" or path.endswith(("/delete", "/revoke", "/signout",
                                                "/account/password", "/signin", "/signup"))


def test_every_route_method_and_content_type_with_malformed_input_is_a_4xx(fuzz_app):
    """A systematic walk (the fuzzer above samples; this covers every combination): each
    route x method x malformed body, each route with malformed ids, cursors and headers. No
    answer is a 5xx and nothing is logged as an error or with a traceback."""
    app = fuzz_app
    app.config["PROPAGATE_EXCEPTIONS"] = False
    world = seed_world(app)
    owner = world.clients["owner"]
    csrf = {"X-CSRF-Token": world.csrf["owner"]}
    requests: list[dict] = []
    for template, methods in every_rule(app):
        path = fill(template, world)
        for method in methods:
            for content_type, body in MALFORMED_BODIES:
                requests.append({"method": method, "path": path, "data": body,
                                 "content_type": content_type, "headers": csrf})
        for value in MALFORMED_IDS if PLACEHOLDER.search(template) else []:
            for method in methods:
                requests.append({"method": method, "path": fill(template, world, value),
                                 "headers": csrf})
        for method in [m for m in methods if m in ("GET", "POST")]:
            for query in MALFORMED_QUERIES:
                requests.append({"method": method, "path": path, "query_string": query,
                                 "headers": csrf})
            for headers in MALFORMED_HEADERS:
                requests.append({"method": method, "path": path,
                                 "headers": {**csrf, **headers}})
    # What may delete the seeded thread or its link goes last, so the rest reaches them.
    requests.sort(key=lambda r: destructive(r["path"], r["method"]))
    failures: list[str] = []
    relay = app.extensions["relay"]
    try:
        with LoggedErrors() as logged:
            for request in requests:
                headers = dict(request["headers"])
                cookie = headers.pop("Cookie", None)
                client = owner
                if cookie is not None:
                    client = app.test_client()
                    client.set_cookie("relay_session", cookie.split("=", 1)[1])
                with gevent.Timeout(REQUEST_TIMEOUT_S, AssertionError(f"hung: {request!r}")):
                    response = client.open(request["path"], method=request["method"],
                                           query_string=request.get("query_string"),
                                           data=request.get("data"),
                                           content_type=request.get("content_type"),
                                           headers=headers, buffered=True)
                if response.status_code >= 500:
                    failures.append(f"{response.status_code} for {request['method']} "
                                    f"{request['path']}?{request.get('query_string') or ''} "
                                    f"{request.get('content_type')} {request.get('data')!r:.80}"
                                    f" {headers}")
            finish_every_active_reply(app)
        assert failures == [], "\n".join(failures[:20])
        assert logged.summary() == []
        assert len(requests) > 3000  # the walk did walk
    finally:
        gevent.killall(list(relay._headless), block=True, timeout=2)
        relay.writer.stop()


# -- findings pinned ---------------------------------------------------------------------------
@pytest.mark.parametrize("where,sent", [
    ("form", "\x80"), ("form", "é"), ("form", "токен"), ("form", "🌍"),
    ("header", "\x80"), ("header", "é"),  # a header is latin-1 on the WSGI side
], ids=["form-c1", "form-latin1", "form-cyrillic", "form-emoji", "header-c1", "header-latin1"])
def test_a_non_ascii_csrf_token_is_403_not_500(app, where, sent):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    csrf_of(client)  # the session has a token to compare against
    if where == "header":
        response = client.post("/threads", headers={"X-CSRF-Token": sent,
                                                     "Accept": "application/json"})
    else:
        response = client.post("/threads", data={"csrf_token": sent},
                               headers={"Accept": "application/json"})
    assert response.status_code == 403, response.get_data()[:200]
    assert "CSRF" in response.json["message"]
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(Thread)) == 0
