"""The delta writer: group commit, chunk boundaries, lag guard, heartbeats, completion, outages."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models import COMPLETE, PENDING, STREAMING, Message, StreamDelta, Thread
from streaming.chunking import make_chunker
from streaming.generation import Generation
from streaming.hub import InProcessHub
from streaming.reader import persisted_text_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def commits(engine) -> list[int]:
    """Every transaction commit on the engine, counted where it happens: the connection."""
    seen: list[int] = []
    event.listen(engine, "commit", lambda conn: seen.append(1))
    return seen


def make_messages(engine, n: int) -> list[int]:
    with Session(engine) as session:
        thread = Thread(owner="owner")
        session.add(thread)
        session.flush()
        messages = [Message(thread_id=thread.id, role="assistant", status=STREAMING)
                    for _ in range(n)]
        session.add_all(messages)
        session.commit()
        return [m.id for m in messages]


def make_writer(engine, clock, *, chunking="word", hub=None, **kw):
    from streaming.writer import DeltaWriter

    settings = {"throttle_s": 0.1, "max_lag_s": 1.0, "heartbeat_s": 5.0, **kw}
    return DeltaWriter(sessionmaker(engine, expire_on_commit=False), hub or InProcessHub(),
                       chunker=make_chunker(chunking), clock=clock, autostart=False,
                       **settings)


def deltas_of(engine, message_id: int) -> list[tuple[int, int, str]]:
    with Session(engine) as session:
        return [tuple(r) for r in session.execute(
            select(StreamDelta.start, StreamDelta.end, StreamDelta.text)
            .where(StreamDelta.message_id == message_id).order_by(StreamDelta.start))]


def test_one_commit_per_tick_however_many_streams(engine, commits):
    clock = FakeClock()
    writer = make_writer(engine, clock)
    ids = make_messages(engine, 50)
    generations = [Generation(i, 1, clock=clock) for i in ids]
    for g in generations:
        writer.add(g)
    commits.clear()

    for tick in range(3):
        for g in generations:
            g.append(f"word{tick} ")
        clock.advance(0.1)
        assert writer.tick() is True

    assert len(commits) == 3  # not 150
    assert writer.stats.commits == 3
    assert writer.stats.deltas == 150
    for g in generations:
        assert [d[2] for d in deltas_of(engine, g.message_id)] == ["word0 ", "word1 ", "word2 "]


def test_pending_text_is_cut_at_the_last_chunk_boundary(engine):
    clock = FakeClock()
    writer = make_writer(engine, clock)
    (mid,) = make_messages(engine, 1)
    gen = Generation(mid, 1, clock=clock)
    writer.add(gen)
    gen.append("Hello wor")
    writer.tick()
    assert deltas_of(engine, mid) == [(0, 6, "Hello ")]
    gen.append("ld, again")
    writer.tick()
    assert deltas_of(engine, mid) == [(0, 6, "Hello "), (6, 13, "world, ")]
    assert gen.persisted_end == 13


def test_text_without_a_boundary_is_flushed_once_it_lags_max_lag(engine):
    clock = FakeClock()
    writer = make_writer(engine, clock, max_lag_s=1.0)
    (mid,) = make_messages(engine, 1)
    gen = Generation(mid, 1, clock=clock)
    writer.add(gen)
    gen.append("Supercalifragilistic")
    clock.advance(0.5)
    assert writer.tick() is False
    assert deltas_of(engine, mid) == []
    clock.advance(0.6)
    assert writer.tick() is True
    assert deltas_of(engine, mid) == [(0, 20, "Supercalifragilistic")]


def test_heartbeat_is_refreshed_while_the_model_is_silent(engine, commits):
    clock = FakeClock()
    writer = make_writer(engine, clock, heartbeat_s=5.0)
    (mid,) = make_messages(engine, 1)
    writer.add(Generation(mid, 1, clock=clock))
    commits.clear()
    clock.advance(4.0)
    assert writer.tick() is False and commits == []
    clock.advance(1.5)
    assert writer.tick() is True and len(commits) == 1
    with Session(engine) as session:
        assert session.get(Message, mid).heartbeat_at is not None


def test_completion_is_one_transaction_with_content_status_usage_and_no_deltas(engine, commits):
    clock = FakeClock()
    writer = make_writer(engine, clock)
    (mid,) = make_messages(engine, 1)
    gen = Generation(mid, 1, clock=clock)
    writer.add(gen)
    gen.append("First part ")
    writer.tick()
    assert deltas_of(engine, mid)
    clock.advance(0.25)
    gen.append("and the end")
    gen.usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    clock.advance(0.5)
    gen.finish(COMPLETE)
    commits.clear()

    assert writer.tick() is True
    assert len(commits) == 1
    assert gen.finalized.is_set()
    assert writer.active_count == 0
    assert deltas_of(engine, mid) == []
    with Session(engine) as session:
        message = session.get(Message, mid)
        assert (message.status, message.content) == (COMPLETE, "First part and the end")
        assert message.usage["total_tokens"] == 8
        assert message.ttft_ms == 0 and message.duration_ms == 750


def test_a_failed_flush_keeps_the_text_and_the_next_tick_writes_it(engine):
    clock = FakeClock()
    writer = make_writer(engine, clock)
    (mid,) = make_messages(engine, 1)
    gen = Generation(mid, 1, clock=clock)
    writer.add(gen)
    gen.append("before the outage ")
    writer.tick()

    # Another process holds SQLite's write lock: our commits fail ("database is locked").
    blocker = sqlite3.connect(engine.url.database)
    blocker.execute("BEGIN IMMEDIATE")
    gen.append("during the outage ")
    assert writer.tick() is False
    gen.append("still down ")
    assert writer.tick() is False
    assert writer.stats.failures == 2
    blocker.rollback()
    blocker.close()

    assert writer.tick() is True
    rows = deltas_of(engine, mid)
    assert "".join(r[2] for r in rows) == "before the outage during the outage still down "
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))  # contiguous


class CloseFailsAfterCommit:
    """Sessions whose close fails once, after their COMMIT has landed: the connection died
    between the server's answer and its return to the pool (a database restart)."""

    def __init__(self, engine) -> None:
        self._factory = sessionmaker(engine, expire_on_commit=False)
        self.armed = False

    def __call__(self) -> Session:
        session = self._factory()
        if self.armed:
            self.armed = False
            close = session.close

            def close_then_fail() -> None:
                close()
                raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

            session.close = close_then_fail
        return session


