"""Relay's application factory; `python app.py` serves it locally under gunicorn + gevent."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask
from flask_migrate import Migrate
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import sessionmaker
from werkzeug.middleware.proxy_fix import ProxyFix

from config import Config
from llm import make_models
from llm.pricing import parse_prices
from models import db
from observability.logs import SECRET_SETTINGS, configure_logging
from observability.metrics import make_metrics
from observability.requests import init_request_observing, log_context
from streaming.engine import ReplyEngine
from streaming.hub import Hub, InProcessHub
from streaming.watcher import DatabaseWatcher

migrate = Migrate()


def _end_session(exc: BaseException | None) -> None:
    """End the request's session; a connection the server dropped meanwhile (a database
    restart) cannot be rolled back, so it is discarded rather than failing the request
    after its answer was made."""
    try:
        db.session.remove()
    except (OperationalError, InterfaceError) as err:
        logging.getLogger(__name__).warning("dropped a database connection that was lost: %s",
                                            getattr(err, "orig", None) or err)
        with contextlib.suppress(Exception):  # already broken: the pool replaces it
            db.session.invalidate()
        db.session.registry.clear()


def create_app(config_class: type[Config] = Config, overrides: dict | None = None) -> Flask:
    """Build a Relay app: config, database, engine (provider, hub, writer) and blueprints."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(config_class)
    if overrides:
        app.config.update(overrides)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    _check_public_url(app.config.get("PUBLIC_URL"))
    if app.config["LOG_FORMAT"] not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, not {app.config['LOG_FORMAT']!r}")
    from views.identity import address_networks

    app.extensions["relay_metrics_allow"] = address_networks(
        "METRICS_ALLOW", app.config["METRICS_ALLOW"] or "")
    app.extensions["relay_metrics"] = metrics = make_metrics(app.config)
    if app.config.get("TRUSTED_PROXIES"):
        hops = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops,
                                x_port=hops)

    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret_key(Path(app.instance_path))
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(
        app.config.get("DATABASE_URL"), Path(app.instance_path))
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        **engine_options(app.config["SQLALCHEMY_DATABASE_URI"], app.config),
        **app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {})}

    # A bad price table stops the start with a message naming it, never a 500 per request.
    app.extensions["relay_prices"] = parse_prices(app.config.get("MODEL_PRICES"))
    db.init_app(app)
    app.teardown_appcontext(_end_session)  # runs before Flask-SQLAlchemy's own
    migrate.init_app(app, db, directory=str(Path(__file__).parent / "migrations"))
    with app.app_context():
        db_engine = db.engine
    # The writer and sweeper get connections of their own: requests that hold pooled
    # connections (many at once) must never keep a reply from being saved.
    background_engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"],
                                      **background_engine_options(
                                          app.config["SQLALCHEMY_DATABASE_URI"], app.config))
    for engine in (db_engine, background_engine):
        _tune_sqlite(engine, app.config["SQLITE_BUSY_TIMEOUT_MS"])

    # A test may inject a catalog (MODELS) or one provider (PROVIDER).
    models = app.config.get("MODELS") or make_models(app.config, app.config.get("PROVIDER"))
    provider = models.default.provider
    hub = app.config.get("HUB") or make_hub(
        app.config, background_engine,
        is_local=lambda message_id: app.extensions["relay"].local(message_id) is not None)
    app.extensions["relay"] = ReplyEngine(app, provider, hub, db_engine=db_engine,
                                          background_engine=background_engine, models=models,
                                          metrics=metrics)

    from views import register_blueprints

    init_request_observing(app)  # first: every request gets its id, even one refused early
    register_blueprints(app)
    from ops import register_cli

    register_cli(app)
    if not app.debug and not app.testing:
        configure_logging(app.config["LOG_FORMAT"], context=log_context,
                          secrets=[app.config.get(name) for name in SECRET_SETTINGS])
        if app.config["LOG_FORMAT"] == "json":
            from flask.logging import default_handler

            app.logger.removeHandler(default_handler)  # its lines go through the root's
        # One line per model request is noise (and CPU) on the hot path; failures are
        # logged by the provider with their reason.
        logging.getLogger("httpx2").setLevel(logging.WARNING)
    return app


