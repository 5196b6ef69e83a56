"""Keeping a Relay database: prune old threads, export them, count what is stored, back up.

    flask --app app relay prune --older-than 90d [--dry-run]
    flask --app app relay export [--owner OWNER] [--output FILE]
    flask --app app relay stats [--json]
    flask --app app relay backup PATH

All of them are safe while the server runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path

import click
from flask import current_app
from sqlalchemy import Table, delete, exists, func, make_url, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models import ACTIVE_STATUSES, Message, StreamDelta, Thread, db, utcnow
from models.archive import thread_json
from models.uploads import MessageUpload, Upload, remove_unused

from . import relay

DURATION = re.compile(r"([1-9][0-9]{0,4})([dhm])")  # at most 99999 (273 years)
UNITS = {"d": "days", "h": "hours", "m": "minutes"}
PRUNE_BATCH = 200  # threads per transaction: SQLite's write lock is held briefly
EXPORT_FORMAT = "relay.threads"  # a list of thread exports (models.archive), with owners


def parse_duration(raw: str) -> dt.timedelta:
    """`90d`, `12h` or `30m` as a timedelta; ValueError with a message otherwise."""
    match = DURATION.fullmatch(raw.strip())
    if not match:
        raise ValueError(f"{raw!r} is not a duration: write a whole number and a unit, "
                         "d (days), h (hours) or m (minutes), such as 90d, 12h or 30m.")
    return dt.timedelta(**{UNITS[match[2]]: int(match[1])})


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            return parse_duration(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


def reads_the_database(command: Callable) -> Callable:
    """A database that is away or not migrated is a one-line error, not a traceback."""

    @wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SQLAlchemyError as err:
            db.session.rollback()
            reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
            raise click.ClickException(
                f"The database could not be used ({reason}). Is DATABASE_URL right, and "
                "has `flask --app app db upgrade` been run?") from None

    return run


# -- prune ---------------------------------------------------------------------------------
def dependents(table: Table) -> list[tuple[Table, list[tuple[str, str]]]]:
    """The tables whose rows hang off `table`'s rows by a foreign key, with the column
    pairs (child column, parent column); a table referring to itself is left out."""
    found = []
    for child in db.metadata.sorted_tables:
        if child is table:
            continue
        pairs = [(fk.parent.name, fk.column.name) for fk in child.foreign_keys
                 if fk.column.table is table]
        if pairs:
            found.append((child, pairs))
    return found


def _delete_tree(session: Session, table: Table, where, counts: dict[str, int], *,
                 dry_run: bool) -> None:
    """Delete (or count) the rows of `table` matching `where` and, first, every row of any
    table that refers to them, however deep. Search indexes follow by their triggers
    (SQLite) or are indexes of these very tables (PostgreSQL)."""
    for child, pairs in dependents(table):
        for child_column, parent_column in pairs:
            parents = select(table.c[parent_column]).where(where)
            _delete_tree(session, child, child.c[child_column].in_(parents), counts,
                         dry_run=dry_run)
    if dry_run:
        found = session.scalar(select(func.count()).select_from(table).where(where))
    else:
        found = session.execute(delete(table).where(where)).rowcount
    counts[table.name] = counts.get(table.name, 0) + (found or 0)


def prunable(cutoff: dt.datetime):
    """Threads whose last activity (the thread's, any of its messages') is before `cutoff`
    and that have no reply pending or being written."""
    busy = exists().where(Message.thread_id == Thread.id,
                          (Message.updated_at >= cutoff) | Message.status.in_(ACTIVE_STATUSES))
    return (Thread.updated_at < cutoff) & ~busy


def prune(session: Session, older_than: dt.timedelta, *, dry_run: bool = False,
          now: dt.datetime | None = None) -> dict[str, int]:
    """Delete the threads idle for `older_than`, with everything that hangs off them, in
    small transactions; rows deleted (or, with `dry_run`, that would be) by table."""
    cutoff = (now or utcnow()) - older_than
    counts: dict[str, int] = {"threads": 0}
    last_id = 0
    while True:
        batch = list(session.scalars(
            select(Thread.id).where(prunable(cutoff), Thread.id > last_id)
            .order_by(Thread.id).limit(PRUNE_BATCH)))
        if not batch:
            break
        last_id = batch[-1]
        _lock_threads(session, batch)
        # Checked again under the lock: a prompt sent meanwhile keeps its thread.
        chosen = Thread.__table__.c.id.in_(
            select(Thread.id).where(Thread.id.in_(batch), prunable(cutoff)))
        files = _files_only_in(session, chosen)
        _delete_tree(session, Thread.__table__, chosen, counts, dry_run=dry_run)
        # Their files go too, with their stored bytes, unless other threads carry them.
        counts["uploads"] = counts.get("uploads", 0) + len(files)
        if not dry_run:
            remove_unused(session, files)
        if dry_run:
            session.rollback()
        else:
            session.commit()
    order = [t.name for t in db.metadata.sorted_tables]  # parents first
    return dict(sorted(counts.items(), key=lambda item: order.index(item[0])))


def _files_only_in(session: Session, chosen) -> list[int]:
    """The uploads that messages of the `chosen` threads carry and no other message does."""
    theirs = select(Message.id).where(Message.thread_id.in_(select(Thread.id).where(chosen)))
    carried = select(MessageUpload.upload_id).where(MessageUpload.message_id.in_(theirs))
    elsewhere = select(MessageUpload.upload_id).where(MessageUpload.message_id.not_in(theirs))
    return list(session.scalars(select(Upload.id).where(Upload.id.in_(carried),
                                                        Upload.id.not_in(elsewhere))))


def _lock_threads(session: Session, ids: list[int]) -> None:
    """Keep these threads from changing until the transaction ends: PostgreSQL locks the
    rows (a new message's foreign key check waits for it); SQLite takes its write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Thread.id).where(Thread.id.in_(ids)).with_for_update())
    else:
        session.execute(update(Thread).where(Thread.id.in_(ids)).values(owner=Thread.owner)
                        .execution_options(synchronize_session=False))


@relay.command("prune")
@click.option("--older-than", "older_than", type=Duration(), required=True,
              help="Idle for at least this long: 90d, 12h, 30m.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@reads_the_database
def prune_command(older_than: dt.timedelta, dry_run: bool) -> None:
    """Delete threads idle for a while, with all they hold.

    Their messages, deltas, search entries and the files no other thread carries go too;
    a thread with a reply still pending or being written is always kept.
    """
    counts = prune(db.session, older_than, dry_run=dry_run)
    verb = "Would delete" if dry_run else "Deleted"
    others = ", ".join(f"{n} {name}" for name, n in counts.items()
                       if name != "threads" and n)
    threads = counts["threads"]
    click.echo(f"{verb} {threads} thread{'' if threads == 1 else 's'} idle for "
               f"{_words(older_than)}"
               + (f" ({others})." if others else "."))


def _words(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    for size, unit in ((1440, "day"), (60, "hour"), (1, "minute")):
        if minutes % size == 0:
            n = minutes // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return str(delta)


# -- export ----------------------------------------------------------------------------------
def exported_threads(session: Session, owner: str | None = None) -> Iterator[dict]:
    """Each thread (one owner's, or everyone's) as its JSON export plus its `owner`,
    oldest first; a reply still being written carries the text persisted so far."""
    from views.pages import message_texts

    query = select(Thread).order_by(Thread.id)
    if owner is not None:
        query = query.where(Thread.owner == owner)
    for thread in session.scalars(query.execution_options(yield_per=100)):
        messages = list(session.scalars(
            select(Message).where(Message.thread_id == thread.id).order_by(Message.id)))
        yield {**thread_json(thread, messages, message_texts(messages)), "owner": thread.owner}


@relay.command("export")
@click.option("--owner", default=None, help="Only this owner's threads.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="File to write (default: standard output).")
@reads_the_database
def export_command(owner: str | None, output: str) -> None:
    """Write threads as JSON (everyone's, or one owner's).

    Each thread in the list is an export that the thread import accepts as it is.
    """
    out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
    written = 0
    try:
        out.write(f'{{"format": "{EXPORT_FORMAT}", "version": 1, '
                  f'"exported_at": "{utcnow().isoformat()}Z", "threads": [')
        for entry in exported_threads(db.session, owner):
            out.write(",\n" if written else "\n")
            out.write(json.dumps(entry, ensure_ascii=False))
            written += 1
        out.write("\n]}\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if output != "-":
        click.echo(f"Exported {written} threads to {output}.", err=True)


# -- stats -----------------------------------------------------------------------------------
def statistics(session: Session, now: dt.datetime | None = None) -> dict:
    """What the database holds: threads, messages by status, replies of the last 24 hours,
    deltas of replies still being written, and the database's size in bytes."""
    since = (now or utcnow()) - dt.timedelta(hours=24)
    by_status = dict(session.execute(
        select(Message.status, func.count()).group_by(Message.status)).all())
    return {
        "threads": session.scalar(select(func.count()).select_from(Thread)),
        "messages": sum(by_status.values()),
        "messages_by_status": dict(sorted(by_status.items())),
        "replies_last_24h": session.scalar(
            select(func.count()).select_from(Message)
            .where(Message.role == "assistant", Message.created_at >= since)),
        "deltas_pending": session.scalar(select(func.count()).select_from(StreamDelta)),
        "replies_with_deltas": session.scalar(
            select(func.count(func.distinct(StreamDelta.message_id)))),
        "database_bytes": database_bytes(session),
    }


def database_bytes(session: Session) -> int:
    """The size of the whole database (SQLite: its pages, the write-ahead log aside)."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(text("SELECT pg_database_size(current_database())"))
    pages = session.scalar(text("PRAGMA page_count"))
    return pages * session.scalar(text("PRAGMA page_size"))


@relay.command("stats")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@reads_the_database
def stats_command(as_json: bool) -> None:
    """Count what the database holds."""
    stats = statistics(db.session)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    click.echo(f"threads              {stats['threads']}")
    click.echo(f"messages             {stats['messages']}")
    for status, n in stats["messages_by_status"].items():
        click.echo(f"  {status:<18} {n}")
    click.echo(f"replies, last 24 h   {stats['replies_last_24h']}")
    click.echo(f"deltas pending       {stats['deltas_pending']} "
               f"(of {stats['replies_with_deltas']} replies)")
    click.echo(f"database size        {_size(stats['database_bytes'])}")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# -- backup ----------------------------------------------------------------------------------
def sqlite_backup(source: Path, target: Path) -> None:
    """Copy a live SQLite database to `target` with SQLite's online backup, in one step: a
    single read transaction, so the copy is one consistent moment however the server is
    writing (in WAL mode writers go on meanwhile). The copy is checked before it is kept."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    busy_ms = current_app.config["SQLITE_BUSY_TIMEOUT_MS"]
    src = sqlite3.connect(source, timeout=busy_ms / 1000)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # pages=-1: everything in one step
            verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
            # One file, no -wal beside it: the copy opens anywhere, read-only media too.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    if verdict != "ok":
        partial.unlink(missing_ok=True)
        raise click.ClickException(f"The copy failed SQLite's integrity check: {verdict}")
    os.replace(partial, target)


@relay.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def backup_command(path: Path, force: bool) -> None:
    """Copy the SQLite database to PATH, safely while the server runs.

    PostgreSQL is backed up with pg_dump instead.
    """
    url = make_url(current_app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() != "sqlite":
        raise click.ClickException(
            "This database is PostgreSQL: back it up with pg_dump, e.g. "
            "`pg_dump --format=custom --file relay.dump \"$DATABASE_URL\"`, "
            "and restore with pg_restore.")
    if not url.database or url.database == ":memory:":
        raise click.ClickException("An in-memory SQLite database has nothing to back up.")
    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; choose another name or add --force.")
    if not path.parent.is_dir():
        raise click.ClickException(f"{path.parent} is not a directory.")
    source = Path(url.database)
    if not source.exists():
        raise click.ClickException(f"The database {source} does not exist.")
    sqlite_backup(source, path)
    click.echo(f"Backed up {source} to {path} ({_size(path.stat().st_size)}, "
               "integrity check ok).")