def test_a_commit_that_landed_but_was_reported_failed_is_neither_repeated_nor_a_wedge(engine):
    from streaming.writer import DeltaWriter

    clock = FakeClock()
    sessions = CloseFailsAfterCommit(engine)
    writer = DeltaWriter(sessions, InProcessHub(), chunker=make_chunker("word"), clock=clock,
                         autostart=False, throttle_s=0.1, max_lag_s=1.0, heartbeat_s=5.0)
    first, other = make_messages(engine, 2)
    gen, bystander = Generation(first, 1, clock=clock), Generation(other, 1, clock=clock)
    writer.add(gen)
    writer.add(bystander)
    gen.append("one two ")
    bystander.append("alpha ")
    sessions.armed = True
    assert writer.tick() is False  # reported failed: it had landed
    assert writer.stats.failures == 1
    assert "".join(r[2] for r in deltas_of(engine, first)) == "one two "

    for word in ("three ", "four ", "five "):
        clock.advance(0.2)
        gen.append(word)
        bystander.append(word)
        assert writer.tick() is True  # no repeated start: no IntegrityError, every tick
    rows = deltas_of(engine, first)
    assert "".join(r[2] for r in rows) == "one two three four five "
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))  # contiguous
    assert "".join(r[2] for r in deltas_of(engine, other)) == "alpha three four five "

    gen.finish(COMPLETE)
    bystander.finish(COMPLETE)
    assert writer.tick() is True
    with Session(engine) as session:
        assert session.get(Message, first).content == "one two three four five "
        assert session.get(Message, other).content == "alpha three four five "


