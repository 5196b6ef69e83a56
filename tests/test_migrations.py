"""The Alembic migrations build exactly the models' schema, and walk down and up again."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from app import create_app
from config import TestConfig
from models import Thread, db
from models.search import is_search_table
from models.tree import ThreadTree

MODEL_TABLES = {"threads", "messages", "stream_deltas", "users", "account_sessions", "invites",
                "folders", "blobs", "uploads", "message_uploads"}


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """Alembic's env.py runs logging.config.fileConfig; undo it for the tests that follow."""
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved = {name: (logger.level, logger.disabled, logger.propagate, list(logger.handlers))
             for name, logger in logging.root.manager.loggerDict.items()
             if isinstance(logger, logging.Logger)}
    yield
    root.setLevel(saved_root[0])
    root.handlers[:] = saved_root[1]
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        level, disabled, propagate, handlers = saved.get(
            name, (logging.NOTSET, False, True, []))
        logger.setLevel(level)
        logger.disabled = disabled
        logger.propagate = propagate
        logger.handlers[:] = handlers


@pytest.fixture
def fresh_app(tmp_path) -> Iterator[Flask]:
    """An app on an empty SQLite file: no create_all, only what the migrations build."""
    app = create_app(TestConfig, {"DATABASE_URL": f"sqlite:///{tmp_path / 'migrated.sqlite3'}"})
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def schema_differences() -> list:
    """What autogenerate would write to turn the database into the models' schema."""
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True,
                              "include_name": _models_only})
        return compare_metadata(context, db.metadata)


SEARCH_INDEXES = {"ix_threads_title_search", "ix_messages_content_search"}  # PostgreSQL's


def _models_only(name, type_, parent_names) -> bool:
    """The models' schema: not the full-text search objects, which live outside it."""
    if type_ == "index" and name in SEARCH_INDEXES:
        return False
    return not (type_ == "table" and is_search_table(name))


def tables() -> set[str]:
    return {t for t in inspect(db.engine).get_table_names() if not is_search_table(t)}


def search_objects() -> set[tuple[str, str]]:
    """The full-text tables and triggers SQLite holds (type, name)."""
    with db.engine.connect() as connection:
        return {(kind, name) for kind, name in connection.exec_driver_sql(
            "SELECT type, name FROM sqlite_master WHERE type = 'trigger' "
            "OR (type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%')")}


def current_revision() -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def script_directory(app: Flask) -> ScriptDirectory:
    return ScriptDirectory.from_config(app.extensions["migrate"].migrate.get_config())


def test_the_comparison_sees_a_database_without_tables(fresh_app):
    # Guards the tests below against a comparison that could never find anything.
    added = {diff[1].name for diff in schema_differences() if diff[0] == "add_table"}
    assert added == MODEL_TABLES


def test_migrations_have_a_single_head(fresh_app):
    assert len(script_directory(fresh_app).get_heads()) == 1


def test_upgrade_builds_exactly_the_models_schema(fresh_app):
    upgrade()
    assert tables() == MODEL_TABLES | {"alembic_version"}
    assert schema_differences() == []
    assert current_revision() == script_directory(fresh_app).get_current_head()


def test_downgrade_to_base_then_upgrade_again_rebuilds_the_schema(fresh_app):
    upgrade()
    downgrade(revision="base")
    assert tables() - {"alembic_version"} == set()
    assert current_revision() is None
    upgrade()
    assert schema_differences() == []
    assert current_revision() == script_directory(fresh_app).get_current_head()


def test_a_migrated_database_serves_a_conversation(fresh_app):
    upgrade()
    client = fresh_app.test_client()
    page = client.get("/")
    token = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    created = client.post("/threads", headers={"X-CSRF-Token": token,
                                               "Accept": "application/json"})
    assert created.status_code == 201
    thread_id = created.json["thread"]["id"]
    sent = client.post(f"/threads/{thread_id}/messages", json={"content": "hello"},
                       headers={"X-CSRF-Token": token, "Accept": "application/json"})
    assert sent.status_code == 201
    stream = client.get(sent.json["stream_url"])
    assert b"event: done" in stream.data
    reply = client.get(f"/messages/{sent.json['assistant_message']['id']}",
                       headers={"Accept": "application/json"}).json
    assert reply["status"] == "complete"
    relay = fresh_app.extensions["relay"]
    for greenlet in list(relay._headless):
        greenlet.kill(block=False)
    relay.writer.stop()


def test_upgrade_builds_the_search_index_create_all_builds(fresh_app, tmp_path):
    upgrade()
    migrated = search_objects()
    other = create_app(TestConfig, {"DATABASE_URL": f"sqlite:///{tmp_path / 'made.sqlite3'}"})
    with other.app_context():
        db.create_all()
        made = search_objects()
        db.engine.dispose()
    assert migrated == made
    assert {("table", "messages_fts"), ("table", "threads_fts")} <= migrated
    assert len([kind for kind, _ in migrated if kind == "trigger"]) == 6


