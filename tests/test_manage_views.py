"""Threads to manage, in-process: rename, delete, search, export and import, sidebar pages."""

from __future__ import annotations

import io
import json
import re

import pytest
from sqlalchemy import func, select

from models import Message, StreamDelta, Thread, db
from tests.conftest import JSON, csrf_of, new_thread, send


def post(client, token, url, **kw):
    return client.post(url, headers={"X-CSRF-Token": token, **JSON, **kw.pop("headers", {})},
                       **kw)


def talk(client, token, content="Hello there") -> int:
    """A thread with one finished turn; its id."""
    thread_id = new_thread(client, token)
    turn = send(client, token, thread_id, content)
    assert b"event: done" in client.get(turn["stream_url"]).data  # the demo answers at once
    return thread_id


def count(app, model, **where) -> int:
    with app.app_context():
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return db.session.scalar(query)


# -- rename ------------------------------------------------------------------------------
def test_rename_answers_the_thread_and_keeps_the_trimmed_title(client, token, thread_id):
    answer = post(client, token, f"/threads/{thread_id}/rename", json={"title": "  Trip  "})
    assert answer.status_code == 200
    assert answer.json["thread"]["id"] == thread_id
    assert answer.json["thread"]["title"] == "Trip"
    page = client.get(f"/threads/{thread_id}")
    assert '<h1 id="thread-title">Trip</h1>' in page.text


@pytest.mark.parametrize("title,why", [("", "empty"), ("   ", "empty"), ("x" * 201, "limit"),
                                       ("two\nlines", "one line"), (None, "'title'"),
                                       (42, "'title'")])
def test_a_bad_title_is_a_400_that_says_why(client, token, thread_id, title, why):
    answer = post(client, token, f"/threads/{thread_id}/rename", json={"title": title})
    assert answer.status_code == 400
    assert why in answer.json["message"]
    assert client.get(f"/threads/{thread_id}", headers=JSON).json["thread"]["title"] == \
        "New thread"


def test_a_title_of_the_columns_length_is_kept_whole(client, token, thread_id):
    answer = post(client, token, f"/threads/{thread_id}/rename", data={"title": "é" * 200})
    assert answer.status_code == 200 and answer.json["thread"]["title"] == "é" * 200


def test_a_chosen_title_is_never_replaced_by_the_automatic_one(app, client, token, thread_id):
    post(client, token, f"/threads/{thread_id}/rename", json={"title": "My name for it"})
    send(client, token, thread_id, "What is the first prompt about?")
    assert client.get(f"/threads/{thread_id}", headers=JSON).json["thread"]["title"] == \
        "My name for it"
    with app.app_context():
        assert db.session.get(Thread, thread_id).title_chosen is True


def test_without_a_chosen_title_the_first_prompt_still_names_the_thread(client, token,
                                                                       thread_id):
    send(client, token, thread_id, "Named by its prompt")
    assert client.get(f"/threads/{thread_id}", headers=JSON).json["thread"]["title"] == \
        "Named by its prompt"


def test_renaming_a_strangers_thread_is_a_404_and_needs_csrf(client, token, thread_id,
                                                             stranger):
    their = csrf_of(stranger)
    assert post(stranger, their, f"/threads/{thread_id}/rename",
                json={"title": "Mine now"}).status_code == 404
    assert client.post(f"/threads/{thread_id}/rename", data={"title": "x"},
                       headers=JSON).status_code == 403
    assert post(client, token, "/threads/999999/rename", json={"title": "x"}).status_code == 404


def test_htmx_rename_from_the_header_answers_the_heading_and_the_sidebar_entry(client, token):
    thread_id = talk(client, token)
    html = client.post(f"/threads/{thread_id}/rename", data={"title": "<b>Bold</b> plan"},
                       headers={"X-CSRF-Token": token, "HX-Request": "true",
                                "HX-Target": "thread-title",
                                "HX-Current-URL": f"http://x/threads/{thread_id}"}).text
    assert html.startswith('<h1 id="thread-title">&lt;b&gt;Bold&lt;/b&gt; plan</h1>')
    assert re.search(r'<div hx-swap-oob="beforeend:#thread-list">\s*'
                     rf'<div class="thread-item" id="thread-item-{thread_id}"[^>]*data-in-place',
                     html)