def test_a_stop_requested_in_the_database_reaches_the_generation(engine):
    clock = FakeClock()
    cancelled: list[int] = []
    writer = make_writer(engine, clock)
    writer._on_cancel = lambda g: cancelled.append(g.message_id)
    (mid,) = make_messages(engine, 1)
    gen = Generation(mid, 1, clock=clock)
    writer.add(gen)
    with Session(engine) as session:
        session.get(Message, mid).cancel_requested = True
        session.commit()
    gen.append("some text ")
    writer.tick()
    assert cancelled == [mid]


def test_each_flush_publishes_a_persisted_notice_with_offsets_only(engine):
    clock = FakeClock()
    hub = InProcessHub()
    writer = make_writer(engine, clock, hub=hub)
    (mid,) = make_messages(engine, 1)
    gen = Generation(mid, 7, clock=clock)
    writer.add(gen)
    with hub.subscribe("thread:7") as sub:
        gen.append("one two ")
        writer.tick()
        assert sub.get(timeout=1) == {"type": "persisted", "message": mid, "end": 8}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30),
       ticks=st.lists(st.booleans(), min_size=30, max_size=30),
       chunking=st.sampled_from(["word", "line", "sentence", "paragraph", "7", "re:[,;]"]))
def test_persisted_text_is_always_a_prefix_and_ends_exactly_the_models_text(
        engine, pieces, ticks, chunking):
    clock = FakeClock()
    writer = make_writer(engine, clock, chunking=chunking)
    (mid,) = make_messages(engine, 1)
    gen = Generation(mid, 1, clock=clock)
    writer.add(gen)
    expected = "".join(pieces)
    for piece, do_tick in zip(pieces, ticks, strict=False):
        gen.append(piece)
        clock.advance(0.3)
        if do_tick:
            writer.tick()
            with Session(engine) as session:
                persisted = persisted_text_after(session, session.get(Message, mid), 0)
            assert expected.startswith(persisted)
            assert len(persisted) == gen.persisted_end
    gen.finish(COMPLETE)
    writer.tick()
    with Session(engine) as session:
        assert session.get(Message, mid).content == expected


def test_the_running_writer_persists_every_reply_not_only_the_first(engine):
    """Its loop parks when idle; a reply added later must wake it (real greenlets, real time)."""
    import time

    import gevent

    writer = make_writer(engine, time.monotonic, throttle_s=0.02)
    writer._autostart = True
    for mid in make_messages(engine, 3):
        gen = Generation(mid, 1, clock=time.monotonic)
        writer.add(gen)
        for i in range(10):
            gen.append(f"word{i} ")
            gevent.sleep(0.03)
        # Persisted while it streamed, long before the reply ended.
        assert deltas_of(engine, mid), f"nothing persisted for reply {mid}"
        gen.finish(COMPLETE)
        writer.wake()
        assert gen.finalized.wait(5)
    writer.stop()


def test_a_stop_requested_in_the_database_arrives_while_the_model_is_silent(engine, commits):
    clock = FakeClock()
    cancelled: list[int] = []
    writer = make_writer(engine, clock)
    writer._on_cancel = lambda g: cancelled.append(g.message_id)
    (mid,) = make_messages(engine, 1)
    writer.add(Generation(mid, 1, clock=clock))
    commits.clear()
    with Session(engine) as session:
        session.get(Message, mid).cancel_requested = True
        session.commit()
    commits.clear()
    clock.advance(0.1)  # no text, no heartbeat due: a read, not a write
    assert writer.tick() is False
    assert cancelled == [mid]
    assert commits == []


