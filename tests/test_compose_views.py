"""What the composer relies on: one reply at a time, a home page that starts a thread, share
links that can be revoked, human error messages and the model's health."""

from __future__ import annotations

import re
import socket

import pytest

from llm import OpenAICompatProvider
from llm.health import ModelHealth
from models import Message, Thread
from tests.conftest import JSON, csrf_of, new_thread, send
from tests.dom import Dom


def text_of(html: str) -> str:
    """What a person reads of a fragment: its text, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def count(app, model) -> int:
    with app.app_context():
        return Message.query.count() if model is Message else Thread.query.count()


def finish(client, sent: dict) -> None:
    assert b"event: done" in client.get(sent["stream_url"]).data


# -- one reply at a time -----------------------------------------------------------------------
def test_a_second_prompt_while_a_reply_is_pending_is_a_409_that_stores_nothing(app, client,
                                                                               token, thread_id):
    send(client, token, thread_id, "First")
    answer = client.post(f"/threads/{thread_id}/messages", json={"content": "Second"},
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 409
    assert answer.json["message"].startswith("A reply is still being written in this thread")
    assert count(app, Message) == 2


@pytest.mark.parametrize("second", ["prompt", "regenerate", "edit"])
def test_two_requests_at_once_give_one_reply_and_a_409(app, client, token, thread_id,
                                                       monkeypatch, second):
    # A client that retries a prompt whose first try is still being served (a timeout under
    # load) sends the two at once: both looked before either wrote, and both replies ran,
    # side by side, each asking the model. The one that loses the race now looks again.
    import views.messages

    first = send(client, token, thread_id, "First")
    finish(client, first)
    paths = {"prompt": (f"/threads/{thread_id}/messages", {"content": "Again"}),
             "regenerate": (f"/messages/{first['assistant_message']['id']}/regenerate", {}),
             "edit": (f"/messages/{first['user_message']['id']}/edit", {"content": "Again"})}
    path, body = paths[second]
    adding = views.messages.add_turn
    answers = []
    raced = []

    def the_other_request_first(*args, **kwargs):
        if not raced:  # the other request looks, writes and answers between our look and write
            raced.append(True)
            answers.append(client.post(path, json=body, headers={"X-CSRF-Token": token, **JSON}))
        return adding(*args, **kwargs)

    monkeypatch.setattr(views.messages, "add_turn", the_other_request_first)
    answer = client.post(path, json=body, headers={"X-CSRF-Token": token, **JSON})
    assert answers[0].status_code == 201, answers[0].text
    assert answer.status_code == 409, answer.text
    assert answer.json["message"].startswith("A reply is still being written in this thread")
    with app.app_context():
        replies = Message.query.filter_by(thread_id=thread_id, role="assistant").all()
    assert len(replies) == 2  # the first turn's and the one request's that won
    assert sorted(r.status for r in replies) == ["complete", "pending"]


def test_the_409_reaches_htmx_as_a_human_sentence_without_http_jargon(client, token,
                                                                      thread_id):
    send(client, token, thread_id, "First")
    answer = client.post(f"/threads/{thread_id}/messages", data={"content": "Second"},
                         headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert answer.status_code == 409
    text = text_of(answer.text)
    assert text.startswith("A reply is still being written") and "409" not in text
    assert "Conflict" not in text


@pytest.mark.parametrize("flag", [{"parallel": True}, {"parallel": "true"}])
def test_a_prompt_that_asks_for_parallel_runs_beside_the_active_reply(client, token,
                                                                      thread_id, flag):
    first = send(client, token, thread_id, "First")
    answer = client.post(f"/threads/{thread_id}/messages", json={"content": "Second", **flag},
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 201, answer.text
    assert answer.json["assistant_message"]["id"] != first["assistant_message"]["id"]


def test_a_form_post_may_ask_for_parallel_too_and_false_means_no(client, token, thread_id):
    send(client, token, thread_id, "First")
    headers = {"X-CSRF-Token": token}
    refused = client.post(f"/threads/{thread_id}/messages",
                          data={"content": "Second", "parallel": "false"}, headers=headers)
    assert refused.status_code == 409
    allowed = client.post(f"/threads/{thread_id}/messages",
                          data={"content": "Second", "parallel": "true"}, headers=headers)
    assert allowed.status_code == 303


def test_once_the_reply_has_ended_the_next_prompt_is_accepted(client, token, thread_id):
    finish(client, send(client, token, thread_id, "First"))
    assert send(client, token, thread_id, "Second")["assistant_message"]["status"] == "pending"


def test_a_stopped_reply_frees_the_thread(client, token, thread_id):
    sent = send(client, token, thread_id, "First")
    stopped = client.post(f"/messages/{sent['assistant_message']['id']}/cancel",
                          headers={"X-CSRF-Token": token, **JSON})
    assert stopped.json["status"] == "aborted"
    assert send(client, token, thread_id, "Second")["user_message"]["content"] == "Second"


# -- the home page starts a conversation -------------------------------------------------------
def test_home_page_has_a_composer_that_posts_to_threads_and_suggestions(client):
    dom = Dom(client.get("/").text)
    composer = dom.find("form", id="composer")
    assert composer["action"] == "/threads" and composer["method"] == "post"
    assert dom.find("textarea", name="content") is not None
    suggestions = dom.find_all("button", name="content")
    assert len(suggestions) >= 3 and all(s["value"] for s in suggestions)


def test_posting_a_prompt_to_threads_makes_the_thread_its_messages_and_the_reply(app, client,
                                                                                 token):
    answer = client.post("/threads", json={"content": "Plan a picnic"},
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 201, answer.text
    body = answer.json
    assert body["thread"]["title"] == "Plan a picnic"
    assert answer.headers["Location"] == body["thread"]["url"]
    assert body["user_message"]["content"] == "Plan a picnic"
    assert body["assistant_message"]["status"] == "pending"
    assert body["stream_url"] == f"/messages/{body['assistant_message']['id']}/stream"
    assert "event: done" in client.get(body["stream_url"]).text
    page = client.get(body["thread"]["url"]).text
    assert "Plan a picnic" in page


def test_the_home_composer_redirects_htmx_and_plain_forms_to_the_new_thread(client, token):
    htmx = client.post("/threads", data={"content": "One"},
                       headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert htmx.status_code == 204 and re.fullmatch(r"/threads/\d+", htmx.headers["HX-Redirect"])
    plain = client.post("/threads", data={"content": "Two", "csrf_token": token})
    assert plain.status_code == 303 and re.fullmatch(r"/threads/\d+", plain.headers["Location"])
    assert plain.headers["Location"] != htmx.headers["HX-Redirect"]


@pytest.mark.parametrize("content", ["", "   "])
def test_an_empty_first_prompt_is_a_400_and_makes_no_thread(app, client, token, content):
    answer = client.post("/threads", data={"content": content},
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 400
    assert "Write a message first" in answer.json["message"]
    assert count(app, Thread) == 0


def test_an_over_long_first_prompt_is_a_413_and_makes_no_thread(app, client, token):
    app.config["MAX_PROMPT_CHARS"] = 10
    answer = client.post("/threads", data={"content": "x" * 11},
                         headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert answer.status_code == 413
    assert text_of(answer.text) == "The message is 11 characters long; the limit is 10."
    assert count(app, Thread) == 0


def test_the_sidebar_lists_no_empty_thread(client, token):
    empty = new_thread(client, token)
    used = new_thread(client, token)
    send(client, token, used, "Something to list")
    page = client.get("/").text
    assert f'id="thread-link-{used}"' in page
    assert f'id="thread-link-{empty}"' not in page
    # API clients that made the empty thread still see it.
    assert empty in [t["id"] for t in client.get("/", headers=JSON).json["threads"]]


def test_new_thread_in_the_sidebar_goes_to_the_home_composer_without_creating_one(client,
                                                                                  token,
                                                                                  thread_id):
    dom = Dom(client.get(f"/threads/{thread_id}").text)
    link = dom.find("a", data_action="new-thread")
    assert link["href"] == "/"


# -- share links -------------------------------------------------------------------------------
def test_revoking_a_share_link_makes_it_a_404_and_sharing_again_makes_a_new_one(app, client,
                                                                                 token,
                                                                                 thread_id):
    send(client, token, thread_id, "shared")
    headers = {"X-CSRF-Token": token, **JSON}
    first = client.post(f"/threads/{thread_id}/share", headers=headers).json["share_url"]
    path = "/" + first.split("/", 3)[3]
    viewer = app.test_client()
    assert viewer.get(path).status_code == 200

    revoked = client.post(f"/threads/{thread_id}/share/revoke", headers=headers)
    assert revoked.status_code == 200 and revoked.json == {"share_url": None}
    assert viewer.get(path).status_code == 404
    # The viewer's earlier grant is gone too.
    assert viewer.get(f"/threads/{thread_id}/messages", headers=JSON).status_code == 404

    second = client.post(f"/threads/{thread_id}/share", headers=headers).json["share_url"]
    assert second != first
    assert viewer.get("/" + second.split("/", 3)[3]).status_code == 200
    assert viewer.get(path).status_code == 404


def test_revoke_with_htmx_answers_the_share_button_and_strangers_get_404(app, client, token,
                                                                         thread_id, stranger):
    client.post(f"/threads/{thread_id}/share", headers={"X-CSRF-Token": token, **JSON})
    html = client.post(f"/threads/{thread_id}/share/revoke",
                       headers={"X-CSRF-Token": token, "HX-Request": "true"}).text
    assert 'data-action="share"' in html and "share-link" not in html
    stranger_token = csrf_of(stranger)
    assert stranger.delete(f"/threads/{thread_id}/share",
                           headers={"X-CSRF-Token": stranger_token}).status_code == 404


def test_a_share_viewer_sees_user_labels_and_no_owner_chrome(app, client, token, thread_id):
    send(client, token, thread_id, "viewed question")
    url = client.post(f"/threads/{thread_id}/share",
                      headers={"X-CSRF-Token": token, **JSON}).json["share_url"]
    owner_page = Dom(client.get(f"/threads/{thread_id}").text)
    assert owner_page.find_all("nav", id="thread-list")
    assert owner_page.find_all("a", data_action="new-thread")
    viewer = app.test_client()
    page = viewer.get("/" + url.split("/", 3)[3]).text
    dom = Dom(page)
    roles = re.findall(r'<span class="message-role">([^<]*)</span>', page)
    assert roles[0] == "User" and "You" not in roles
    assert not dom.find_all("nav", id="thread-list")
    assert not dom.find_all("a", data_action="new-thread")
    assert not dom.find_all("form", id="composer")
    assert f"/threads/{thread_id}/share" not in page


# -- errors people understand ------------------------------------------------------------------
def test_the_404_page_lists_the_persons_threads_in_its_sidebar(client, token, thread_id):
    send(client, token, thread_id, "A thread worth listing")
    page = client.get("/threads/999999")
    assert page.status_code == 404
    assert Dom(page.text).find_all("a", id=f"thread-link-{thread_id}")
    assert "Page not found" in page.text and "No such thread." in page.text


def test_the_404_page_of_a_new_visitor_lists_nothing(app):
    page = app.test_client().get("/threads/999999")
    assert page.status_code == 404 and 'class="thread-link' not in page.text


def test_an_over_large_body_is_a_413_with_a_plain_sentence(app, client, token, thread_id):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    answer = client.post(f"/threads/{thread_id}/messages", data={"content": "x" * 2000},
                         headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert answer.status_code == 413
    assert text_of(answer.text) == ("That is too much to send at once; shorten the message "
                                       "and try again.")


# -- the model's health ------------------------------------------------------------------------
def test_the_demo_model_is_always_healthy(client):
    answer = client.get("/models/health")
    assert answer.status_code == 200
    assert answer.json["ok"] is True and answer.json["provider"] == "demo"
    assert answer.headers["Cache-Control"] == "no-store"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_model_server_that_answers_is_healthy(upstream):
    provider = OpenAICompatProvider(base_url=upstream.url, api_key=None, model="fake")
    assert provider.check(timeout=5.0) is None


def test_an_unreachable_model_server_is_unhealthy_with_a_human_reason():
    provider = OpenAICompatProvider(base_url=f"http://127.0.0.1:{closed_port()}/v1",
                                    api_key=None, model="fake")
    reason = provider.check(timeout=2.0)
    assert reason and reason.startswith("Could not connect to the model server")


class CountingProvider:
    name, model, label = "openai", "m", "M"

    def __init__(self) -> None:
        self.reasons = [None, "down"]
        self.calls = 0

    def check(self, timeout: float) -> str | None:
        self.calls += 1
        return self.reasons[min(self.calls, len(self.reasons)) - 1]


def test_health_is_probed_at_most_once_per_ttl():
    provider, now = CountingProvider(), [100.0]
    health = ModelHealth(provider, ttl_s=5.0, clock=lambda: now[0])
    assert health.status()["ok"] is True
    now[0] += 4.9
    assert health.status()["ok"] is True and provider.calls == 1
    now[0] += 0.2
    status = health.status()
    assert provider.calls == 2 and status == {"ok": False, "message": "down",
                                              "provider": "openai", "model": "m", "label": "M"}


# -- Idempotency-Key: a prompt sent twice is stored once ---------------------------------------
def keyed(client, token, thread_id, content, key):
    return client.post(f"/threads/{thread_id}/messages", json={"content": content},
                       headers={"X-CSRF-Token": token, "Idempotency-Key": key, **JSON})


def test_a_prompt_sent_again_with_its_key_is_stored_once_and_answered_as_the_first_time(
        app, client, token, thread_id):
    first = keyed(client, token, thread_id, "Once", "3f1c9a2e-key")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    # Sent again while its reply is pending: the same turn, not a 409 and not a second prompt.
    again = keyed(client, token, thread_id, "Once", "3f1c9a2e-key")
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    for part in ("user_message", "assistant_message"):
        assert again.json[part]["id"] == first.json[part]["id"]
    assert again.json["stream_url"] == first.json["stream_url"]
    finish(client, first.json)
    # ...and after its reply ended (a request the server got to late): still that turn.
    late = keyed(client, token, thread_id, "Once", "3f1c9a2e-key")
    assert late.json["assistant_message"]["id"] == first.json["assistant_message"]["id"]
    assert late.json["assistant_message"]["status"] == "complete"
    assert late.json["assistant_message"]["content"]
    assert count(app, Message) == 2
    # Another key is another prompt.
    other = keyed(client, token, thread_id, "Once", "another-key")
    assert other.status_code == 201 and "Idempotent-Replayed" not in other.headers
    assert count(app, Message) == 4


def test_a_key_belongs_to_its_thread(app, client, token, thread_id):
    keyed(client, token, thread_id, "Here", "same-key")
    elsewhere = new_thread(client, token)
    answer = keyed(client, token, elsewhere, "There", "same-key")
    assert answer.status_code == 201 and "Idempotent-Replayed" not in answer.headers
    assert answer.json["user_message"]["content"] == "There"


def test_the_same_key_twice_at_once_stores_the_prompt_once(app, client, token, thread_id,
                                                          monkeypatch):
    import views.messages

    adding = views.messages.add_turn
    answers, raced = [], []

    def the_other_request_first(*args, **kwargs):
        if not raced:  # both looked for the key before either stored the prompt
            raced.append(True)
            answers.append(keyed(client, token, thread_id, "Twice", "k-at-once"))
        return adding(*args, **kwargs)

    monkeypatch.setattr(views.messages, "add_turn", the_other_request_first)
    answer = keyed(client, token, thread_id, "Twice", "k-at-once")
    assert answers[0].status_code == 201 and "Idempotent-Replayed" not in answers[0].headers
    assert answer.status_code == 201, answer.text
    assert answer.headers["Idempotent-Replayed"] == "true"
    assert answer.json["user_message"]["id"] == answers[0].json["user_message"]["id"]
    assert count(app, Message) == 2


@pytest.mark.parametrize("key", ["", "x" * 65, "with space", "caf\u00e9"])
def test_a_malformed_key_is_a_400_that_stores_nothing(app, client, token, thread_id, key):
    answer = client.post(f"/threads/{thread_id}/messages", json={"content": "Hi"},
                         headers={"X-CSRF-Token": token, "Idempotency-Key":
                                  key.encode().decode("latin-1"), **JSON})
    assert answer.status_code == 400
    assert "Idempotency-Key" in answer.json["message"]
    assert count(app, Message) == 0
