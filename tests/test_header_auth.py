"""AUTH_MODE=header: the user a trusted reverse proxy names, believed only when the request's
direct peer is one of AUTH_PROXY_ADDRESSES; from anywhere else the header is a 403."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bench.relay_client import RelayClient, read_reply
from bench.sse_client import SSEConnection
from models import Thread, db
from models.accounts import User
from tests.conftest import JSON, made_app

PROXY = "10.0.0.5"
NAME_HEADER = "X-Forwarded-User"


@pytest.fixture
def app(tmp_path):
    with made_app(tmp_path, AUTH_MODE="header", AUTH_PROXY_ADDRESSES=f"{PROXY}, fd00::/8") \
            as app:
        yield app


def via(client, address: str, user: str | None, method: str = "GET", path: str = "/",
        **kwargs):
    headers = {**JSON, **kwargs.pop("headers", {})}
    if user is not None:
        headers[NAME_HEADER] = user
    return client.open(path, method=method, headers=headers,
                       environ_base={"REMOTE_ADDR": address}, **kwargs)


def csrf(client, user: str, address: str = PROXY) -> str:
    page = client.get("/", headers={NAME_HEADER: user}, environ_base={"REMOTE_ADDR": address})
    assert page.status_code == 200, page.text
    return page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def test_the_proxys_user_owns_threads_and_sees_their_name(app, client):
    token = csrf(client, "ann@example.com")
    made = via(client, PROXY, "ann@example.com", "POST", "/threads",
               headers={"X-CSRF-Token": token})
    assert made.status_code == 201
    page = client.get("/", headers={NAME_HEADER: "ann@example.com"},
                      environ_base={"REMOTE_ADDR": PROXY})
    assert "Signed in as <strong data-user>ann@example.com</strong>" in page.text
    assert 'data-action="signout"' not in page.text  # the proxy signs people out
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == "ann@example.com"))
        assert user.password_hash is None
        assert db.session.get(Thread, made.json["thread"]["id"]).owner == user.owner
    # Another browser of the same user (through the proxy, over IPv6 too) sees the thread.
    other = app.test_client()
    listed = via(other, "fd00::7", "ann@example.com").json["threads"]
    assert [t["id"] for t in listed] == [made.json["thread"]["id"]]
    assert via(app.test_client(), PROXY, "bob").json["threads"] == []


def test_the_header_from_another_address_is_a_403_and_nothing_else_is_asked(app, client):
    for address in ("10.0.0.6", "127.0.0.1", "::1", "fe80::1"):
        refused = via(client, address, "ann")
        assert refused.status_code == 403, address
        assert refused.json["message"] == \
            f"The {NAME_HEADER} header is accepted only from Relay's proxy."
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(User)) == 0


def test_without_the_header_a_request_is_401_but_a_share_link_still_works(app, client):
    token = csrf(client, "ann")
    thread_id = via(client, PROXY, "ann", "POST", "/threads",
                    headers={"X-CSRF-Token": token}).json["thread"]["id"]
    link = via(client, PROXY, "ann", "POST", f"/threads/{thread_id}/share",
               headers={"X-CSRF-Token": token}).json["share_url"]
    stranger = app.test_client()
    for address in (PROXY, "192.0.2.1"):
        refused = via(stranger, address, None)
        assert refused.status_code == 401 and "proxy" in refused.json["message"]
    assert stranger.get("/").status_code == 401  # no sign-in page here: the proxy has it
    assert stranger.get(link, environ_base={"REMOTE_ADDR": "192.0.2.1"}).status_code == 200


def test_a_disabled_or_unusable_proxy_user_is_refused(app, client):
    assert via(client, PROXY, "ann").status_code == 200
    runner = app.test_cli_runner()
    assert runner.invoke(args=["relay", "users", "disable", "ann"]).exit_code == 0
    refused = via(client, PROXY, "ann")
    assert refused.status_code == 403 and "disabled" in refused.json["message"]
    for bad in ("x" * 65, "ann\x1bbob"):
        assert via(client, PROXY, bad).status_code == 400


def test_a_browser_that_was_anonymous_is_offered_its_threads(app, client):
    app.config["AUTH_MODE"] = "anonymous"
    page = client.get("/")
    token = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    thread_id = client.post("/threads", headers={"X-CSRF-Token": token, **JSON}) \
        .json["thread"]["id"]
    app.config["AUTH_MODE"] = "header"
    home = client.get("/", headers={NAME_HEADER: "ann"}, environ_base={"REMOTE_ADDR": PROXY})
    assert "Keep the 1 thread from this browser" in home.text
    kept = via(client, PROXY, "ann", "POST", "/account/claim",
               headers={"X-CSRF-Token": token})
    assert kept.status_code == 200 and kept.json == {"claimed": 1}
    assert [t["id"] for t in via(client, PROXY, "ann").json["threads"]] == [thread_id]


# -- through a real server: gunicorn sees the peer 127.0.0.1 ------------------------------------
class ProxiedClient(RelayClient):
    """A browser behind the proxy: every request carries the proxy's user header."""

    def __init__(self, base_url: str, user: str | None) -> None:
        super().__init__(base_url)
        self.user = user

    def request(self, method: str, path: str, *, data: bytes | None = None,
                headers: dict[str, str] | None = None):
        extra = {NAME_HEADER: self.user} if self.user is not None else {}
        return super().request(method, path, data=data, headers={**(headers or {}), **extra})

    def stream(self, path: str, **_kwargs) -> SSEConnection:
        return SSEConnection(self.base_url + path, cookies=self.cookie_header(),
                             headers={NAME_HEADER: self.user}, timeout=self.timeout)


