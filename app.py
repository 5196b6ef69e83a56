"""Relay's application factory; `python app.py` serves it locally under gunicorn + gevent."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from flask import Flask
from flask_migrate import Migrate
from sqlalchemy import create_engine, event

from config import Config
from llm import make_provider
from models import db
from streaming.engine import ReplyEngine
from streaming.hub import InProcessHub

migrate = Migrate()


def create_app(config_class: type[Config] = Config, overrides: dict | None = None) -> Flask:
    """Build a Relay app: config, database, engine (provider, hub, writer) and blueprints."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(config_class)
    if overrides:
        app.config.update(overrides)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret_key(Path(app.instance_path))
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(
        app.config.get("DATABASE_URL"), Path(app.instance_path))
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        **engine_options(app.config["SQLALCHEMY_DATABASE_URI"]),
        **app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {})}

    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"))
    with app.app_context():
        db_engine = db.engine
    # The writer and sweeper get connections of their own: requests that hold pooled
    # connections (many at once) must never keep a reply from being saved.
    background_engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"],
                                      **background_engine_options(
                                          app.config["SQLALCHEMY_DATABASE_URI"]))
    for engine in (db_engine, background_engine):
        _tune_sqlite(engine, app.config["SQLITE_BUSY_TIMEOUT_MS"])

    provider = app.config.get("PROVIDER") or make_provider(app.config)
    app.extensions["relay"] = ReplyEngine(app, provider, InProcessHub(), db_engine=db_engine,
                                          background_engine=background_engine)

    from views import register_blueprints

    register_blueprints(app)
    if not app.debug and not app.testing:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app


def database_url(url: str | None, instance: Path) -> str:
    """DATABASE_URL with the psycopg 3 driver named; SQLite in the instance folder by default."""
    if not url:
        return f"sqlite:///{instance / 'relay.sqlite3'}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def engine_options(url: str) -> dict:
    """Pool for requests: greenlets hold a connection for one short transaction at a time."""
    if url.startswith("sqlite"):
        return {"pool_size": 10, "max_overflow": 90, "pool_timeout": 30}
    return {"pool_size": 10, "max_overflow": 40, "pool_pre_ping": True, "pool_timeout": 30}


def background_engine_options(url: str) -> dict:
    """A small pool for the delta writer and the sweeper alone."""
    options = {"pool_size": 2, "max_overflow": 2, "pool_timeout": 30}
    return options if url.startswith("sqlite") else {**options, "pool_pre_ping": True}


def _tune_sqlite(engine, busy_timeout_ms: int) -> None:
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # WAL lets readers run beside the one writer; busy_timeout waits out short locks.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _instance_secret_key(instance: Path) -> str:
    """A secret key kept in the instance folder, created once (safely across workers)."""
    path = instance / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        key = secrets.token_urlsafe(48)
        f.write(key)
    return key


if __name__ == "__main__":
    # One serving path for everyone: gunicorn with the gevent worker, never the dev server.
    here = Path(__file__).parent
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c",
                               str(here / "gunicorn.conf.py"), "wsgi:app"])
