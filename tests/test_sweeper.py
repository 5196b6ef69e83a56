"""The sweeper on a real SQLite file with an injected `now`: stale replies, unclaimed prompts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models import (
    COMPLETE,
    INTERRUPTED,
    PENDING,
    STREAMING,
    Message,
    StreamDelta,
    Thread,
)
from streaming.sweeper import INTERRUPTED_REASON, Sweeper

NOW = dt.datetime(2030, 1, 2, 12, 0, 0)
STALE_AFTER_S = 30.0
UNCLAIMED_AFTER_S = 60.0


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


@pytest.fixture
def sessions(engine):
    return sessionmaker(engine, expire_on_commit=False)


class Recorder:
    """Stands in for hub.publish and engine.claim_and_start."""

    def __init__(self) -> None:
        self.published: list[tuple[int, dict]] = []
        self.started: list[int] = []

    def publish(self, thread_id: int, event: dict) -> None:
        self.published.append((thread_id, event))

    def start(self, message_id: int) -> object:
        self.started.append(message_id)
        return object()  # what a successful claim returns: the new generation


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make_sweeper(session_factory, recorder: Recorder, now=lambda: NOW) -> Sweeper:
    return Sweeper(session_factory, stale_after_s=STALE_AFTER_S,
                   unclaimed_after_s=UNCLAIMED_AFTER_S, interval_s=5.0,
                   publish=recorder.publish, start=recorder.start, now=now)


@pytest.fixture
def thread_id(engine) -> int:
    with Session(engine) as session:
        thread = Thread(owner="owner")
        session.add(thread)
        session.commit()
        return thread.id


def add_message(engine, thread_id: int, *, role: str = "assistant", status: str,
                content: str = "", heartbeat_at: dt.datetime | None = None,
                updated_at: dt.datetime | None = None,
                deltas: Sequence[str] = ()) -> int:
    """A message, and contiguous deltas after its content."""
    with Session(engine) as session:
        message = Message(thread_id=thread_id, role=role, status=status, content=content,
                          heartbeat_at=heartbeat_at, created_at=updated_at or NOW,
                          updated_at=updated_at or NOW)
        session.add(message)
        session.flush()
        start = len(content)
        for text in deltas:
            session.add(StreamDelta(message_id=message.id, start=start,
                                    end=start + len(text), text=text))
            start += len(text)
        session.commit()
        return message.id


def row(engine, message_id: int) -> Message:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Message, message_id)


def delta_count(engine, message_id: int) -> int:
    with Session(engine) as session:
        return len(session.scalars(select(StreamDelta.id)
                                   .where(StreamDelta.message_id == message_id)).all())


# -- stale streaming replies ---------------------------------------------------------------------
def test_a_stale_streaming_reply_becomes_interrupted_with_exactly_its_flushed_text(
        engine, sessions, recorder, thread_id):
    deltas = ["Hello ", "wörld, ", "this is 🌍 ", "cut\r\noff"]
    mid = add_message(engine, thread_id, status=STREAMING, heartbeat_at=ago(31),
                      deltas=deltas)

    interrupted, started = make_sweeper(sessions, recorder).sweep()

    assert (interrupted, started) == ([mid], [])
    message = row(engine, mid)
    assert message.status == INTERRUPTED
    assert message.content == "".join(deltas)
    assert message.error == INTERRUPTED_REASON
    assert message.cancel_requested is False
    assert delta_count(engine, mid) == 0
    assert recorder.published == [(thread_id, {"type": "persisted", "message": mid,
                                               "end": len("".join(deltas)),
                                               "status": INTERRUPTED})]
    assert recorder.started == []


def test_a_stale_continued_reply_keeps_its_earlier_content_before_the_new_deltas(
        engine, sessions, recorder, thread_id):
    earlier = "Text from before the continue. "
    mid = add_message(engine, thread_id, status=STREAMING, content=earlier,
                      heartbeat_at=ago(120), deltas=["And the ", "new part"])

    make_sweeper(sessions, recorder).sweep()

    message = row(engine, mid)
    assert message.status == INTERRUPTED
    assert message.content == earlier + "And the new part"
    assert delta_count(engine, mid) == 0
    assert recorder.published[0][1]["end"] == len(earlier + "And the new part")


def test_a_stale_reply_without_deltas_is_interrupted_with_empty_text(
        engine, sessions, recorder, thread_id):
    mid = add_message(engine, thread_id, status=STREAMING, heartbeat_at=ago(31))
    make_sweeper(sessions, recorder).sweep()
    message = row(engine, mid)
    assert (message.status, message.content) == (INTERRUPTED, "")
    assert recorder.published == [(thread_id, {"type": "persisted", "message": mid, "end": 0,
                                               "status": INTERRUPTED})]


def test_a_stale_reply_keeps_only_the_contiguous_prefix_of_its_deltas(
        engine, sessions, recorder, thread_id):
    mid = add_message(engine, thread_id, status=STREAMING, heartbeat_at=ago(31),
                      deltas=["abc", "def"])
    with Session(engine) as session:  # a slice after a hole: never stitched across the gap
        session.add(StreamDelta(message_id=mid, start=10, end=13, text="xyz"))
        session.commit()
    make_sweeper(sessions, recorder).sweep()
    assert row(engine, mid).content == "abcdef"
    assert delta_count(engine, mid) == 0


def test_a_streaming_reply_with_a_fresh_heartbeat_is_untouched(
        engine, sessions, recorder, thread_id):
    mid = add_message(engine, thread_id, status=STREAMING, heartbeat_at=ago(29),
                      deltas=["still ", "going"])

    assert make_sweeper(sessions, recorder).sweep() == ([], [])

    message = row(engine, mid)
    assert (message.status, message.content, message.error) == (STREAMING, "", None)
    assert delta_count(engine, mid) == 2
    assert recorder.published == [] and recorder.started == []


def test_only_the_stale_reply_among_several_is_interrupted(engine, sessions, recorder,
                                                           thread_id):
    stale = add_message(engine, thread_id, status=STREAMING, heartbeat_at=ago(45),
                        deltas=["old"])
    fresh = add_message(engine, thread_id, status=STREAMING, heartbeat_at=ago(1),
                        deltas=["new"])
    done = add_message(engine, thread_id, status=COMPLETE, content="finished",
                       heartbeat_at=ago(3600), updated_at=ago(3600))

    interrupted, _ = make_sweeper(sessions, recorder).sweep()

    assert interrupted == [stale]
    assert row(engine, fresh).status == STREAMING
    assert (row(engine, done).status, row(engine, done).content) == (COMPLETE, "finished")


def test_a_reply_whose_writer_beat_after_the_sweeper_looked_is_left_streaming(
        engine, sessions, recorder, thread_id):
    mid = add_message(engine, thread_id, status=STREAMING, heartbeat_at=ago(31),
                      deltas=["abc"])
    opened = []

    def racing_sessions() -> Session:
        # Between the sweeper's look-up and its update, the live writer flushes: its
        # heartbeat is fresh again, so the reply is not stale any more.
        opened.append(1)
        if len(opened) == 2:
            with Session(engine) as session:
                session.execute(update(Message).where(Message.id == mid)
                                .values(heartbeat_at=NOW))
                session.commit()
        return sessions()

    interrupted, _ = make_sweeper(racing_sessions, recorder).sweep()

    assert interrupted == []
    assert row(engine, mid).status == STREAMING
    assert delta_count(engine, mid) == 1
    assert recorder.published == []


def test_a_second_sweep_finds_nothing_left_to_do(engine, sessions, recorder, thread_id):
    add_message(engine, thread_id, status=STREAMING, heartbeat_at=ago(31), deltas=["x"])
    sweeper = make_sweeper(sessions, recorder)
    assert sweeper.sweep()[0]
    assert sweeper.sweep() == ([], [])
    assert len(recorder.published) == 1


def test_staleness_follows_the_injected_clock(engine, sessions, recorder, thread_id):
    mid = add_message(engine, thread_id, status=STREAMING, heartbeat_at=NOW, deltas=["x"])
    clock = {"now": NOW}
    sweeper = make_sweeper(sessions, recorder, now=lambda: clock["now"])
    assert sweeper.sweep() == ([], [])
    clock["now"] = NOW + dt.timedelta(seconds=STALE_AFTER_S + 1)
    assert sweeper.sweep() == ([mid], [])


# -- pending replies nobody claimed --------------------------------------------------------------
def test_an_unclaimed_pending_reply_older_than_unclaimed_after_is_started(
        engine, sessions, recorder, thread_id):
    mid = add_message(engine, thread_id, status=PENDING, updated_at=ago(61))

    interrupted, started = make_sweeper(sessions, recorder).sweep()

    assert (interrupted, started) == ([], [mid])
    assert recorder.started == [mid]
    assert recorder.published == []


def test_a_fresh_pending_reply_is_left_for_its_driver(engine, sessions, recorder, thread_id):
    mid = add_message(engine, thread_id, status=PENDING, updated_at=ago(59))
    assert make_sweeper(sessions, recorder).sweep() == ([], [])
    assert recorder.started == []
    assert row(engine, mid).status == PENDING


def test_a_pending_reply_another_worker_claimed_first_is_not_reported_as_started(
        engine, sessions, thread_id):
    mid = add_message(engine, thread_id, status=PENDING, updated_at=ago(61))
    asked: list[int] = []

    def lost_claim(message_id: int) -> None:
        asked.append(message_id)
        return None  # claim_and_start: someone else has it

    sweeper = Sweeper(sessions, stale_after_s=STALE_AFTER_S,
                      unclaimed_after_s=UNCLAIMED_AFTER_S, interval_s=5.0,
                      publish=lambda *a: None, start=lost_claim, now=lambda: NOW)
    assert sweeper.sweep() == ([], [])
    assert asked == [mid]


# -- user messages -------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [COMPLETE, PENDING])
def test_a_user_message_is_never_touched(engine, sessions, recorder, thread_id, status):
    mid = add_message(engine, thread_id, role="user", status=status, content="My question",
                      heartbeat_at=ago(3600), updated_at=ago(3600))

    assert make_sweeper(sessions, recorder).sweep() == ([], [])

    message = row(engine, mid)
    assert (message.role, message.status, message.content, message.error) == \
        ("user", status, "My question", None)
    assert recorder.started == [] and recorder.published == []


def test_a_stale_reply_keeps_its_reasoning_and_its_running_step_is_stopped(
        engine, sessions, recorder, thread_id):
    message_id = add_message(engine, thread_id, status=STREAMING, heartbeat_at=ago(60),
                             deltas=["partial"])
    steps = [{"name": "calculator", "arguments": "{}", "result": "1", "status": "ok"},
             {"name": "current_time", "arguments": "{}", "result": None, "status": "running"}]
    with Session(engine) as session:
        session.execute(update(Message).where(Message.id == message_id)
                        .values(reasoning="thought", steps=steps))
        session.commit()
    assert make_sweeper(sessions, recorder).sweep()[0] == [message_id]
    stored = row(engine, message_id)
    assert (stored.status, stored.content, stored.reasoning) == (INTERRUPTED, "partial",
                                                                 "thought")
    assert stored.steps == [steps[0], {**steps[1], "status": "aborted"}]


@pytest.mark.parametrize("failure,traceback", [("database", False), ("bug", True)])
def test_background_work_outlives_a_failure_and_logs_a_busy_database_without_a_traceback(
        caplog, failure, traceback):
    import gevent
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from streaming.periodic import Periodic

    calls = []

    def work():
        calls.append(True)
        if len(calls) == 1:
            raise PoolTimeout("QueuePool limit reached") if failure == "database" else \
                KeyError("a bug")

    periodic = Periodic(work, 0.01, name="sweep")
    periodic.start()
    try:
        deadline = 200
        while len(calls) < 3 and deadline:
            gevent.sleep(0.01)
            deadline -= 1
    finally:
        periodic.stop()
    assert len(calls) >= 3  # the failure did not stop it
    assert "sweep failed" in caplog.text
    assert ("Traceback" in caplog.text) == traceback