def test_htmx_rename_from_the_sidebar_answers_the_entry(client, token):
    thread_id = talk(client, token)
    other = talk(client, token)
    html = client.post(f"/threads/{thread_id}/rename", data={"title": "Renamed"},
                       headers={"X-CSRF-Token": token, "HX-Request": "true",
                                "HX-Target": f"thread-item-{thread_id}",
                                "HX-Current-URL": f"http://x/threads/{other}"}).text
    assert html.lstrip().startswith(f'<div class="thread-item" id="thread-item-{thread_id}"')
    assert "thread-title" not in html  # that page shows another thread's heading


def test_followers_get_the_new_title_and_sidebar_entry(app, client, token):
    from views.sockets import render_changes

    thread_id = talk(client, token)
    post(client, token, f"/threads/{thread_id}/rename", json={"title": "Seen live"})
    with app.test_request_context("/"):
        owner = render_changes(thread_id, [{"type": "renamed", "thread": thread_id}], False)
        viewer = render_changes(thread_id, [{"type": "renamed", "thread": thread_id}], True)
    assert '<h1 id="thread-title" hx-swap-oob="true">Seen live</h1>' in owner
    assert f'id="thread-item-{thread_id}"' in owner and "data-in-place" in owner
    assert '<h1 id="thread-title" hx-swap-oob="true">Seen live</h1>' in viewer
    assert "thread-list" not in viewer  # a share viewer has no sidebar list


# -- delete ------------------------------------------------------------------------------
def test_delete_removes_the_thread_its_messages_deltas_and_share(app, client, token):
    thread_id = talk(client, token)
    share = post(client, token, f"/threads/{thread_id}/share").json["share_url"]
    with app.app_context():
        message_id = db.session.scalar(select(Message.id).where(Message.thread_id == thread_id))
        db.session.add(StreamDelta(message_id=message_id, start=0, end=1, text="x"))
        db.session.commit()
    answer = post(client, token, f"/threads/{thread_id}/delete")
    assert answer.status_code == 200 and answer.json == {"deleted": thread_id}
    assert client.get(f"/threads/{thread_id}").status_code == 404
    assert client.get(share.split("://", 1)[1].split("/", 1)[1].join(["/", ""])).status_code \
        == 404
    assert count(app, Thread, id=thread_id) == 0
    assert count(app, Message, thread_id=thread_id) == 0
    assert count(app, StreamDelta, message_id=message_id) == 0
    assert client.get("/search?q=Hello", headers=JSON).json == []


def test_delete_method_answers_204(client, token, thread_id):
    answer = client.delete(f"/threads/{thread_id}", headers={"X-CSRF-Token": token})
    assert answer.status_code == 204
    assert client.get(f"/threads/{thread_id}").status_code == 404


def test_deleting_needs_the_owner_and_csrf(app, client, token, thread_id, stranger):
    their = csrf_of(stranger)
    assert post(stranger, their, f"/threads/{thread_id}/delete").status_code == 404
    assert stranger.delete(f"/threads/{thread_id}",
                           headers={"X-CSRF-Token": their}).status_code == 404
    assert client.post(f"/threads/{thread_id}/delete").status_code == 403
    assert client.delete(f"/threads/{thread_id}").status_code == 403
    assert count(app, Thread, id=thread_id) == 1


def test_htmx_delete_of_the_open_thread_goes_home(client, token, thread_id):
    answer = client.post(f"/threads/{thread_id}/delete",
                         headers={"X-CSRF-Token": token, "HX-Request": "true",
                                  "HX-Current-URL": f"http://x/threads/{thread_id}"})
    assert answer.status_code == 204 and answer.headers["HX-Redirect"] == "/"