def _check_public_url(url: str | None) -> None:
    """A PUBLIC_URL that links cannot be built on stops the start with a message."""
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or \
            parts.fragment:
        raise ValueError(f"PUBLIC_URL must be an http(s) origin such as "
                         f"https://relay.example.com, not {url!r}")


def database_url(url: str | None, instance: Path) -> str:
    """DATABASE_URL with the psycopg 3 driver named; SQLite in the instance folder by default."""
    if not url:
        return f"sqlite:///{instance / 'relay.sqlite3'}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def engine_options(url: str, config) -> dict:
    """Pool for requests: greenlets hold a connection for one short transaction at a time.

    A server's connections are shared by every worker of every host, so its pool is
    bounded (DB_POOL_SIZE + DB_MAX_OVERFLOW); a request waits DB_POOL_TIMEOUT_S for one,
    then gets a 503. A SQLite connection is only a file handle.
    """
    if url.startswith("sqlite"):
        return {"pool_size": 10, "max_overflow": 90, "pool_timeout": 30}
    options = {"pool_size": config["DB_POOL_SIZE"], "max_overflow": config["DB_MAX_OVERFLOW"],
               "pool_timeout": config["DB_POOL_TIMEOUT_S"], "pool_pre_ping": True}
    if not config["DB_PREPARED_STATEMENTS"]:  # PgBouncer in transaction mode
        options["connect_args"] = {"prepare_threshold": None}
    return options


def background_engine_options(url: str, config) -> dict:
    """Two connections for the delta writer, the sweeper and the database watcher alone."""
    if url.startswith("sqlite"):
        return {"pool_size": 2, "max_overflow": 2, "pool_timeout": 30}
    return {"pool_size": 2, "max_overflow": 0, "pool_timeout": 30, "pool_pre_ping": True,
            **{k: v for k, v in engine_options(url, config).items() if k == "connect_args"}}


def make_hub(config, background_engine, *, is_local) -> Hub:
    """The fan-out backend the configuration asks for (HUB_BACKEND, REDIS_URL, DATABASE_URL)."""
    url = config["SQLALCHEMY_DATABASE_URI"]
    backend = config["HUB_BACKEND"]
    if backend == "auto":
        backend = "redis" if config.get("REDIS_URL") else \
            "postgres" if url.startswith("postgresql") else "local"
    watcher = DatabaseWatcher(sessionmaker(background_engine), lambda c, e: hub.receive(c, e),
                              lambda: hub.channels(),
                              interval_s=config["WATCH_INTERVAL_MS"] / 1000, is_local=is_local)
    if backend == "redis":
        if not config.get("REDIS_URL"):
            raise ValueError("HUB_BACKEND=redis needs REDIS_URL")
        from streaming.hub_redis import RedisHub

        hub = RedisHub(config["REDIS_URL"], watcher=watcher, prefix=config["HUB_PREFIX"])
    elif backend == "postgres":
        if not url.startswith("postgresql"):
            raise ValueError("HUB_BACKEND=postgres needs a PostgreSQL DATABASE_URL")
        from streaming.hub_postgres import PostgresHub

        listen_url = database_url(config.get("HUB_DATABASE_URL"), Path()) \
            if config.get("HUB_DATABASE_URL") else url
        conninfo = make_url(listen_url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        hub = PostgresHub(conninfo, watcher=watcher, prefix=config["HUB_PREFIX"])
    elif backend == "local":
        hub = InProcessHub(watcher=watcher)
    else:
        raise ValueError(f"HUB_BACKEND must be auto, redis, postgres or local, not {backend!r}")
    return hub


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