def test_upgrade_keeps_and_indexes_the_rows_already_there(fresh_app):
    upgrade(revision="0002")
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO threads (id, owner, title, created_at, updated_at) "
            "VALUES (1, 'someone', 'Old lighthouse notes', '2024-01-01', '2024-01-01')")
        connection.exec_driver_sql(
            "INSERT INTO messages (thread_id, role, content, status, cancel_requested, "
            "created_at, updated_at) VALUES (1, 'user', 'tell me about puffins', 'complete', "
            "0, '2024-01-01', '2024-01-01')")
    upgrade()
    from models.search import search

    hits = search(db.session, "someone", "puffin")
    assert [(h.thread_id, h.message_id is not None) for h in hits] == [(1, True)]
    assert "<mark>puffins</mark>" in str(hits[0].snippet)
    assert [h.message_id for h in search(db.session, "someone", "lighthouse")] == [None]
    assert search(db.session, "someone else", "puffins") == []
    # A plain ADD COLUMN: the thread and its message are still there, the title automatic.
    assert db.session.get(Thread, 1).title_chosen is False
# -- conversation trees (0003): an existing database keeps every message, now on one path ------
OLD_THREADS = {1: ["user", "assistant", "user", "assistant"], 2: ["user", "assistant"], 3: []}


def seed_old_schema() -> dict[int, list[int]]:
    """Threads and messages as a database at revision 0002 holds them, interleaved by id;
    a reply still being written keeps a delta."""
    ids: dict[int, list[int]] = {t: [] for t in OLD_THREADS}
    with db.engine.begin() as conn:
        for thread_id in OLD_THREADS:
            conn.execute(text("INSERT INTO threads (id, owner, title, created_at, updated_at) "
                              "VALUES (:id, 'o', 't', :now, :now)"),
                         {"id": thread_id, "now": "2024-01-01 00:00:00"})
        order = [(t, role) for step in range(4) for t, roles in OLD_THREADS.items()
                 if step < len(roles) for role in [roles[step]]]
        for message_id, (thread_id, role) in enumerate(order, start=1):
            conn.execute(text(
                "INSERT INTO messages (id, thread_id, role, content, status, cancel_requested, "
                "created_at, updated_at) VALUES (:id, :t, :role, :content, :status, false, "
                ":now, :now)"),
                {"id": message_id, "t": thread_id, "role": role, "content": f"text {message_id}",
                 "status": "streaming" if message_id == len(order) else "complete",
                 "now": "2024-01-01 00:00:00"})
            ids[thread_id].append(message_id)
        conn.execute(text('INSERT INTO stream_deltas (message_id, start, "end", text) '
                          "VALUES (:m, 0, 5, 'hello')"), {"m": len(order)})
    return ids


def check_trees_upgrade() -> None:
    upgrade(revision="0002")
    ids = seed_old_schema()
    upgrade()
    assert schema_differences() == []
    with db.engine.connect() as conn:
        parents = dict(conn.execute(text("SELECT id, parent_id FROM messages")).all())
        leaves = dict(conn.execute(text("SELECT id, active_leaf_id FROM threads")).all())
        deltas = conn.execute(text("SELECT message_id, text FROM stream_deltas")).all()
    for thread_id, messages in ids.items():
        # Each message follows the one before it in its own thread; nothing is lost.
        assert [parents.pop(m) for m in messages] == [None, *messages][:len(messages)]
        assert leaves[thread_id] == (messages[-1] if messages else None)
    assert parents == {}
    assert [tuple(d) for d in deltas] == [(ids[1][-1], "hello")]
    # The app shows and sends the same conversation as before.
    thread = db.session.get(Thread, 1)
    assert ThreadTree.load(db.session, thread).path() == ids[1]
    db.session.close()  # its read lock would hold up the downgrade's ALTER TABLE
    downgrade(revision="0002")
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM messages")).scalar_one() == 6
        assert conn.execute(text("SELECT count(*) FROM stream_deltas")).scalar_one() == 1


def test_trees_migration_puts_existing_threads_on_one_path_on_sqlite(fresh_app):
    check_trees_upgrade()


@pytest.fixture
def fresh_postgres_app(postgres_url) -> Iterator[Flask]:
    """An app on an empty PostgreSQL database of its own."""
    import psycopg

    base, _, _ = postgres_url.rpartition("/")
    name = f"{postgres_url.rpartition('/')[2]}_trees"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    app = create_app(TestConfig, {"DATABASE_URL": f"{base}/{name}"})
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_trees_migration_puts_existing_threads_on_one_path_on_postgresql(fresh_postgres_app):
    check_trees_upgrade()
