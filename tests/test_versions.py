"""Versions of a turn: regenerate, edit and select, their 4xx rules, and the tree they keep."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import Message, Thread, db
from models.tree import ThreadTree
from streaming.history import build_history

from .conftest import JSON, csrf_of, send
from .dom import Dom

HTMX = {"HX-Request": "true"}


def post(client, token: str, path: str, body: dict | None = None, **headers: str):
    return client.post(path, json=body or {}, headers={"X-CSRF-Token": token, **JSON,
                                                       **headers})


def finish(client, turn: dict) -> None:
    """Stream a reply to its end, as its tab's SSE request does."""
    assert b"event: done" in client.get(turn["stream_url"]).data


def path_of(client, thread_id: int) -> list[int]:
    return [m["id"] for m in client.get(f"/threads/{thread_id}", headers=JSON).json["messages"]]


@pytest.fixture
def turn(client, token, thread_id) -> dict:
    """A prompt and its finished reply."""
    sent = send(client, token, thread_id, "What is Relay?")
    finish(client, sent)
    return sent


# -- regenerate --------------------------------------------------------------------------------
def test_regenerate_makes_a_pending_sibling_reply_the_active_version(client, token, thread_id,
                                                                     turn):
    old = turn["assistant_message"]["id"]
    user = turn["user_message"]["id"]
    answer = post(client, token, f"/messages/{old}/regenerate")
    assert answer.status_code == 201
    new = answer.json["message"]
    assert (new["role"], new["status"], new["parent_id"]) == ("assistant", "pending", user)
    assert new["siblings"] == [old, new["id"]]
    assert answer.json["stream_url"] == f"/messages/{new['id']}/stream"
    assert path_of(client, thread_id) == [user, new["id"]]
    finish(client, {"stream_url": answer.json["stream_url"]})
    # The older version stays, and says it has a newer sibling.
    assert client.get(f"/messages/{old}", headers=JSON).json["siblings"] == [old, new["id"]]


def test_regenerate_htmx_answers_the_active_path_with_the_new_version_streaming(
        client, token, thread_id, turn):
    old = turn["assistant_message"]["id"]
    answer = client.post(f"/messages/{old}/regenerate", headers={"X-CSRF-Token": token, **HTMX})
    assert answer.status_code == 200
    dom = Dom(answer.text)
    ids = [int(a["data-message-id"]) for a in dom.articles]
    assert ids[0] == turn["user_message"]["id"] and ids[1] != old and len(ids) == 2
    article = dom.articles[1]
    assert article["sse-connect"] == f"/messages/{ids[1]}/stream?after=0"
    assert re.search(r'class="version-label">2 / 2<', answer.text)
    prev = dom.find("button", data_action="prev-version")
    assert prev["hx-post"] == f"/messages/{old}/select"
    assert "disabled" in dom.find("button", data_action="next-version")


def test_regenerate_and_edit_follow_the_one_reply_at_a_time_rule(client, token, thread_id,
                                                                 turn):
    running = send(client, token, thread_id, "Another question")
    old = turn["assistant_message"]["id"]
    assert post(client, token, f"/messages/{old}/regenerate").status_code == 409
    user = turn["user_message"]["id"]
    assert post(client, token, f"/messages/{user}/edit", {"content": "x"}).status_code == 409
    # Unless a parallel reply is asked for.
    assert post(client, token, f"/messages/{old}/regenerate",
                {"parallel": True}).status_code == 201
    assert running["assistant_message"]["status"] == "pending"


# -- edit --------------------------------------------------------------------------------------
def test_edit_makes_a_new_prompt_version_and_keeps_the_old_branch_reachable(client, token,
                                                                           thread_id, turn):
    second = send(client, token, thread_id, "And then?")
    finish(client, second)
    first_user = turn["user_message"]["id"]
    old_path = path_of(client, thread_id)

    answer = post(client, token, f"/messages/{first_user}/edit", {"content": "What is htmx?"})
    assert answer.status_code == 201
    user, reply = answer.json["user_message"], answer.json["assistant_message"]
    assert (user["content"], user["parent_id"], user["siblings"]) == (
        "What is htmx?", None, [first_user, user["id"]])
    assert (reply["parent_id"], reply["status"]) == (user["id"], "pending")
    assert answer.json["stream_url"] == f"/messages/{reply['id']}/stream"
    assert path_of(client, thread_id) == [user["id"], reply["id"]]

    # The old version brings back the whole branch below it.
    back = post(client, token, f"/messages/{first_user}/select")
    assert back.status_code == 200
    assert back.json["path"] == old_path == path_of(client, thread_id)


