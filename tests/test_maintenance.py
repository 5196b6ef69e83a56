"""Operations from the flask CLI: prune, export, stats and backup, on what they really store."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest
from sqlalchemy import func, select, text

from app import create_app
from config import TestConfig
from models import Message, StreamDelta, Thread, db, utcnow
from models.archive import import_thread
from ops.maintenance import dependents, parse_duration
from tests.conftest import made_app

DAY = dt.timedelta(days=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_app(request, tmp_path):
    """An app on a fresh SQLite file, or on a PostgreSQL database of its own."""
    if request.param == "sqlite":
        with made_app(tmp_path) as app:
            yield app
        return
    import psycopg

    server = request.getfixturevalue("postgres_url")
    base, _, name = server.rpartition("/")
    name += "_ops"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with made_app(tmp_path, DATABASE_URL=f"{base}/{name}") as app:
            yield app
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(app, word: str, age: dt.timedelta, *, owner: str = "owner-a",
         reply_status: str = "complete", delta: bool = True) -> int:
    """A thread last touched `age` ago: a prompt and two versions of its reply (one with a
    persisted delta), `word` in its title and every text so search can find them."""
    when = utcnow() - age
    with app.app_context():
        thread = Thread(owner=owner, title=f"About {word}", created_at=when, updated_at=when)
        db.session.add(thread)
        db.session.flush()
        prompt = Message(thread_id=thread.id, role="user", content=f"Tell me of {word}",
                         created_at=when, updated_at=when)
        db.session.add(prompt)
        db.session.flush()
        replies = [Message(thread_id=thread.id, parent_id=prompt.id, role="assistant",
                           content=f"{word} is {n}", status=status, model="m",
                           usage={"prompt_tokens": 3, "completion_tokens": 4},
                           created_at=when, updated_at=when)
                   for n, status in enumerate(("complete", reply_status))]
        db.session.add_all(replies)
        db.session.flush()
        if delta:
            db.session.add(StreamDelta(message_id=replies[1].id, start=len(replies[1].content),
                                       end=len(replies[1].content) + 6, text=" more "))
        thread.active_leaf_id = replies[1].id
        db.session.commit()
        return thread.id


def rows(app, thread_id: int) -> dict[str, int]:
    """How many rows each table holds for one thread, search indexes included."""
    with app.app_context():
        ids = select(Message.id).where(Message.thread_id == thread_id).scalar_subquery()
        found = {
            "threads": db.session.scalar(select(func.count()).where(Thread.id == thread_id)),
            "messages": db.session.scalar(
                select(func.count()).where(Message.thread_id == thread_id)),
            "stream_deltas": db.session.scalar(
                select(func.count()).where(StreamDelta.message_id.in_(ids))),
        }
        if db.engine.dialect.name == "sqlite":
            title = db.session.scalar(select(Thread.title).where(Thread.id == thread_id))
            word = (title or f"gone{thread_id}").split()[-1]
            found["threads_fts"] = db.session.scalar(text(
                "SELECT count(*) FROM threads_fts WHERE threads_fts MATCH :w"), {"w": word})
            found["messages_fts"] = db.session.scalar(text(
                "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH :w"), {"w": word})
        return found


def fts_words(app, *words: str) -> dict[str, int]:
    """Search-index hits for each word (SQLite's FTS5 tables; PostgreSQL indexes the
    tables themselves)."""
    with app.app_context():
        if db.engine.dialect.name != "sqlite":
            return {}
        # The index must agree with the tables it indexes, row for row.
        db.session.execute(text("INSERT INTO messages_fts(messages_fts) "
                                "VALUES ('integrity-check')"))
        db.session.execute(text("INSERT INTO threads_fts(threads_fts) "
                                "VALUES ('integrity-check')"))
        return {w: db.session.scalar(text(
            "SELECT (SELECT count(*) FROM messages_fts WHERE messages_fts MATCH :w) + "
            "(SELECT count(*) FROM threads_fts WHERE threads_fts MATCH :w)"), {"w": w})
            for w in words}


def cli(app, *args: str):
    return app.test_cli_runner().invoke(args=["relay", *args], catch_exceptions=False)


# -- prune ---------------------------------------------------------------------------------
def test_every_table_that_hangs_off_a_thread_is_known_to_prune(any_app):
    """A table with a foreign key to threads or messages (now or added later) is pruned
    with them: the schema's own foreign keys say which."""
    by_parent = {t.name: {c.name for c, _ in dependents(t)} for t in db.metadata.sorted_tables}
    assert "messages" in by_parent["threads"]
    assert "stream_deltas" in by_parent["messages"]
    for table in db.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name in ("threads", "messages") and table is not fk.column.table:
                assert table.name in by_parent[fk.column.table.name]