def test_delete_stops_a_pending_reply_first(app, client, token):
    thread_id = new_thread(client, token)
    turn = send(client, token, thread_id, "never answered")
    assert turn["assistant_message"]["status"] == "pending"
    assert post(client, token, f"/threads/{thread_id}/delete").status_code == 200
    assert count(app, Message, thread_id=thread_id) == 0
    stream = client.get(turn["stream_url"], headers=JSON)
    assert stream.status_code == 404


def test_followers_of_a_deleted_thread_are_told(app, client, token):
    from views.sockets import render_changes

    thread_id = talk(client, token)
    post(client, token, f"/threads/{thread_id}/delete")
    with app.test_request_context("/"):
        frame = render_changes(thread_id, [{"type": "deleted", "thread": thread_id}], False)
    assert f'<section class="thread thread--deleted" id="thread-{thread_id}"' in frame
    assert "This thread was deleted" in frame
    assert f'id="thread-item-{thread_id}" data-in-place data-gone' in frame


# -- search ------------------------------------------------------------------------------
def test_search_finds_titles_and_messages_with_marked_snippets(client, token):
    thread_id = talk(client, token, "Tell me about the lighthouse keepers of Skerryvore")
    hits = client.get("/search?q=lighthouse", headers=JSON).json
    assert {h["message_id"] is None for h in hits} == {True, False}  # title and message
    message_hit = next(h for h in hits if h["message_id"])
    assert message_hit["thread_id"] == thread_id
    assert message_hit["title"] == "Tell me about the lighthouse keepers of Skerryvore"
    assert "<mark>lighthouse</mark>" in message_hit["snippet"]
    # The last word is a prefix: results come while it is typed.
    assert client.get("/search?q=skerry", headers=JSON).json


def test_search_snippets_escape_the_text_and_mark_only_matches(client, token):
    talk(client, token, 'Is <script>alert("x")</script> & needle safe?')
    (hit, *_) = [h for h in client.get("/search?q=needle", headers=JSON).json
                 if h["message_id"]]
    assert "<script>" not in hit["snippet"]
    assert "&lt;script&gt;" in hit["snippet"] and "&amp;" in hit["snippet"]
    assert re.sub(r"</?mark>", "", hit["snippet"]).count("<") == 0


def test_search_sees_only_the_owners_threads(client, token, stranger):
    talk(client, token, "private walrus notes")
    assert client.get("/search?q=walrus", headers=JSON).json
    csrf_of(stranger)
    assert stranger.get("/search?q=walrus", headers=JSON).json == []


@pytest.mark.parametrize("query", ['"', '""', "'", "*", "walrus*", "NEAR(walrus", "AND",
                                   "walrus OR", "-walrus", "^walrus", "walrus:", "(", ")",
                                   "{}", "a AND NOT b", "col:walrus", "\\", "%", "_",
                                   "\u00e9t\u00e9", "🦭", "\x00", "walrus NEAR/2 notes",
                                   "!!!", "<mark>", "&amp;", " "])
def test_nasty_queries_never_fail(client, token, query):
    talk(client, token, "walrus notes")
    answer = client.get("/search", query_string={"q": query}, headers=JSON)
    assert answer.status_code == 200
    assert isinstance(answer.json, list)


def test_a_very_long_query_is_a_400(client):
    answer = client.get("/search", query_string={"q": "walrus " * 100}, headers=JSON)
    assert answer.status_code == 400 and "limit" in answer.json["message"]


def test_search_after_a_rename_and_an_edit_of_the_index(client, token):
    thread_id = talk(client, token, "first words")
    post(client, token, f"/threads/{thread_id}/rename", json={"title": "Aardvark log"})
    assert [h["thread_id"] for h in client.get("/search?q=aardvark", headers=JSON).json] == \
        [thread_id]
    assert client.get("/search?q=first", headers=JSON).json[0]["title"] == "Aardvark log"