def test_adaptive_throttle_flushes_a_long_reply_less_often(engine):
    clock = FakeClock()
    writer = make_writer(engine, clock, throttle_s=0.1, throttle_max_s=0.5, grow_chars=100)
    short_id, long_id = make_messages(engine, 2)
    short, long = Generation(short_id, 1, clock=clock), Generation(long_id, 1, clock=clock)
    for gen in (short, long):
        writer.add(gen)
    short.append("a ")
    long.append("x" * 299 + " ")  # 300 chars: every 0.1 x (1 + 300/100) = 0.4 s
    assert writer.tick()  # first words go out at once, whatever the length
    flushes = {short_id: 0, long_id: 0}
    for _ in range(8):  # 0.8 s of ticks
        clock.advance(0.1)
        short.append("b ")
        long.append("y ")
        before = {short_id: short.persisted_end, long_id: long.persisted_end}
        writer.tick()
        for gen in (short, long):
            flushes[gen.message_id] += gen.persisted_end != before[gen.message_id]
    assert flushes[short_id] == 8  # every tick: due within half a tick of 0.1 s
    assert flushes[long_id] == 2  # every 0.4 s
    assert writer.interval_for(long) == pytest.approx(0.1 * (1 + long.persisted_end / 100))
    huge = Generation(99, 1, clock=clock, prefix="")
    huge.persisted_end = 10_000
    assert writer.interval_for(huge) == 0.5  # capped


def test_tick_gaps_are_reported_as_p50_p99_max(engine):
    from streaming.writer import WriterStats

    stats = WriterStats()
    assert stats.gaps_ms() == {"n": 0, "p50": None, "p99": None, "max": None}
    stats.gaps.extend([0.1] * 98 + [0.15, 0.4])
    assert stats.gaps_ms() == {"n": 100, "p50": 100.0, "p99": 400.0, "max": 400.0}


def test_a_reply_whose_thread_was_deleted_is_dropped_and_the_others_are_still_written(engine):
    # Foreign keys enforced, as Relay's own SQLite connections and PostgreSQL do.
    engine.dispose()
    event.listen(engine, "connect",
                 lambda conn, _record: conn.execute("PRAGMA foreign_keys=ON"))
    clock = FakeClock()
    cancelled: list[int] = []
    writer = make_writer(engine, clock)
    writer._on_cancel = lambda g: cancelled.append(g.message_id)
    (kept,) = make_messages(engine, 1)
    (gone,) = make_messages(engine, 1)
    kept_gen, gone_gen = Generation(kept, 1, clock=clock), Generation(gone, 2, clock=clock)
    writer.add(kept_gen)
    writer.add(gone_gen)
    with Session(engine) as session:
        session.execute(StreamDelta.__table__.delete().where(StreamDelta.message_id == gone))
        session.execute(Message.__table__.delete().where(Message.id == gone))
        session.commit()
    kept_gen.append("still here ")
    gone_gen.append("into the void ")
    assert writer.tick() is True  # the deleted reply is let go, the other one written
    assert cancelled == [gone] and gone_gen.finalized.is_set()
    assert [r[2] for r in deltas_of(engine, kept)] == ["still here "]
    assert deltas_of(engine, gone) == []
    assert writer.active_count == 1


def test_reasoning_and_steps_are_written_each_tick_and_in_the_final_commit(engine, commits):
    clock = FakeClock()
    hub = InProcessHub()
    writer = make_writer(engine, clock, hub=hub)
    (mid,) = make_messages(engine, 1)
    gen = Generation(mid, 1, clock=clock)
    writer.add(gen)
    with hub.subscribe("thread:1") as subscription:
        gen.append_reasoning("Let me ")
        gen.start_step("calculator", '{"expression": "1+1"}')
        writer.tick()  # no text yet: the parts alone are written, and followers hear of it
        assert subscription.get(timeout=1)["message"] == mid
    with Session(engine) as session:
        row = session.get(Message, mid)
        assert row.reasoning == "Let me " and row.steps[0]["status"] == "running"
    assert (gen.persisted_reasoning_end, gen.persisted_step_events) == (7, 1)
    before = len(commits)
    writer.tick()  # nothing new: nothing written
    assert len(commits) == before
    gen.end_step(0, "ok", "2")
    gen.append("The answer is 2.")
    clock.advance(0.1)
    gen.finish(COMPLETE)
    writer.tick()
    with Session(engine) as session:
        row = session.get(Message, mid)
        assert (row.status, row.content, row.reasoning) == (COMPLETE, "The answer is 2.",
                                                            "Let me ")
        assert row.steps == [{"name": "calculator", "arguments": '{"expression": "1+1"}',
                              "result": "2", "status": "ok"}]
        assert row.reasoning_ms == 0
    assert deltas_of(engine, mid) == []


