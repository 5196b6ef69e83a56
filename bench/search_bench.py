"""Search latency: `GET /search?q=` over N messages, on SQLite (FTS5) and PostgreSQL.

    .venv/bin/python -m bench.search_bench                       # SQLite, 10,000 messages
    .venv/bin/python -m bench.search_bench --postgres postgresql://postgres@127.0.0.1/test

One owner holds every message (the worst case: nothing is filtered out before matching).
Each query runs `--repeat` times through the app (view, query, snippets, JSON); the figures
are p50, p95 and max in milliseconds, with the number of hits.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from pathlib import Path

from app import create_app
from bench.harness import percentile
from config import TestConfig
from models import Message, Thread, db, utcnow

WORDS = (
    "stream", "reply", "model", "token", "database", "worker", "socket", "browser", "thread",
    "message", "delta", "cursor", "offset", "search", "index", "snippet", "latency", "gevent",
    "flask", "htmx", "sqlite", "postgres", "lighthouse", "harbour", "puffin", "tide",
    "compass", "lantern", "voyage", "anchor",
)
QUERIES = {"common word": "stream", "rare word": "zeppelin", "prefix": "lightho",
           "two words": "harbour lantern", "no match": "xylophone", "operators": 'a" OR (b*'}
MESSAGES_PER_THREAD = 50


def fill(count: int, seed: int = 7) -> str:
    """`count` messages of 20 to 120 words in threads of 50; one in 500 names a zeppelin."""
    rng = random.Random(seed)
    owner = "bench-owner"
    threads = [Thread(owner=owner, title=" ".join(rng.choices(WORDS, k=4)))
               for _ in range(max(1, count // MESSAGES_PER_THREAD))]
    db.session.add_all(threads)
    db.session.flush()
    now = utcnow()
    rows = []
    for i in range(count):
        words = rng.choices(WORDS, k=rng.randint(20, 120))
        if i % 500 == 0:
            words.insert(rng.randrange(len(words)), "zeppelin")
        rows.append({"thread_id": threads[i // MESSAGES_PER_THREAD % len(threads)].id,
                     "role": "user" if i % 2 == 0 else "assistant", "content": " ".join(words),
                     "status": "complete", "cancel_requested": False, "created_at": now,
                     "updated_at": now})
    db.session.execute(db.insert(Message), rows)
    db.session.commit()
    return owner


def measure(database_url: str, count: int, repeat: int) -> dict[str, dict]:
    app = create_app(TestConfig, {"DATABASE_URL": database_url})
    results = {}
    with app.app_context():
        db.create_all()
        started = time.perf_counter()
        owner = fill(count)
        db.session.execute(db.text("ANALYZE"))  # the statistics autovacuum would keep
        db.session.commit()
        print(f"  filled {count} messages in {time.perf_counter() - started:.1f} s")
        client = app.test_client()
        with client.session_transaction() as session:
            session["owner"] = owner
        for name, query in QUERIES.items():
            times, hits = [], 0
            for _ in range(repeat):
                t0 = time.perf_counter()
                answer = client.get("/search", query_string={"q": query},
                                    headers={"Accept": "application/json"})
                times.append((time.perf_counter() - t0) * 1000)
                assert answer.status_code == 200, answer.text
                hits = len(answer.json)
            results[name] = {"hits": hits, "p50": percentile(times, 50),
                             "p95": percentile(times, 95), "max": max(times)}
        db.session.remove()
        db.drop_all()
        db.engine.dispose()
    app.extensions["relay"].shutdown(timeout=2)
    return results


def report(label: str, results: dict[str, dict]) -> None:
    print(f"{label}: ms per request (p50 / p95 / max), hits")
    for name, row in results.items():
        print(f"  {name:12} {row['p50']:7.2f} {row['p95']:7.2f} {row['max']:7.2f}  "
              f"{row['hits']:3d}  q={QUERIES[name]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--postgres", metavar="URL",
                        help="a PostgreSQL server URL: a scratch database is made and dropped")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'search.sqlite3'}"
        report(f"SQLite FTS5, {args.messages} messages", measure(url, args.messages, args.repeat))
    if args.postgres:
        import psycopg

        name = f"relay_search_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = args.postgres.rsplit("/", 1)[0] + "/" + name
            report(f"PostgreSQL full-text, {args.messages} messages",
                   measure(url, args.messages, args.repeat))
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