def test_htmx_search_answers_the_results_list(client, token):
    thread_id = talk(client, token, "zebra crossing")
    html = client.get("/search?q=zebra", headers={"HX-Request": "true"}).text
    assert html.startswith('<div id="search-results"')
    assert f'href="/threads/{thread_id}#message-' in html
    assert "<mark>zebra</mark>" in html
    empty = client.get("/search?q=", headers={"HX-Request": "true"}).text
    assert "hidden" in empty.split(">", 1)[0]
    page = client.get("/search?q=zebra")
    assert page.status_code == 200 and "<mark>zebra</mark>" in page.text


# -- export and import ---------------------------------------------------------------------
def test_export_markdown_is_a_download_of_the_conversation(client, token):
    thread_id = talk(client, token, "Explain *tides*")
    answer = client.get(f"/threads/{thread_id}/export?format=md")
    assert answer.status_code == 200
    assert answer.mimetype == "text/markdown"
    assert answer.headers["Content-Disposition"].startswith("attachment; filename=")
    assert answer.text.startswith("# Explain *tides*\n\n## You\n\nExplain *tides*\n\n## Assistant")


def test_export_json_holds_every_message_field(client, token):
    thread_id = talk(client, token, "Keep me")
    answer = client.get(f"/threads/{thread_id}/export?format=json")
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    data = json.loads(answer.data)
    assert data["format"] == "relay.thread" and data["version"] == 1
    assert data["thread"]["title"] == "Keep me"
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert set(data["messages"][1]) >= {"id", "parent_id", "role", "content", "status",
                                        "error", "model", "usage", "timings", "created_at"}


def test_export_needs_a_known_format_and_the_owner(client, token, thread_id, stranger):
    assert client.get(f"/threads/{thread_id}/export?format=pdf").status_code == 400
    csrf_of(stranger)
    assert stranger.get(f"/threads/{thread_id}/export?format=json").status_code == 404


def comparable(export: dict) -> dict:
    """An export without what an import renews: ids and times."""
    def strip(record: dict) -> dict:
        return {k: v for k, v in record.items() if k not in ("id", "created_at", "updated_at",
                                                              "parent_id", "active_leaf_id")}
    ids = [m["id"] for m in export["messages"]]
    leaf = export["thread"].get("active_leaf_id")
    return {"thread": strip(export["thread"]),
            "active_leaf": ids.index(leaf) if leaf in ids else leaf,
            "messages": [strip(m) for m in export["messages"]]}


def test_export_import_export_gives_the_same_thread(client, token, stranger):
    thread_id = talk(client, token, "Round trip ✓ with <html> & \"quotes\"")
    post(client, token, f"/threads/{thread_id}/rename", json={"title": "Chosen"})
    first = json.loads(client.get(f"/threads/{thread_id}/export?format=json").data)
    their = csrf_of(stranger)
    imported = stranger.post("/threads/import", data={
        "file": (io.BytesIO(json.dumps(first).encode()), "thread.json")},
        headers={"X-CSRF-Token": their, **JSON})
    assert imported.status_code == 201, imported.text
    new_id = imported.json["thread"]["id"]
    assert new_id != thread_id and imported.json["messages"] == 2
    second = json.loads(stranger.get(f"/threads/{new_id}/export?format=json").data)
    assert comparable(second) == comparable(first)
    assert stranger.get(f"/threads/{new_id}").status_code == 200
    # The imported thread is searchable by its new owner.
    assert stranger.get("/search?q=quotes", headers=JSON).json[0]["thread_id"] == new_id


def test_import_takes_a_json_body_and_keeps_parents(client, token):
    body = {"format": "relay.thread", "version": 1, "thread": {"title": "Imported"},
            "messages": [{"id": 7, "role": "user", "content": "hi"},
                         {"id": 9, "parent_id": 7, "role": "assistant", "content": "hello",
                          "status": "streaming"}]}
    answer = post(client, token, "/threads/import", json=body)
    assert answer.status_code == 201
    export = json.loads(client.get(
        f"/threads/{answer.json['thread']['id']}/export?format=json").data)
    # Nothing generates an imported reply: one that was streaming can be continued.
    assert [m["status"] for m in export["messages"]] == ["complete", "interrupted"]
    assert export["messages"][1]["content"] == "hello"