def test_a_reply_taken_over_by_a_newer_generation_is_never_written_by_the_old_one(engine):
    """A worker starved past STALE_AFTER_S has its reply marked interrupted by another
    worker's sweeper, and the reply is continued elsewhere. When the starved worker wakes,
    its generation must not write into the reply the newer generation now owns."""
    from streaming.claim import claim_reply

    clock = FakeClock()
    starved, other = make_writer(engine, clock), make_writer(engine, clock)
    stopped: list[int] = []
    starved._on_cancel = lambda g: stopped.append(g.message_id)
    (mid,) = make_messages(engine, 1)
    with Session(engine) as session:
        session.execute(update(Message).where(Message.id == mid).values(status=PENDING))
        session.commit()
        first = claim_reply(session, mid)
    old = Generation(mid, 1, clock=clock, claim=first.claim)
    starved.add(old)
    old.append("Written before the stall. ")
    assert starved.tick() is True
    # The sweeper gives it up for dead (its text folded in), then Continue claims it again.
    with Session(engine) as session:
        session.execute(StreamDelta.__table__.delete().where(StreamDelta.message_id == mid))
        session.execute(update(Message).where(Message.id == mid).values(
            status=PENDING, content="Written before the stall. "))
        session.commit()
        second = claim_reply(session, mid)
    assert second.claim == first.claim + 1
    new = Generation(mid, 1, clock=clock, prefix=second.content, claim=second.claim)
    other.add(new)
    new.append("The continued words.")
    old.append("Stale words from the woken worker.")  # its model read went on meanwhile
    starved.tick()
    assert stopped == [mid] and old.finalized.is_set() and starved.active_count == 0
    with Session(engine) as session:  # nothing of the old generation was written
        row = session.get(Message, mid)
        assert (row.status, row.content) == ("streaming", "Written before the stall. ")
    assert deltas_of(engine, mid) == []
    new.finish("complete")
    assert other.tick() is True
    with Session(engine) as session:
        row = session.get(Message, mid)
        assert (row.status, row.content) == (
            "complete", "Written before the stall. The continued words.")
    assert deltas_of(engine, mid) == []


def test_a_reply_started_while_a_tick_looks_at_ownership_is_not_let_go(engine):
    """The tick's look at which replies are still its own waits on the database; a reply
    that starts meanwhile (another greenlet adds it) is not among those looked at, and must
    not be taken for one that was taken over."""
    clock = FakeClock()
    writer = make_writer(engine, clock)
    stopped: list[int] = []
    writer._on_cancel = lambda g: stopped.append(g.message_id)
    first, second = make_messages(engine, 2)
    running = Generation(first, 1, clock=clock)
    writer.add(running)
    running.append("already running ")
    late = Generation(second, 1, clock=clock)

    def add_while_waiting(conn, cursor, statement, parameters, context, executemany):
        if "cancel_requested" in statement and writer.active_count == 1:
            writer.add(late)  # as the starting greenlet does while this one waits
    event.listen(engine, "before_cursor_execute", add_while_waiting)
    assert writer.tick() is True
    event.remove(engine, "before_cursor_execute", add_while_waiting)
    assert stopped == [] and writer.active_count == 2 and not late.finalized.is_set()
    late.append("started meanwhile ")
    assert writer.tick() is True
    assert [r[2] for r in deltas_of(engine, second)] == ["started meanwhile "]