@pytest.mark.server
def test_through_gunicorn_the_header_is_believed_from_the_allowed_address(server_factory,
                                                                           upstream):
    relay = server_factory(AUTH_MODE="header", AUTH_PROXY_ADDRESSES="127.0.0.1")
    ann = ProxiedClient(relay.base_url, "ann").open()
    thread = ann.new_thread()
    sent = ann.send(thread, "hello through the proxy")
    text, end, _ = read_reply(ann.stream(sent["stream_url"]))
    assert end == "done" and text
    # The same user in a second browser sees the thread; another user does not.
    phone = ProxiedClient(relay.base_url, "ann").open()
    assert [t["id"] for t in phone.get_json("/").json()["threads"]] == [thread]
    bob = ProxiedClient(relay.base_url, "bob").open()
    assert bob.get_json(f"/threads/{thread}").status == 404
    assert ProxiedClient(relay.base_url, None).get_json("/").status == 401


@pytest.mark.server
def test_through_gunicorn_the_header_from_an_address_not_listed_is_refused(server_factory):
    relay = server_factory(AUTH_MODE="header", AUTH_PROXY_ADDRESSES="10.0.0.0/8")
    refused = ProxiedClient(relay.base_url, "ann").get_json("/")
    assert refused.status == 403
    assert "accepted only from Relay's proxy" in refused.json()["message"]
    assert ProxiedClient(relay.base_url, None).get_json("/").status == 401
    assert "refused a X-Forwarded-User header from 127.0.0.1" in relay.log()


@pytest.mark.server
def test_through_gunicorn_a_forwarded_for_header_cannot_pose_as_the_proxy(server_factory):
    # Behind a trusted proxy X-Forwarded-For names the client, but the header's sender is
    # still the direct peer (127.0.0.1 here), which is not the configured proxy.
    relay = server_factory(AUTH_MODE="header", AUTH_PROXY_ADDRESSES="10.9.9.9",
                           TRUSTED_PROXIES="1")
    posing = ProxiedClient(relay.base_url, "ann").request(
        "GET", "/", headers={"Accept": "application/json", "X-Forwarded-For": "10.9.9.9"})
    assert posing.status == 403