def test_import_restores_the_version_that_was_active(client, token, stranger):
    thread_id = talk(client, token, "Which version?")
    first = client.get(f"/threads/{thread_id}/export?format=json").json
    reply = first["messages"][1]["id"]
    again = post(client, token, f"/messages/{reply}/regenerate")
    assert again.status_code == 201
    assert b"event: done" in client.get(again.json["stream_url"]).data
    # The older version is the one shown when the thread is exported.
    assert post(client, token, f"/messages/{reply}/select").status_code == 200
    export = client.get(f"/threads/{thread_id}/export?format=json").json
    assert export["thread"]["active_leaf_id"] == reply
    assert len(export["messages"]) == 3

    their = csrf_of(stranger)
    imported = stranger.post("/threads/import", json=export,
                             headers={"X-CSRF-Token": their, **JSON})
    assert imported.status_code == 201, imported.text
    new_id = imported.json["thread"]["id"]
    second = stranger.get(f"/threads/{new_id}/export?format=json").json
    assert comparable(second) == comparable(export)
    shown = second["messages"][1]
    assert second["thread"]["active_leaf_id"] == shown["id"]
    assert shown["content"] == export["messages"][1]["content"]
    # The page shows that version, with the other one a click away.
    page = stranger.get(f"/threads/{new_id}").text
    assert f'id="message-{shown["id"]}"' in page
    assert f'id="message-{second["messages"][2]["id"]}"' not in page
    assert '<span class="version-label">1 / 2</span>' in page


def test_an_import_naming_no_active_version_shows_the_newest(client, token):
    body = {"format": "relay.thread", "version": 1, "thread": {"title": "Old export"},
            "messages": [{"id": 1, "role": "user", "content": "q"},
                         {"id": 2, "parent_id": 1, "role": "assistant", "content": "a"},
                         {"id": 3, "parent_id": 1, "role": "assistant", "content": "b"}]}
    answer = post(client, token, "/threads/import", json=body)
    assert answer.status_code == 201
    export = client.get(f"/threads/{answer.json['thread']['id']}/export?format=json").json
    assert export["thread"]["active_leaf_id"] == export["messages"][2]["id"]


def base_export(**changes) -> dict:
    body = {"format": "relay.thread", "version": 1, "thread": {"title": "T"},
            "messages": [{"id": 1, "role": "user", "content": "hi"}]}
    body.update(changes)
    return body


@pytest.mark.parametrize("body,why", [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe", "not valid UTF-8"),
    (b"[" * 100000, "nested too deeply"),
    (b"[]", "not a Relay thread export"),
    (json.dumps(base_export(format="other")).encode(), "not a Relay thread export"),
    (json.dumps(base_export(version=2)).encode(), "version"),
    (json.dumps(base_export(thread=[])).encode(), "'thread'"),
    (json.dumps(base_export(messages={})).encode(), "'messages'"),
    (json.dumps(base_export(thread={"title": ""})).encode(), "'title'"),
    (json.dumps(base_export(messages=[5])).encode(), "Message 1"),
    (json.dumps(base_export(messages=[{"role": "system", "content": "x"}])).encode(), "'role'"),
    (json.dumps(base_export(messages=[{"role": "user"}])).encode(), "'content'"),
    (json.dumps(base_export(messages=[{"role": "user", "content": 3}])).encode(), "'content'"),
    (json.dumps(base_export(messages=[{"role": "user", "content": "x", "status": "odd"}])
                ).encode(), "'status'"),
    (json.dumps(base_export(messages=[{"role": "user", "content": "x", "parent_id": 4}])
                ).encode(), "'parent_id'"),
    (json.dumps(base_export(messages=[{"id": 1, "role": "user", "content": "x"},
                                      {"id": 1, "role": "user", "content": "y"}])).encode(),
     "'id'"),
    (json.dumps(base_export(messages=[{"role": "user", "content": "x",
                                       "created_at": "yesterday"}])).encode(), "'created_at'"),
    (json.dumps(base_export(messages=[{"role": "user", "content": "x",
                                       "timings": {"ttft_ms": -1}}])).encode(), "'timings'"),
    (b'{"format": "relay.thread", "version": 1, "thread": {"title": "\\ud800"}, '
     b'"messages": []}', "'title'"),
    (json.dumps(base_export(thread={"title": "T", "active_leaf_id": 2})).encode(),
     "'active_leaf_id'"),
    (json.dumps(base_export(thread={"title": "T", "active_leaf_id": "1"})).encode(),
     "'active_leaf_id'"),
    (b"", "Choose"),
])
def test_a_bad_import_is_a_400_that_says_why_and_stores_nothing(app, client, token, body, why):
    before = count(app, Thread)
    answer = client.post("/threads/import", data=body,
                         headers={"X-CSRF-Token": token, "Content-Type": "application/json",
                                  **JSON})
    assert answer.status_code == 400, answer.text
    assert why in answer.json["message"]
    assert count(app, Thread) == before


