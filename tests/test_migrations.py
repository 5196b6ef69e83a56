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
from sqlalchemy import inspect

from app import create_app
from config import TestConfig
from models import db

MODEL_TABLES = {"threads", "messages", "stream_deltas"}


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
            connection, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, db.metadata)


def tables() -> set[str]:
    return set(inspect(db.engine).get_table_names())


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
