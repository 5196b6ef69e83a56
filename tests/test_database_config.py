"""How Relay uses a database server's connections: bounded pools, PgBouncer-friendly options."""

from __future__ import annotations

from app import create_app
from config import TestConfig
from models import db


def test_postgres_pool_per_worker_is_bounded_by_the_settings(postgres_url):
    app = create_app(TestConfig, {"DATABASE_URL": postgres_url, "DB_POOL_SIZE": 3,
                                  "DB_MAX_OVERFLOW": 2, "DB_POOL_TIMEOUT_S": 2})
    with app.app_context():
        pool = db.engine.pool
        assert (pool.size(), pool._max_overflow, pool._timeout) == (3, 2, 2)
    background = app.extensions["relay"].writer._session_factory.kw["bind"].pool
    assert (background.size(), background._max_overflow) == (2, 0)


def test_prepared_statements_can_be_switched_off_for_pgbouncer(postgres_url):
    app = create_app(TestConfig, {"DATABASE_URL": postgres_url,
                                  "DB_PREPARED_STATEMENTS": False})
    with app.app_context(), db.engine.connect() as conn:
        assert conn.connection.dbapi_connection.prepare_threshold is None
    default = create_app(TestConfig, {"DATABASE_URL": postgres_url})
    with default.app_context(), db.engine.connect() as conn:
        assert conn.connection.dbapi_connection.prepare_threshold == 5  # psycopg's own


def test_the_hub_may_listen_on_its_own_database_url(postgres_url):
    direct = postgres_url.replace("127.0.0.1", "localhost")
    app = create_app(TestConfig, {"DATABASE_URL": postgres_url, "HUB_DATABASE_URL": direct})
    hub = app.extensions["relay"].hub
    assert hub.name == "postgres"
    assert "@localhost" in hub.conninfo and "+psycopg" not in hub.conninfo
