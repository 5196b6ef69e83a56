"""thread titles a person chose; full-text search over titles and messages

Revision ID: 0003s
Revises: 0003m

SQLite: FTS5 tables over threads.title and messages.content, kept in step by triggers and
filled from the rows already there. PostgreSQL: GIN indexes on to_tsvector('simple', …)
of the same columns (the search queries use the same expressions).
"""
from alembic import op
import sqlalchemy as sa


revision = '0003s'
down_revision = '0003m'
branch_labels = None
depends_on = None

TOKENIZER = "unicode61 remove_diacritics 2"
SQLITE_UP = (
    f"CREATE VIRTUAL TABLE threads_fts USING fts5(title, content='threads', "
    f"content_rowid='id', tokenize='{TOKENIZER}')",
    f"CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
    f"content_rowid='id', tokenize='{TOKENIZER}')",
    "CREATE TRIGGER threads_fts_insert AFTER INSERT ON threads BEGIN "
    "INSERT INTO threads_fts(rowid, title) VALUES (new.id, new.title); END",
    "CREATE TRIGGER threads_fts_delete AFTER DELETE ON threads BEGIN "
    "INSERT INTO threads_fts(threads_fts, rowid, title) VALUES ('delete', old.id, old.title); "
    "END",
    "CREATE TRIGGER threads_fts_update AFTER UPDATE OF title ON threads BEGIN "
    "INSERT INTO threads_fts(threads_fts, rowid, title) VALUES ('delete', old.id, old.title); "
    "INSERT INTO threads_fts(rowid, title) VALUES (new.id, new.title); END",
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
    # The rows already there.
    "INSERT INTO threads_fts(threads_fts) VALUES ('rebuild')",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
)
SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS messages_fts_update",
    "DROP TRIGGER IF EXISTS messages_fts_delete",
    "DROP TRIGGER IF EXISTS messages_fts_insert",
    "DROP TRIGGER IF EXISTS threads_fts_update",
    "DROP TRIGGER IF EXISTS threads_fts_delete",
    "DROP TRIGGER IF EXISTS threads_fts_insert",
    "DROP TABLE IF EXISTS messages_fts",
    "DROP TABLE IF EXISTS threads_fts",
)
POSTGRES_UP = (
    "CREATE INDEX ix_threads_title_search ON threads "
    "USING gin (to_tsvector('simple', title))",
    "CREATE INDEX ix_messages_content_search ON messages "
    "USING gin (to_tsvector('simple', content))",
)
POSTGRES_DOWN = (
    "DROP INDEX IF EXISTS ix_messages_content_search",
    "DROP INDEX IF EXISTS ix_threads_title_search",
)


def upgrade():
    # A plain ADD COLUMN: a batch copy of `threads` would cascade-delete every message.
    op.add_column('threads', sa.Column('title_chosen', sa.Boolean(), nullable=False,
                                       server_default=sa.false()))
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_UP, "postgresql": POSTGRES_UP}.get(dialect, ()):
        op.execute(statement)


def downgrade():
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_DOWN, "postgresql": POSTGRES_DOWN}.get(dialect, ()):
        op.execute(statement)
    op.drop_column('threads', 'title_chosen')
