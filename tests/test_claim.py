"""The claim: however many workers race for one pending reply, exactly one generates it."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from app import database_url
from models import PENDING, STREAMING, Message, Thread, db
from streaming.claim import claim_reply

CLAIMERS = 8


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'claim.sqlite3'}"
        engine = create_engine(url, connect_args={"timeout": 10})
    else:
        url = database_url(request.getfixturevalue("postgres_url"), tmp_path)
        engine = create_engine(url, pool_size=CLAIMERS)
    db.metadata.drop_all(engine)
    db.metadata.create_all(engine)
    yield engine
    db.metadata.drop_all(engine)
    engine.dispose()


def pending_reply(engine) -> int:
    with Session(engine) as session:
        thread = Thread(owner="o")
        session.add(thread)
        session.flush()
        message = Message(thread_id=thread.id, role="assistant", status=PENDING)
        session.add(message)
        session.commit()
        return message.id


def test_two_claimers_one_wins(engine):
    mid = pending_reply(engine)
    with Session(engine) as first, Session(engine) as second:
        assert claim_reply(first, mid).id == mid
        assert claim_reply(second, mid) is None
    with Session(engine) as session:
        assert session.get(Message, mid).status == STREAMING


def test_many_concurrent_claimers_exactly_one_wins(engine):
    for _ in range(5):
        mid = pending_reply(engine)
        barrier = threading.Barrier(CLAIMERS)
        results: list[bool] = []
        lock = threading.Lock()

        def claim(mid=mid, barrier=barrier, results=results, lock=lock):
            with Session(engine) as session:
                barrier.wait()
                won = claim_reply(session, mid) is not None
            with lock:
                results.append(won)

        threads = [threading.Thread(target=claim) for _ in range(CLAIMERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == CLAIMERS
        assert results.count(True) == 1


def test_a_reply_that_is_not_pending_cannot_be_claimed(engine):
    mid = pending_reply(engine)
    with Session(engine) as session:
        session.get(Message, mid).status = "complete"
        session.commit()
        assert claim_reply(session, mid) is None