def test_import_needs_csrf(client):
    csrf_of(client)
    assert client.post("/threads/import", json=base_export()).status_code == 403


# -- the sidebar, page by page -------------------------------------------------------------
def test_the_sidebar_pages_through_every_thread_newest_first(app, client, token):
    app.config["SIDEBAR_PAGE_SIZE"] = 5
    made = [talk(client, token, f"thread number {i}") for i in range(12)]
    home = client.get("/").text
    first = re.findall(r'id="thread-item-(\d+)"', home)
    assert [int(i) for i in first] == made[::-1][:5]
    seen = list(first)
    cursor = re.search(r'hx-get="/threads/list\?before=([^"&]+)"', home).group(1)
    while cursor:
        page = client.get(f"/threads/list?before={cursor}", headers={"HX-Request": "true"}).text
        seen += re.findall(r'id="thread-item-(\d+)"', page)
        more = re.search(r'hx-get="/threads/list\?before=([^"&]+)', page)
        cursor = more.group(1) if more else None
    assert [int(i) for i in seen] == made[::-1]
    listed = client.get("/threads/list", headers=JSON).json
    assert len(listed["threads"]) == 5 and listed["next"]


def test_a_later_page_keeps_the_open_thread_highlighted(app, client, token):
    app.config["SIDEBAR_PAGE_SIZE"] = 2
    made = [talk(client, token, f"t{i}") for i in range(4)]
    page = client.get(f"/threads/{made[0]}").text
    cursor = re.search(r'hx-get="(/threads/list\?[^"]+)"', page).group(1).replace("&amp;", "&")
    assert f"current={made[0]}" in cursor
    second = client.get(cursor, headers={"HX-Request": "true"}).text
    assert re.search(rf'id="thread-link-{made[0]}"\s+class="thread-link is-current"', second)


@pytest.mark.parametrize("cursor", ["x", "1", "-1", "1-0", "1-a", "9" * 40 + "-1"])
def test_a_bad_cursor_is_a_400(client, cursor):
    answer = client.get(f"/threads/list?before={cursor}", headers=JSON)
    assert answer.status_code == 400 and "cursor" in answer.json["message"]
    assert client.get(f"/?before={cursor}").status_code == 400


def test_the_pages_forms_post_to_the_contracts_urls(client, token):
    thread_id = talk(client, token)
    page = client.get(f"/threads/{thread_id}").text
    assert f'hx-post="/threads/{thread_id}/delete"' in page
    assert f'hx-post="/threads/{thread_id}/rename"' in page
    assert f'href="/threads/{thread_id}/export?format=json"' in page
    assert 'hx-get="/search"' in page and 'hx-post="/threads/import"' in page