def test_editing_a_reply_is_a_409_and_regenerating_a_prompt_too(client, token, turn):
    reply, user = turn["assistant_message"]["id"], turn["user_message"]["id"]
    answer = post(client, token, f"/messages/{reply}/edit", {"content": "new words"})
    assert answer.status_code == 409
    assert "prompt" in answer.json["error"].lower() or "prompt" in answer.text
    assert post(client, token, f"/messages/{user}/regenerate").status_code == 409


@pytest.mark.parametrize(("content", "status"), [("", 400), ("   \n", 400), (None, 400),
                                                 ("x" * 20_001, 413)])
def test_edit_checks_the_content_like_a_new_prompt(app, client, token, turn, content, status):
    app.config["MAX_PROMPT_CHARS"] = 20_000
    user = turn["user_message"]["id"]
    answer = post(client, token, f"/messages/{user}/edit", {"content": content})
    assert answer.status_code == status
    with app.app_context():  # nothing half-made is left behind
        assert db.session.query(Message).count() == 2


# -- select ------------------------------------------------------------------------------------
def test_select_switches_the_version_shown_and_the_page_shows_it_after_reload(
        client, token, thread_id, turn):
    old = turn["assistant_message"]["id"]
    new = post(client, token, f"/messages/{old}/regenerate").json["message"]["id"]
    answer = client.post(f"/messages/{old}/select", headers={"X-CSRF-Token": token, **HTMX})
    assert answer.status_code == 200
    assert [int(a["data-message-id"]) for a in Dom(answer.text).articles][-1] == old
    assert re.search(r'class="version-label">1 / 2<', answer.text)
    page = client.get(f"/threads/{thread_id}")
    ids = [int(a["data-message-id"]) for a in Dom(page.text).articles]
    assert ids == [turn["user_message"]["id"], old] and new not in ids
    # Selecting what is shown changes nothing.
    again = post(client, token, f"/messages/{old}/select")
    assert again.json["path"] == [turn["user_message"]["id"], old]


def test_select_without_javascript_goes_back_to_the_thread(client, token, thread_id, turn):
    old = turn["assistant_message"]["id"]
    post(client, token, f"/messages/{old}/regenerate")
    answer = client.post(f"/messages/{old}/select", data={"csrf_token": token})
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"/threads/{thread_id}")


@pytest.mark.parametrize("action", ["regenerate", "edit", "select"])
def test_a_stranger_gets_a_404_and_a_missing_token_a_403(app, client, token, turn, action):
    reply, user = turn["assistant_message"]["id"], turn["user_message"]["id"]
    target = user if action == "edit" else reply
    stranger = app.test_client()
    answer = post(stranger, csrf_of(stranger), f"/messages/{target}/{action}",
                  {"content": "mine now"})
    assert answer.status_code == 404
    no_token = client.post(f"/messages/{target}/{action}", json={"content": "x"}, headers=JSON)
    assert no_token.status_code == 403
    bad_token = post(client, "not-the-token", f"/messages/{target}/{action}", {"content": "x"})
    assert bad_token.status_code == 403
    assert post(client, token, f"/messages/999999/{action}", {"content": "x"}).status_code == 404
    with app.app_context():
        assert db.session.query(Message).count() == 2


def test_a_share_viewer_sees_the_version_label_but_no_buttons(client, token, thread_id, turn,
                                                             stranger):
    old = turn["assistant_message"]["id"]
    post(client, token, f"/messages/{old}/regenerate")
    link = post(client, token, f"/threads/{thread_id}/share").json["share_url"]
    page = stranger.get(link.split("localhost", 1)[-1])
    assert page.status_code == 200
    assert re.search(r'class="version-label">2 / 2<', page.text)
    for action in ("prev-version", "next-version", "regenerate", "edit"):
        assert f'data-action="{action}"' not in page.text


