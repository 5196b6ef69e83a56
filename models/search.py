"""Full-text search over a person's thread titles and messages.

SQLite: two FTS5 tables over `threads.title` and `messages.content` (external content, kept
in step by triggers). PostgreSQL: GIN indexes on `to_tsvector('simple', …)` of the same
columns. Both match every word of the query, the last one as a prefix (results appear while
a word is being typed), list title hits before message hits (SQLite: best first by bm25;
PostgreSQL: newest first), and mark the matched words in a short snippet.
Migration 0003s builds the same objects on an existing database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from markupsafe import Markup, escape
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from . import db

MAX_QUERY_CHARS = 200
MAX_TERMS = 12
# Private-use characters mark the matches in the database's snippet; the view escapes the
# snippet's text and only then turns them into <mark> tags.
OPEN, CLOSE = "\ue000", "\ue001"
# PostgreSQL's headline drops what its parser takes for HTML tags: angle brackets travel
# through it as these stand-ins and come back as themselves.
LT, GT = "\ue002", "\ue003"

SQLITE_TOKENIZER = "unicode61 remove_diacritics 2"
SQLITE_SCHEMA = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS threads_fts USING fts5(title, content='threads', "
    f"content_rowid='id', tokenize='{SQLITE_TOKENIZER}')",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(content, content='messages', "
    f"content_rowid='id', tokenize='{SQLITE_TOKENIZER}')",
    "CREATE TRIGGER IF NOT EXISTS threads_fts_insert AFTER INSERT ON threads BEGIN "
    "INSERT INTO threads_fts(rowid, title) VALUES (new.id, new.title); END",
    "CREATE TRIGGER IF NOT EXISTS threads_fts_delete AFTER DELETE ON threads BEGIN "
    "INSERT INTO threads_fts(threads_fts, rowid, title) VALUES ('delete', old.id, old.title); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS threads_fts_update AFTER UPDATE OF title ON threads BEGIN "
    "INSERT INTO threads_fts(threads_fts, rowid, title) VALUES ('delete', old.id, old.title); "
    "INSERT INTO threads_fts(rowid, title) VALUES (new.id, new.title); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); END",
    # Only a change of the text reindexes: heartbeats and status changes do not.
    "CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
)
SQLITE_TABLES = ("threads_fts", "messages_fts")
POSTGRES_SCHEMA = (
    "CREATE INDEX IF NOT EXISTS ix_threads_title_search ON threads "
    "USING gin (to_tsvector('simple', title))",
    "CREATE INDEX IF NOT EXISTS ix_messages_content_search ON messages "
    "USING gin (to_tsvector('simple', content))",
)


def is_search_table(name: str) -> bool:
    """True for the FTS5 tables and their shadow tables (not part of the models' schema)."""
    return any(name == t or name.startswith(t + "_") for t in SQLITE_TABLES)


@event.listens_for(db.metadata, "after_create")
def _create_search_schema(_metadata, connection: Connection, **_kw) -> None:
    statements = {"sqlite": SQLITE_SCHEMA, "postgresql": POSTGRES_SCHEMA}.get(
        connection.dialect.name, ())
    for statement in statements:
        connection.exec_driver_sql(statement)


@event.listens_for(db.metadata, "before_drop")
def _drop_search_schema(_metadata, connection: Connection, **_kw) -> None:
    if connection.dialect.name == "sqlite":
        for table in SQLITE_TABLES:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


@dataclass(frozen=True)
class Hit:
    thread_id: int
    message_id: int | None  # None: the thread's title matched
    title: str
    snippet: Markup
    archived: bool = False

    def to_json(self) -> dict:
        return {"thread_id": self.thread_id, "message_id": self.message_id,
                "title": self.title, "snippet": str(self.snippet), "archived": self.archived}


def query_terms(query: str) -> list[str]:
    """The words of a query; every operator, quote and bracket is dropped, so no query is
    ever a syntax error in either database."""
    return re.findall(r"\w+", query)[:MAX_TERMS]


def search(session: Session, owner: str, query: str, limit: int = 30) -> list[Hit]:
    """`owner`'s threads whose title, then messages whose text, match every word of `query`
    (best first); empty when the query has no words. Archived threads are found, temporary
    ones never."""
    terms = query_terms(query)
    if not terms:
        return []
    if session.get_bind().dialect.name == "postgresql":
        rows = _postgres(session, owner, terms, limit)
    else:
        rows = _sqlite(session, owner, terms, limit)
    return [Hit(thread_id, message_id, title, marked(snippet), bool(archived))
            for thread_id, message_id, title, snippet, archived in rows]


def _sqlite(session: Session, owner: str, terms: list[str], limit: int) -> list:
    # Each word a quoted string (so never an operator), the last one a prefix.
    match = " ".join(f'"{t}"' for t in terms) + "*"
    params = {"match": match, "owner": owner, "limit": limit, "open": OPEN, "close": CLOSE}
    titles = session.execute(text(
        "SELECT t.id, NULL, t.title, highlight(threads_fts, 0, :open, :close), t.archived "
        "FROM threads_fts JOIN threads t ON t.id = threads_fts.rowid "
        "WHERE threads_fts MATCH :match AND t.owner = :owner AND NOT t.temporary "
        "ORDER BY threads_fts.rank LIMIT :limit"), params).all()
    messages = session.execute(text(
        "SELECT m.thread_id, m.id, t.title, "
        "snippet(messages_fts, 0, :open, :close, '…', 16), t.archived "
        "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
        "JOIN threads t ON t.id = m.thread_id "
        "WHERE messages_fts MATCH :match AND t.owner = :owner AND NOT t.temporary "
        "ORDER BY messages_fts.rank LIMIT :limit"), params).all()
    return [*titles, *messages][:limit]


HEADLINE_OPTIONS = (f'StartSel="{OPEN}", StopSel="{CLOSE}", MaxWords=24, MinWords=8, '
                    'MaxFragments=2, FragmentDelimiter=" … "')


def _postgres(session: Session, owner: str, terms: list[str], limit: int) -> list:
    # Words are letters, digits and underscores only: quoted, they are plain lexemes.
    tsquery = " & ".join(f"'{t}'" for t in terms) + ":*"
    params = {"query": tsquery, "owner": owner, "limit": limit, "options": HEADLINE_OPTIONS,
              "brackets": LT + GT}
    titles = session.execute(text(
        "SELECT t.id, NULL, t.title, "
        "ts_headline('simple', translate(t.title, '<>', :brackets), q, :options), t.archived "
        "FROM threads t, to_tsquery('simple', :query) q "
        "WHERE to_tsvector('simple', t.title) @@ q AND t.owner = :owner AND NOT t.temporary "
        "ORDER BY t.updated_at DESC, t.id DESC LIMIT :limit"), params).all()
    # Newest first: ranking would compute every match's tsvector again (the index holds
    # none). The matches come from the GIN index first (MATERIALIZED: else, for a word
    # that is rare, the planner walks the primary key backwards testing every row); the
    # snippet is made for the page of hits only.
    messages = session.execute(text(
        "WITH matched AS MATERIALIZED ("
        "  SELECT id, thread_id FROM messages "
        "  WHERE to_tsvector('simple', content) @@ to_tsquery('simple', :query)), "
        "hit AS (SELECT matched.id, matched.thread_id, t.title, t.archived FROM matched "
        "  JOIN threads t ON t.id = matched.thread_id "
        "  WHERE t.owner = :owner AND NOT t.temporary "
        "  ORDER BY matched.id DESC LIMIT :limit) "
        "SELECT hit.thread_id, hit.id, hit.title, "
        "ts_headline('simple', translate(m.content, '<>', :brackets), "
        "to_tsquery('simple', :query), :options), hit.archived "
        "FROM hit JOIN messages m ON m.id = hit.id ORDER BY hit.id DESC"), params).all()
    return [*titles, *messages][:limit]


def marked(snippet: str | None) -> Markup:
    """The snippet as safe HTML: its text escaped, its matches in <mark> (balanced)."""
    out: list[str] = []
    inside = False
    snippet = (snippet or "").replace(LT, "<").replace(GT, ">")
    for part in re.split(f"([{OPEN}{CLOSE}])", snippet):
        if part == OPEN and not inside:
            out.append("<mark>")
            inside = True
        elif part == CLOSE and inside:
            out.append("</mark>")
            inside = False
        elif part not in (OPEN, CLOSE):
            out.append(str(escape(part)))
    if inside:
        out.append("</mark>")
    return Markup("".join(out))