def test_prune_deletes_old_threads_table_by_table_and_leaves_newer_ones(any_app):
    old = [seed(any_app, f"ancient{i}", 100 * DAY) for i in range(3)]
    recent = seed(any_app, "recent", 10 * DAY)
    # Made long ago but written to yesterday: its last activity is recent.
    revived = seed(any_app, "revived", 200 * DAY)
    with any_app.app_context():
        db.session.execute(Message.__table__.update()
                           .where(Message.thread_id == revived, Message.role == "user")
                           .values(updated_at=utcnow() - DAY))
        db.session.commit()
    kept_before = {t: rows(any_app, t) for t in (recent, revived)}
    assert all(n for n in kept_before[recent].values())
    assert fts_words(any_app, "ancient0").get("ancient0", 1) > 0

    dry = cli(any_app, "prune", "--older-than", "90d", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "Would delete 3 threads idle for 90 days (9 messages, 3 stream_deltas)." \
        in dry.output
    assert all(rows(any_app, t)["messages"] == 3 for t in old)  # the dry run deleted nothing

    done = cli(any_app, "prune", "--older-than", "90d")
    assert done.exit_code == 0, done.output
    assert "Deleted 3 threads idle for 90 days (9 messages, 3 stream_deltas)." in done.output
    for thread_id in old:
        assert set(rows(any_app, thread_id).values()) == {0}, rows(any_app, thread_id)
    assert {t: rows(any_app, t) for t in (recent, revived)} == kept_before
    assert set(fts_words(any_app, "ancient0", "ancient1", "ancient2").values()) <= {0}
    assert set(fts_words(any_app, "recent", "revived").values()) <= {4}
    with any_app.app_context():  # nothing else was touched
        assert db.session.scalar(select(func.count()).select_from(Thread)) == 2
        assert db.session.scalar(select(func.count()).select_from(Message)) == 6

    again = cli(any_app, "prune", "--older-than", "90d")
    assert "Deleted 0 threads" in again.output


@pytest.mark.parametrize("status", ["pending", "streaming"])
def test_prune_never_deletes_a_thread_with_a_running_reply(any_app, status):
    running = seed(any_app, "running", 365 * DAY, reply_status=status)
    idle = seed(any_app, "idle", 365 * DAY)
    before = rows(any_app, running)
    result = cli(any_app, "prune", "--older-than", "30m")
    assert result.exit_code == 0, result.output
    assert "Deleted 1 thread " in result.output
    assert rows(any_app, running) == before
    assert rows(any_app, idle)["threads"] == 0


def test_prune_reads_hours_and_minutes(app):
    two_hours = seed(app, "twohours", dt.timedelta(hours=2))
    assert "Deleted 0 threads idle for 3 hours" in cli(app, "prune", "--older-than",
                                                       "3h").output
    assert rows(app, two_hours)["threads"] == 1
    assert "Deleted 1 thread idle for 90 minutes" in cli(app, "prune", "--older-than",
                                                          "90m").output
    assert rows(app, two_hours)["threads"] == 0


@pytest.mark.parametrize("bad", ["90", "d", "0d", "-5d", "1.5d", "90 days", "90D", "3w", "",
                                 "9999999d"])
def test_a_bad_duration_is_a_clear_error_and_deletes_nothing(app, bad):
    old = seed(app, "kept", 400 * DAY)
    result = app.test_cli_runner().invoke(args=["relay", "prune", "--older-than", bad])
    assert result.exit_code == 2
    assert "Invalid value for '--older-than'" in result.output
    assert "such as 90d, 12h or 30m" in result.output
    assert "Traceback" not in result.output
    assert rows(app, old)["threads"] == 1


def test_durations():
    assert parse_duration("90d") == 90 * DAY
    assert parse_duration("12h") == dt.timedelta(hours=12)
    assert parse_duration(" 30m ") == dt.timedelta(minutes=30)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("12")


# -- export ----------------------------------------------------------------------------------
def shape(entry: dict) -> dict:
    """What an export says, its ids replaced by positions (an import makes new ids)."""
    position = {m["id"]: i for i, m in enumerate(entry["messages"])}
    return {
        "title": entry["thread"]["title"],
        "active": position.get(entry["thread"]["active_leaf_id"]),
        "messages": [{k: v for k, v in m.items() if k not in ("id", "parent_id", "created_at")}
                     | {"parent": position.get(m["parent_id"])} for m in entry["messages"]],
    }


def test_export_round_trips_through_the_thread_import(any_app, tmp_path):
    first = seed(any_app, "alpha", 3 * DAY, owner="owner-a", delta=False)
    seed(any_app, "beta", 2 * DAY, owner="owner-b", delta=False)
    # A reply still being written is exported with the text persisted so far.
    seed(any_app, "gamma", DAY, owner="owner-a", reply_status="streaming")
    out = tmp_path / "all.json"
    result = cli(any_app, "export", "--output", str(out))
    assert result.exit_code == 0, result.output
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert exported["format"] == "relay.threads"
    entries = exported["threads"]
    assert [e["owner"] for e in entries] == ["owner-a", "owner-b", "owner-a"]
    assert entries[0]["thread"]["id"] == first
    assert entries[2]["messages"][2]["content"] == "gamma is 1 more "

    (tmp_path / "restored").mkdir()
    with made_app(tmp_path / "restored") as restored:
        with restored.app_context():
            for entry in entries:
                import_thread(entry, entry["owner"])
            db.session.commit()
        again = json.loads(cli(restored, "export").output)["threads"]
        # The import keeps everything but ids and times; a running reply becomes
        # `interrupted` (nothing generates it there), to be continued.
        for before, after in zip(entries, again, strict=True):
            assert after["owner"] == before["owner"]
            expected = shape(before)
            for message in expected["messages"]:
                if message["status"] == "streaming":
                    message["status"] = "interrupted"
            assert shape(after) == expected
        # The web import takes one entry of the list as it is.
        client = restored.test_client()
        page = client.get("/")
        token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        answer = client.post("/threads/import", json=entries[1],
                             headers={"X-CSRF-Token": token, "Accept": "application/json"})
        assert answer.status_code == 201, answer.text
        assert answer.json["messages"] == 3

    mine = json.loads(cli(any_app, "export", "--owner", "owner-b").output)["threads"]
    assert [e["thread"]["title"] for e in mine] == ["About beta"]
    assert json.loads(cli(any_app, "export", "--owner", "nobody").output)["threads"] == []


# -- stats -----------------------------------------------------------------------------------
def test_stats_match_the_database(any_app):
    seed(any_app, "yesterday", dt.timedelta(hours=2))
    seed(any_app, "lastweek", 7 * DAY, reply_status="interrupted")
    seed(any_app, "writing", dt.timedelta(minutes=1), reply_status="streaming")
    result = cli(any_app, "stats", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    with any_app.app_context():
        session = db.session
        assert stats["threads"] == session.scalar(select(func.count()).select_from(Thread)) == 3
        assert stats["messages"] == session.scalar(
            select(func.count()).select_from(Message)) == 9
        assert stats["messages_by_status"] == {"complete": 7, "interrupted": 1,
                                               "streaming": 1}
        assert stats["replies_last_24h"] == 4
        assert stats["deltas_pending"] == session.scalar(
            select(func.count()).select_from(StreamDelta)) == 3
        assert stats["replies_with_deltas"] == 3
        if db.engine.dialect.name == "sqlite":
            path = db.engine.url.database
            with sqlite3.connect(path) as raw:
                pages = raw.execute("PRAGMA page_count").fetchone()[0]
                size = raw.execute("PRAGMA page_size").fetchone()[0]
            assert stats["database_bytes"] == pages * size
        else:
            assert stats["database_bytes"] == session.scalar(
                text("SELECT pg_database_size(current_database())"))
    plain = cli(any_app, "stats").output
    assert "threads              3" in plain and "streaming" in plain


# -- backup ----------------------------------------------------------------------------------
def test_backup_copies_sqlite_and_refuses_to_overwrite(app, tmp_path):
    seed(app, "saved", DAY)
    target = tmp_path / "copy.sqlite3"
    result = cli(app, "backup", str(target))
    assert result.exit_code == 0, result.output
    assert "integrity check ok" in result.output
    with sqlite3.connect(target) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert copy.execute("SELECT title FROM threads").fetchall() == [("About saved",)]
    again = app.test_cli_runner().invoke(args=["relay", "backup", str(target)])
    assert again.exit_code == 1 and "exists" in again.output and "--force" in again.output
    assert cli(app, "backup", "--force", str(target)).exit_code == 0


def test_backup_of_postgresql_points_to_pg_dump(postgres_url, tmp_path):
    app = create_app(TestConfig, {"DATABASE_URL": postgres_url})
    try:
        result = app.test_cli_runner().invoke(args=["relay", "backup",
                                                    str(tmp_path / "x.dump")])
    finally:
        app.extensions["relay"].shutdown(timeout=2)
    assert result.exit_code == 1
    assert "pg_dump" in result.output
    assert not (tmp_path / "x.dump").exists()


def test_a_database_without_the_schema_is_a_clear_error(tmp_path):
    app = create_app(TestConfig, {"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"})
    try:
        result = app.test_cli_runner().invoke(args=["relay", "stats"])
    finally:
        app.extensions["relay"].shutdown(timeout=2)
    assert result.exit_code == 1
    assert "db upgrade" in result.output and "Traceback" not in result.output


@pytest.mark.server
def test_backup_while_a_server_writes_is_a_consistent_database(server_factory, upstream,
                                                               tmp_path):
    import subprocess
    import sys
    import threading
    from pathlib import Path

    from bench.fake_upstream import Reply
    from bench.relay_client import RelayClient, read_reply
    from bench.relay_server import ROOT

    from .test_server_failures import words

    relay = server_factory()
    browser = RelayClient(relay.base_url, timeout=120).open()
    sent = browser.send(browser.new_thread(),
                        upstream.script(Reply.words(words(6000), token_delay_s=0.02)))
    reply_id = sent["assistant_message"]["id"]
    stream = browser.stream(sent["stream_url"], timeout=120)
    read_reply(stream, stop_after=20)  # being written: a flush every 50 ms
    posting = threading.Event()
    posted: list[int] = []

    def post_prompts() -> None:  # more writers: new threads, prompts, short replies
        while not posting.is_set():
            thread = browser.new_thread()
            reply = browser.send(thread, upstream.script(Reply.words("short answer here")))
            posted.append(reply["assistant_message"]["id"])

    writer = threading.Thread(target=post_prompts, daemon=True)
    writer.start()
    flask = str(Path(sys.executable).parent / "flask")
    try:
        copies = []
        for n in range(2):
            copy = tmp_path / f"copy-{n}.sqlite3"
            done = subprocess.run([flask, "--app", "app", "relay", "backup", str(copy)],
                                  cwd=ROOT, env=relay.env, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
            copies.append(copy)
    finally:
        posting.set()
        writer.join(120)
        browser.post_json(f"/messages/{reply_id}/cancel")
    assert posted  # the server was written to while the copies were taken
    for copy in copies:
        with sqlite3.connect(copy) as db_copy:
            assert db_copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db_copy.execute("PRAGMA foreign_key_check").fetchall() == []
            db_copy.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
            # One moment: the reply being written is its text so far, whole, with no gap.
            content, status = db_copy.execute(
                "SELECT content, status FROM messages WHERE id = ?", (reply_id,)).fetchone()
            spans = db_copy.execute("SELECT start, \"end\", text FROM stream_deltas "
                                    "WHERE message_id = ? ORDER BY start",
                                    (reply_id,)).fetchall()
            assert status == "streaming" and spans
            offset = len(content)
            for start, end, text_ in spans:
                assert (start, end - start) == (offset, len(text_))
                offset = end
            assert words(6000).startswith(content + "".join(t for _, _, t in spans))


def attach(app, thread_id: int, name: str, data: bytes) -> int:
    """`data` as a text file carried by the thread's prompt; the upload's id."""
    from models.files import read_file
    from models.uploads import MessageUpload, new_upload

    with app.app_context():
        prompt = db.session.scalar(select(Message).where(Message.thread_id == thread_id,
                                                         Message.role == "user"))
        upload = new_upload(db.session, "owner-a", read_file(name, data))
        db.session.add(MessageUpload(message_id=prompt.id, upload_id=upload.id, position=0))
        db.session.commit()
        return upload.id


def test_prune_deletes_the_files_only_old_threads_carry(any_app):
    from models.uploads import Blob, MessageUpload, Upload

    old = seed(any_app, "ancient", 100 * DAY)
    recent = seed(any_app, "recent", 10 * DAY)
    alone = attach(any_app, old, "old.txt", b"only the old thread has this")
    shared_old = attach(any_app, old, "shared.txt", b"both threads carry these bytes")
    shared_new = attach(any_app, recent, "shared.txt", b"both threads carry these bytes")

    dry = cli(any_app, "prune", "--older-than", "90d", "--dry-run")
    assert "Would delete 1 thread idle for 90 days (3 messages, 2 uploads, " \
           "2 message_uploads, 1 stream_deltas)." in dry.output, dry.output
    done = cli(any_app, "prune", "--older-than", "90d")
    assert done.exit_code == 0, done.output
    assert "(3 messages, 2 uploads, 2 message_uploads, 1 stream_deltas)." in done.output
    with any_app.app_context():
        left = set(db.session.scalars(select(Upload.id)))
        assert left == {shared_new}
        assert alone not in left and shared_old not in left
        # The shared bytes stay (the recent thread's file names them); the others went.
        blobs = set(db.session.scalars(select(Blob.data)))
        assert blobs == {b"both threads carry these bytes"}
        assert db.session.scalar(select(func.count()).select_from(MessageUpload)) == 1