# -- the tree under any sequence of actions ----------------------------------------------------
ACTIONS = st.lists(st.tuples(st.sampled_from(["send", "regenerate", "edit", "select"]),
                             st.integers(min_value=0, max_value=50)), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_any_sequence_of_actions_keeps_a_valid_tree_whose_path_is_what_the_model_gets(
        app, client, token, actions):
    app.config["PAGE_SIZE"] = 1000
    thread_id = client.post("/threads", headers={"X-CSRF-Token": token, **JSON}).json[
        "thread"]["id"]
    expected: dict[int, int | None] = {}  # the tree as the contract describes it
    leaf: int | None = None

    def add(*created: dict) -> None:
        nonlocal leaf
        for message in created:
            expected[message["id"]] = message["parent_id"]
            leaf = message["id"]

    def below(node: int) -> int:
        kids = [m for m, p in expected.items() if p == node]
        return max([node, *(below(k) for k in kids)])

    def path_to(node: int | None) -> list[int]:
        path = []
        while node is not None:
            path.append(node)
            node = expected[node]
        return path[::-1]

    for action, pick in actions:
        path = path_to(leaf)
        users = [m for m in path if m in expected and roles.get(m) == "user"] \
            if (roles := _roles(app, thread_id)) else []
        replies = [m for m in path if roles.get(m) == "assistant"]
        if action == "send" or not path:
            answer = post(client, token, f"/threads/{thread_id}/messages",
                          {"content": f"prompt {pick}", "parallel": True})
            assert answer.status_code == 201
            assert answer.json["user_message"]["parent_id"] == (path[-1] if path else None)
            add(answer.json["user_message"], answer.json["assistant_message"])
        elif action == "regenerate" and replies:
            target = replies[pick % len(replies)]
            answer = post(client, token, f"/messages/{target}/regenerate", {"parallel": True})
            assert answer.status_code == 201
            assert answer.json["message"]["parent_id"] == expected[target]
            add(answer.json["message"])
        elif action == "edit" and users:
            target = users[pick % len(users)]
            answer = post(client, token, f"/messages/{target}/edit",
                          {"content": f"edited {pick}", "parallel": True})
            assert answer.status_code == 201
            assert answer.json["user_message"]["parent_id"] == expected[target]
            add(answer.json["user_message"], answer.json["assistant_message"])
        elif action == "select":
            everything = sorted(expected)
            target = everything[pick % len(everything)]
            answer = post(client, token, f"/messages/{target}/select")
            assert answer.status_code == 200
            if target not in path:
                leaf = below(target)
            assert answer.json["path"] == path_to(leaf)
        _finish_all(app, thread_id)
        _check_tree(app, client, thread_id, path_to(leaf))


def _roles(app, thread_id: int) -> dict[int, str]:
    with app.app_context():
        return dict(db.session.query(Message.id, Message.role)
                    .filter(Message.thread_id == thread_id).all())


def _finish_all(app, thread_id: int) -> None:
    """Replies get text of their own (as if written), so the history has them."""
    with app.app_context():
        for message in db.session.query(Message).filter(Message.thread_id == thread_id,
                                                        Message.status == "pending"):
            message.status, message.content = "complete", f"reply {message.id}"
        db.session.commit()


def _check_tree(app, client, thread_id: int, expected_path: list[int]) -> None:
    shown = client.get(f"/threads/{thread_id}", headers=JSON).json["messages"]
    assert [m["id"] for m in shown] == expected_path
    with app.app_context():
        thread = db.session.get(Thread, thread_id)
        messages = {m.id: m for m in db.session.query(Message)
                    .filter(Message.thread_id == thread_id)}
        everyone = {m.id: m for m in db.session.query(Message)}
        for message in messages.values():
            if message.parent_id is None:
                assert message.role == "user", "a thread starts with a prompt"
                continue
            parent = everyone[message.parent_id]
            assert parent.thread_id == thread_id, "a parent from another thread"
            assert parent.role != message.role, "prompts and replies alternate"
        # Exactly one active path: it ends at a leaf and climbs to a first prompt.
        tree = ThreadTree.load(db.session, thread)
        assert thread.active_leaf_id == expected_path[-1]
        assert not any(m.parent_id == thread.active_leaf_id for m in messages.values())
        assert tree.path() == expected_path
        for entry in shown:
            versions = [messages[i] for i in entry["siblings"]]
            assert entry["id"] in entry["siblings"] and entry["siblings"] == sorted(
                entry["siblings"])
            assert {(v.parent_id, v.role) for v in versions} == {
                (entry["parent_id"], entry["role"])}
            assert len(versions) == sum(1 for m in messages.values()
                                        if (m.parent_id, m.role) == (entry["parent_id"],
                                                                     entry["role"]))
        # The model is sent exactly the active path before the last reply.
        last = messages[expected_path[-1]]
        history = build_history(db.session, last, system_prompt="sys", limit=1000)
        assert history == [{"role": "system", "content": "sys"}] + [
            {"role": messages[i].role, "content": messages[i].content}
            for i in expected_path[:-1]]
        short = build_history(db.session, last, system_prompt=None, limit=3)
        assert short == history[1:][-3:]


def test_a_polling_page_gets_the_new_path_once_its_newest_message_left_it(client, token,
                                                                         thread_id, turn):
    old = turn["assistant_message"]["id"]
    url = f"/threads/{thread_id}/messages?after={old}&follow=poll"
    assert Dom(client.get(url, headers=HTMX).text).articles == []  # nothing new yet
    new = post(client, token, f"/messages/{old}/regenerate").json["message"]["id"]
    answer = client.get(url, headers=HTMX)
    dom = Dom(answer.text)
    replaced = dom.find("div", id="messages")
    assert replaced["hx-swap-oob"] == "true" and "data-active-path" in replaced
    assert [int(a["data-message-id"]) for a in dom.articles] == [turn["user_message"]["id"],
                                                                 new]
    assert dom.find("div", id="poll-newer")["hx-get"].endswith(f"after={new}&follow=poll")
