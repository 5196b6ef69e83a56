"""One prompt to several threads, in-process: each prompt counts against the posting limit."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models import Message, db
from tests.conftest import JSON, csrf_of, made_app, new_thread


@pytest.fixture
def limited(tmp_path):
    with made_app(tmp_path, RATE_LIMIT="4/minute") as app:
        yield app


def test_a_broadcast_counts_one_prompt_per_thread_against_the_limit(limited):
    client = limited.test_client()
    token = csrf_of(client)
    threads = [new_thread(client, token) for _ in range(5)]
    too_many = client.post("/threads/broadcast", json={"content": "hi", "thread_ids": threads},
                           headers={"X-CSRF-Token": token, **JSON})
    assert too_many.status_code == 429
    with limited.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message)) == 0
    # Another browser (its own limit) may send to as many threads as the limit allows.
    other = limited.test_client()
    token = csrf_of(other)
    threads = [new_thread(other, token) for _ in range(4)]
    answer = other.post("/threads/broadcast", json={"content": "hi", "thread_ids": threads},
                        headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 200, answer.text
    assert len(answer.json["started"]) == 4 and answer.json["failed"] == []
