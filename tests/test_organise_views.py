"""Organised threads, in-process: folders, pin, archive, bulk actions, temporary chats."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from sqlalchemy import select

from models import Folder, Message, Thread, db, utcnow
from tests.conftest import JSON, csrf_of, new_thread, send


def post(client, token, url, **kw):
    return client.post(url, headers={"X-CSRF-Token": token, **JSON, **kw.pop("headers", {})},
                       **kw)


def talk(client, token, content="Hello there", **create) -> int:
    """A thread with one finished turn; its id."""
    if create:
        thread_id = post(client, token, "/threads", json=create).json["thread"]["id"]
    else:
        thread_id = new_thread(client, token)
    turn = send(client, token, thread_id, content)
    assert b"event: done" in client.get(turn["stream_url"]).data  # the demo answers at once
    return thread_id


def organise(client, token, thread_id, **fields):
    return post(client, token, f"/threads/{thread_id}/organise", json=fields)


def folder(client, token, name) -> dict:
    answer = post(client, token, "/folders", json={"name": name})
    assert answer.status_code == 201, answer.text
    return answer.json["folder"]


def listed(client) -> list[int]:
    return [t["id"] for t in client.get("/threads/list", headers=JSON).json["threads"]]


def home_listed(client) -> list[int]:
    return [t["id"] for t in client.get("/", headers=JSON).json["threads"]]


def searched(client, q) -> set[int]:
    return {hit["thread_id"] for hit in client.get(f"/search?q={q}", headers=JSON).json}


def stored(app, thread_id) -> Thread | None:
    with app.app_context():
        return db.session.get(Thread, thread_id)


# -- one thread ---------------------------------------------------------------------------
def test_new_threads_are_unfiled_unpinned_listed_and_kept(client, token, thread_id):
    thread = client.get(f"/threads/{thread_id}", headers=JSON).json["thread"]
    assert (thread["folder"], thread["pinned"], thread["archived"], thread["temporary"]) == \
        (None, False, False, False)


def test_organise_sets_each_field_and_answers_the_thread(app, client, token, thread_id):
    folder(client, token, "Trips")
    answer = organise(client, token, thread_id, folder="Trips")
    assert answer.status_code == 200
    assert answer.json["thread"]["folder"] == "Trips"
    assert organise(client, token, thread_id, pinned=True).json["thread"]["pinned"] is True
    assert organise(client, token, thread_id, archived=True).json["thread"]["archived"] is True
    thread = stored(app, thread_id)
    assert (thread.folder, thread.pinned, thread.archived) == ("Trips", True, True)
    # Form fields, as the page's forms send them; an empty folder takes it out of its folder.
    answer = post(client, token, f"/threads/{thread_id}/organise",
                  data={"folder": "", "pinned": "false", "archived": "false"})
    assert answer.status_code == 200
    assert {k: answer.json["thread"][k] for k in ("folder", "pinned", "archived")} == \
        {"folder": None, "pinned": False, "archived": False}
    thread = stored(app, thread_id)
    assert (thread.folder, thread.pinned, thread.archived) == (None, False, False)


def test_organise_changes_only_the_fields_sent(app, client, token, thread_id):
    folder(client, token, "Work")
    organise(client, token, thread_id, folder="Work", pinned=True)
    organise(client, token, thread_id, archived=True)
    thread = stored(app, thread_id)
    assert (thread.folder, thread.pinned, thread.archived) == ("Work", True, True)


@pytest.mark.parametrize("fields,why", [
    ({}, "Send 'folder', 'pinned' or 'archived'"),
    ({"pinned": "maybe"}, "'pinned' must be true or false"),
    ({"pinned": None}, "'pinned' must be true or false"),
    ({"archived": 3}, "'archived' must be true or false"),
    ({"archived": ["true"]}, "'archived' must be true or false"),
    ({"folder": "Nowhere"}, "no folder named “Nowhere”"),
    ({"folder": "x" * 101}, "the limit is 100"),
    ({"folder": 7}, "'folder'"),
    ({"folder": "two\nlines"}, "one line"),
    ({"pinned": True, "folder": "Nowhere"}, "no folder named"),
])
def test_bad_organise_values_are_a_400_that_says_why_and_change_nothing(
        app, client, token, thread_id, fields, why):
    answer = organise(client, token, thread_id, **fields)
    assert answer.status_code == 400
    assert why in answer.json["message"]
    thread = stored(app, thread_id)
    assert (thread.folder, thread.pinned, thread.archived) == (None, False, False)


def test_organising_needs_the_owner_and_csrf(app, client, token, thread_id, stranger):
    their = csrf_of(stranger)
    assert organise(stranger, their, thread_id, pinned=True).status_code == 404
    assert client.post(f"/threads/{thread_id}/organise", data={"pinned": "true"},
                       headers=JSON).status_code == 403
    assert organise(client, token, 999999, pinned=True).status_code == 404
    assert stored(app, thread_id).pinned is False
    # A stranger's folder of the same name is not the owner's.
    folder(stranger, their, "Theirs")
    assert organise(client, token, thread_id, folder="Theirs").status_code == 400


def test_htmx_organise_from_the_sidebar_answers_the_sidebar(client, token):
    thread_id = talk(client, token)
    folder(client, token, "Reading")
    html = client.post(f"/threads/{thread_id}/organise", data={"folder": "Reading"},
                       headers={"X-CSRF-Token": token, "HX-Request": "true",
                                "HX-Target": "thread-list"}).text
    assert html.lstrip().startswith('<nav class="thread-list" id="thread-list"')
    folder_part = html.split('data-drop-folder="Reading"', 1)[1].split("</details>", 1)[0]
    assert f'id="thread-item-{thread_id}"' in folder_part


def test_archiving_the_open_thread_from_its_sidebar_reloads_its_page(client, token):
    thread_id = talk(client, token)
    answer = client.post(f"/threads/{thread_id}/organise", data={"archived": "true"},
                         headers={"X-CSRF-Token": token, "HX-Request": "true",
                                  "HX-Target": "thread-list",
                                  "HX-Current-URL": f"http://x/threads/{thread_id}"})
    assert answer.status_code == 200 and answer.headers["HX-Refresh"] == "true"


def test_the_no_script_organise_form_goes_back_to_the_thread(client, token, thread_id):
    answer = client.post(f"/threads/{thread_id}/organise",
                         data={"csrf_token": token, "pinned": "true"})
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith(f"/threads/{thread_id}")


# -- pin ----------------------------------------------------------------------------------
def test_pinned_threads_come_first_in_every_list(client, token):
    oldest, middle, newest = (talk(client, token, f"Turn {n}") for n in range(3))
    assert listed(client) == [newest, middle, oldest]
    organise(client, token, oldest, pinned=True)
    assert listed(client) == [oldest, newest, middle]
    assert home_listed(client) == [oldest, newest, middle]
    page = client.get("/").text
    pinned = page.split('id="pinned-list"', 1)[1].split('id="recent-list"', 1)[0]
    recent = page.split('id="recent-list"', 1)[1]
    assert f'id="thread-item-{oldest}"' in pinned and "📌" in pinned
    assert f'id="thread-item-{oldest}"' not in recent
    assert recent.index(f"thread-item-{newest}") < recent.index(f"thread-item-{middle}")
    organise(client, token, oldest, pinned=False)
    assert listed(client) == [newest, middle, oldest]


def test_a_later_page_of_the_list_never_repeats_a_pinned_thread(app, client, token):
    app.config["SIDEBAR_PAGE_SIZE"] = 2
    ids = [talk(client, token, f"Turn {n}") for n in range(5)]
    organise(client, token, ids[0], pinned=True)
    first = client.get("/threads/list", headers=JSON).json
    assert [t["id"] for t in first["threads"]] == [ids[0], ids[4], ids[3]]
    rest = []
    cursor = first["next"]
    while cursor:
        page = client.get(f"/threads/list?before={cursor}", headers=JSON).json
        rest += [t["id"] for t in page["threads"]]
        cursor = page["next"]
    assert rest == [ids[2], ids[1]]


# -- archive ------------------------------------------------------------------------------
def test_archived_threads_leave_the_lists_but_search_still_finds_them(client, token):
    kept = talk(client, token, "Lighthouse keeper")
    archived = talk(client, token, "Lighthouse archive")
    organise(client, token, archived, archived=True)
    assert listed(client) == [kept]
    assert home_listed(client) == [kept]
    assert f"thread-item-{archived}" not in client.get("/").text
    assert searched(client, "Lighthouse") == {kept, archived}
    hits = client.get("/search?q=archive", headers=JSON).json
    assert hits and all(hit["archived"] is True for hit in hits)
    assert [t["id"] for t in client.get("/threads/archived", headers=JSON).json["threads"]] == \
        [archived]
    page = client.get(f"/threads/{archived}").text
    assert 'id="archived-banner"' in page and 'data-action="unarchive"' in page
    archive_page = client.get("/threads/archived").text
    assert f'id="archived-{archived}"' in archive_page
    # One click back.
    organise(client, token, archived, archived=False)
    assert listed(client) == [archived, kept]
    assert client.get("/threads/archived", headers=JSON).json["threads"] == []


# -- folders ------------------------------------------------------------------------------
def test_folders_are_created_renamed_and_deleted_with_their_threads(app, client, token):
    a, b, loose = (talk(client, token, f"Turn {n}") for n in range(3))
    made = folder(client, token, "  Recipes ")
    assert made["name"] == "Recipes"
    organise(client, token, a, folder="Recipes")
    organise(client, token, b, folder="Recipes")
    page = client.get("/").text
    assert f'id="folder-{made["id"]}" data-folder="Recipes"' in page
    # JSON lists every listed thread, filed or not; the sidebar lists filed ones in folders.
    assert set(listed(client)) == {a, b, loose}
    assert f"thread-item-{a}" not in page.split('id="recent-list"', 1)[1]

    renamed = post(client, token, f"/folders/{made['id']}/rename", json={"name": "Cooking"})
    assert renamed.status_code == 200 and renamed.json["folder"]["name"] == "Cooking"
    assert stored(app, a).folder == "Cooking" and stored(app, b).folder == "Cooking"
    assert stored(app, loose).folder is None
    assert client.get("/folders", headers=JSON).json["folders"] == \
        [{"id": made["id"], "name": "Cooking"}]

    gone = post(client, token, f"/folders/{made['id']}/delete")
    assert gone.status_code == 200 and gone.json == {"deleted": made["id"]}
    assert stored(app, a).folder is None and stored(app, b).folder is None
    assert client.get("/folders", headers=JSON).json["folders"] == []


@pytest.mark.parametrize("name,status,why", [
    ("", 400, "cannot be empty"), ("   ", 400, "cannot be empty"), (None, 400, "'name'"),
    ("x" * 101, 400, "the limit is 100"), ("a\tb", 400, "one line"),
    ("Taken", 409, "already have a folder named"),
])
def test_a_bad_folder_name_is_refused_with_a_message(client, token, name, status, why):
    folder(client, token, "Taken")
    answer = post(client, token, "/folders", json={"name": name})
    assert answer.status_code == status and why in answer.json["message"]
    assert [f["name"] for f in client.get("/folders", headers=JSON).json["folders"]] == ["Taken"]


def test_folders_belong_to_their_owner(app, client, token, stranger):
    mine = folder(client, token, "Mine")
    other = folder(client, token, "Other")
    their = csrf_of(stranger)
    assert post(stranger, their, f"/folders/{mine['id']}/rename",
                json={"name": "Stolen"}).status_code == 404
    assert post(stranger, their, f"/folders/{mine['id']}/delete").status_code == 404
    assert client.post(f"/folders/{mine['id']}/delete", headers=JSON).status_code == 403
    assert stranger.get("/folders", headers=JSON).json["folders"] == []
    assert post(client, token, f"/folders/{mine['id']}/rename",
                json={"name": "Other"}).status_code == 409
    assert [f["name"] for f in client.get("/folders", headers=JSON).json["folders"]] == \
        ["Mine", "Other"]
    assert other


def test_the_folder_limit_is_a_400(app, client, token):
    app.config["MAX_FOLDERS"] = 2
    folder(client, token, "One")
    folder(client, token, "Two")
    answer = post(client, token, "/folders", json={"name": "Three"})
    assert answer.status_code == 400 and "2 folders" in answer.json["message"]


# -- several at once ----------------------------------------------------------------------
def test_bulk_archive_unarchive_pin_and_delete(app, client, token):
    a, b, c = (talk(client, token, f"Turn {n}") for n in range(3))
    answer = post(client, token, "/threads/bulk", json={"ids": [a, b], "action": "archive"})
    assert answer.status_code == 200 and answer.json == {"action": "archive", "ids": [a, b]}
    assert listed(client) == [c]
    post(client, token, "/threads/bulk", data={"ids": [str(a), str(b)], "action": "unarchive"})
    assert set(listed(client)) == {a, b, c}
    post(client, token, "/threads/bulk", json={"ids": [c], "action": "pin"})
    assert listed(client)[0] == c
    post(client, token, "/threads/bulk", json={"ids": [c], "action": "unpin"})
    assert stored(app, c).pinned is False
    answer = post(client, token, "/threads/bulk", data={"ids": [str(a), str(c)],
                                                        "action": "delete"})
    assert answer.status_code == 200
    assert stored(app, a) is None and stored(app, c) is None and stored(app, b) is not None
    with app.app_context():
        assert db.session.scalar(select(Message.id).where(Message.thread_id.in_([a, c]))) \
            is None


def test_bulk_delete_stops_running_replies_first(app, client, token):
    thread_id = new_thread(client, token)
    turn = send(client, token, thread_id, "never answered")
    assert turn["assistant_message"]["status"] == "pending"
    assert post(client, token, "/threads/bulk",
                json={"ids": [thread_id], "action": "delete"}).status_code == 200
    assert client.get(turn["stream_url"], headers=JSON).status_code == 404


def test_bulk_touches_only_the_owners_threads_all_or_nothing(app, client, token, stranger):
    mine = talk(client, token)
    their = csrf_of(stranger)
    theirs = talk(stranger, their)
    for action in ("archive", "delete"):
        answer = post(client, token, "/threads/bulk", json={"ids": [mine, theirs],
                                                            "action": action})
        assert answer.status_code == 404
    assert stored(app, mine).archived is False and stored(app, theirs) is not None
    assert stored(app, theirs).archived is False
    assert client.post("/threads/bulk", data={"ids": str(mine), "action": "archive"},
                       headers=JSON).status_code == 403
    assert stored(app, mine).archived is False


@pytest.mark.parametrize("body,why", [
    ({"ids": [1], "action": "explode"}, "'action' must be one of"),
    ({"ids": [1]}, "'action' must be one of"),
    ({"ids": [], "action": "archive"}, "at least one thread"),
    ({"action": "archive"}, "at least one thread"),
    ({"ids": ["x"], "action": "archive"}, "'ids' must be thread ids"),
    ({"ids": [0], "action": "archive"}, "'ids' must be thread ids"),
    ({"ids": [True], "action": "archive"}, "'ids' must be thread ids"),
    ({"ids": "1,2", "action": "archive"}, "'ids' must be thread ids"),
    ({"ids": list(range(1, 502)), "action": "archive"}, "the limit is 500"),
])
def test_bad_bulk_requests_are_a_400_that_says_why(client, token, body, why):
    answer = post(client, token, "/threads/bulk", json=body)
    assert answer.status_code == 400 and why in answer.json["message"]


def test_htmx_bulk_answers_the_sidebar_and_goes_home_when_the_open_thread_goes(client, token):
    a, b = talk(client, token), talk(client, token)
    html = client.post("/threads/bulk", data={"ids": [str(a)], "action": "archive"},
                       headers={"X-CSRF-Token": token, "HX-Request": "true",
                                "HX-Target": "thread-list"}).text
    assert 'id="thread-list"' in html and f"thread-item-{a}" not in html
    answer = client.post("/threads/bulk", data={"ids": [str(b)], "action": "delete"},
                         headers={"X-CSRF-Token": token, "HX-Request": "true",
                                  "HX-Target": "thread-list",
                                  "HX-Current-URL": f"http://x/threads/{b}"})
    assert answer.status_code == 204 and answer.headers["HX-Redirect"] == "/"


# -- temporary chats ------------------------------------------------------------------------
def test_a_temporary_chat_is_never_listed_or_found(client, token):
    kept = talk(client, token, "Zebra crossing")
    temporary = talk(client, token, "Zebra secret", temporary=True)
    thread = client.get(f"/threads/{temporary}", headers=JSON).json["thread"]
    assert thread["temporary"] is True
    assert listed(client) == [kept] and home_listed(client) == [kept]
    assert searched(client, "Zebra") == {kept}
    assert searched(client, "secret") == set()
    page = client.get(f"/threads/{temporary}").text
    assert 'id="temporary-banner"' in page
    assert f"thread-item-{temporary}" not in page
    assert 'data-action="archive"' not in page  # nothing to organise in a temporary chat
    assert organise(client, token, temporary, pinned=True).status_code == 409


def test_the_home_composer_starts_a_temporary_chat(client, token):
    page = client.get("/?temporary=1").text
    assert re.search(r'<input type="checkbox" name="temporary" value="true"[^>]*checked', page)
    answer = client.post("/threads", data={"csrf_token": token, "content": "Off the record",
                                           "temporary": "true"})
    assert answer.status_code == 303
    thread_id = int(answer.headers["Location"].rsplit("/", 1)[1])
    assert client.get(f"/threads/{thread_id}", headers=JSON).json["thread"]["temporary"]


@pytest.mark.parametrize("value", ["perhaps", 2, [True]])
def test_a_bad_temporary_flag_is_a_400_and_creates_nothing(app, client, token, value):
    answer = post(client, token, "/threads", json={"temporary": value})
    assert answer.status_code == 400 and "'temporary' must be true or false" in \
        answer.json["message"]
    with app.app_context():
        assert db.session.scalar(select(Thread.id)) is None


def test_leaving_a_temporary_chat_deletes_it(app, client, token):
    kept = talk(client, token)
    temporary = talk(client, token, "Gone soon", temporary=True)
    # Its own page, loaded again (a reload), keeps it; JSON and htmx requests do too.
    assert client.get(f"/threads/{temporary}").status_code == 200
    client.get("/", headers=JSON)
    client.get(f"/threads/{kept}", headers={"HX-Request": "true"})
    assert stored(app, temporary) is not None
    # Any other page of the same browser: it is gone.
    assert client.get(f"/threads/{kept}").status_code == 200
    assert stored(app, temporary) is None
    assert client.get(f"/threads/{temporary}").status_code == 404
    for page in ("/", "/search?q=x", "/usage", "/threads/archived"):
        again = talk(client, token, "Gone too", temporary=True)
        assert client.get(page).status_code == 200
        assert stored(app, again) is None, page


def test_another_browser_never_deletes_my_temporary_chat(app, client, token, stranger):
    temporary = talk(client, token, temporary=True)
    stranger.get("/")
    assert stored(app, temporary) is not None


def sweeper_at(app, now: dt.datetime):
    from views.temporary import TemporarySweeper

    return TemporarySweeper(app, ttl_s=app.config["TEMPORARY_TTL_S"], now=lambda: now)


def test_the_sweep_deletes_temporary_chats_idle_past_their_ttl(app, client, token):
    kept = talk(client, token)
    temporary = talk(client, token, temporary=True)
    ttl = dt.timedelta(seconds=app.config["TEMPORARY_TTL_S"])
    assert sweeper_at(app, utcnow() + ttl - dt.timedelta(minutes=1)).sweep() == []
    assert stored(app, temporary) is not None
    assert sweeper_at(app, utcnow() + ttl + dt.timedelta(seconds=1)).sweep() == [temporary]
    assert stored(app, temporary) is None and stored(app, kept) is not None


def test_the_sweep_stops_a_running_reply_before_deleting(app, client, token, monkeypatch):
    import views.threads

    thread_id = post(client, token, "/threads", json={"temporary": True}).json["thread"]["id"]
    turn = send(client, token, thread_id, "never answered")
    reply_id = turn["assistant_message"]["id"]
    stopped = []
    real_stop = views.threads.stop_reply

    def stop_and_look(message):
        stopped.append((message.id, db.session.get(Thread, thread_id) is not None))
        real_stop(message)
        stopped.append((db.session.get(Message, message.id).status,))

    monkeypatch.setattr(views.threads, "stop_reply", stop_and_look)
    far = utcnow() + dt.timedelta(seconds=app.config["TEMPORARY_TTL_S"] + 1)
    assert sweeper_at(app, far).sweep() == [thread_id]
    assert stopped == [(reply_id, True), ("aborted",)]
    assert stored(app, thread_id) is None


def test_the_sweep_runs_in_every_worker(app):
    relay = app.extensions["relay"]
    assert any(work.name == "temporary sweep" and
               work.interval_s == app.config["TEMPORARY_SWEEP_S"]
               for work in relay._background)


# -- export and import ----------------------------------------------------------------------
def test_export_and_import_carry_the_organisation(app, client, token, stranger):
    thread_id = talk(client, token, "Filed and pinned")
    folder(client, token, "Keep")
    organise(client, token, thread_id, folder="Keep", pinned=True, archived=True)
    exported = client.get(f"/threads/{thread_id}/export?format=json").get_data(as_text=True)
    data = json.loads(exported)["thread"]
    assert (data["folder"], data["pinned"], data["archived"], data["temporary"]) == \
        ("Keep", True, True, False)
    # Another browser imports it: the folder is made for them.
    their = csrf_of(stranger)
    answer = post(stranger, their, "/threads/import", data=exported.encode(),
                  headers={"Content-Type": "application/json"})
    assert answer.status_code == 201, answer.text
    imported = answer.json["thread"]
    assert (imported["folder"], imported["pinned"], imported["archived"]) == \
        ("Keep", True, True)
    assert [f["name"] for f in stranger.get("/folders", headers=JSON).json["folders"]] == \
        ["Keep"]
    again = stranger.get(f"/threads/{imported['id']}/export?format=json").get_json()["thread"]
    assert {k: again[k] for k in ("folder", "pinned", "archived", "temporary")} == \
        {k: data[k] for k in ("folder", "pinned", "archived", "temporary")}
    # Imported into the owner's own account, the existing folder is reused.
    post(client, token, "/threads/import", data=exported.encode(),
         headers={"Content-Type": "application/json"})
    with app.app_context():
        assert len(list(db.session.scalars(select(Folder).where(Folder.name == "Keep")))) == 2


@pytest.mark.parametrize("field,value,why", [
    ("pinned", "yes", "'pinned' of the thread must be"),
    ("archived", 1, "'archived' of the thread must be"),
    ("folder", 5, "'folder' of the thread must be"),
    ("folder", "x" * 101, "'folder' must be one line"),
])
def test_an_import_with_bad_organisation_is_a_400(app, client, token, field, value, why):
    thread_id = talk(client, token)
    data = client.get(f"/threads/{thread_id}/export?format=json").get_json()
    data["thread"][field] = value
    answer = post(client, token, "/threads/import", json=data)
    assert answer.status_code == 400 and why in answer.json["message"]
    with app.app_context():
        assert db.session.scalar(select(Folder.id)) is None
