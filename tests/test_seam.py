"""The seam of a continued reply: repeated words dropped, glued words spaced, nothing lost."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm.base import CONTINUE_INSTRUCTION, Chunk, ProviderError, continuation_request
from streaming.seam import LOOKAHEAD_CHARS, join_continuation, mend_seam


def joined(partial: str, pieces: list[str], **chunk) -> tuple[str, list[Chunk]]:
    chunks = [Chunk(text=p) for p in pieces] + [Chunk(**chunk or {"finish_reason": "stop"})]
    out = list(join_continuation(partial, iter(chunks)))
    return "".join(c.text for c in out), out


@pytest.mark.parametrize(("partial", "continuation", "expected"), [
    # The model starts again from the sentence it was in: the repeat goes.
    ("The capital of France is Paris. The capital of Spain",
     "The capital of Spain is Madrid.", " is Madrid."),
    ("Streams resume from the last id they saw, so nothing",
     " the last id they saw, so nothing is lost.", " is lost."),
    # A finished word or clause, then a new word with no space: a space goes in.
    ("It ends here.", "Then it goes on.", " Then it goes on."),
    ("The list is long", "But it ends.", " But it ends."),
    # Already well joined: untouched.
    ("The capital of", " France is Paris.", " France is Paris."),
    ("Half a wo", "rd and the rest.", "rd and the rest."),  # stopped mid-word
    ("Line one\n", "Line two", "Line two"),
    ("A paragraph.\n\n", "\n\nAnother", "\n\nAnother"),
    ("Two spaces never ", " appear", "appear"),
    ("Code: `x", "` and more", "` and more"),
    # Short overlaps are as likely to be chance as a repeat: kept.
    ("I said no", "no means no.", "no means no."),
])
def test_the_seam_is_mended_as_a_reader_expects(partial, continuation, expected):
    assert mend_seam(partial, continuation, complete=True) == expected
    # Streamed in small pieces, the same result, and the finish reason is kept.
    pieces = [continuation[i:i + 3] for i in range(0, len(continuation), 3)]
    text, chunks = joined(partial, pieces)
    assert text == expected
    assert chunks[-1].finish_reason == "stop"


def test_text_after_the_seam_streams_untouched():
    partial = "The first half ends here."
    rest = "Then the second half goes on " + "and on " * 30
    pieces = [rest[i:i + 5] for i in range(0, len(rest), 5)]
    text, chunks = joined(partial, pieces, usage={"completion_tokens": 9})
    assert text == " " + rest
    assert chunks[-1].usage == {"completion_tokens": 9}
    # Held back only until the seam was decided: later pieces pass one for one.
    assert len(chunks) > len(pieces) - LOOKAHEAD_CHARS // 5


def test_a_failure_before_the_seam_is_decided_keeps_the_text():
    def failing():
        yield Chunk(text="Then")
        raise ProviderError("The model's connection dropped.")

    out = []
    with pytest.raises(ProviderError):
        for chunk in join_continuation("It stopped.", failing()):
            out.append(chunk.text)
    assert out == [" Then"]


def test_closing_the_join_closes_the_model_stream():
    closed = []

    def stream():
        try:
            while True:
                yield Chunk(text="word ")
        finally:
            closed.append(True)

    joined_stream = join_continuation("Some text.", stream())
    next(joined_stream)
    joined_stream.close()
    assert closed == [True]


@given(st.text(max_size=60), st.text(max_size=120))
def test_the_seam_only_drops_a_repeat_and_adds_at_most_a_space(partial, continuation):
    mended = mend_seam(partial, continuation, complete=True)
    body = continuation.lstrip()
    if mended.startswith(" ") and not continuation.startswith(" "):
        mended = mended[1:]
    # What remains is the continuation's own end: nothing invented, nothing reordered.
    assert continuation.endswith(mended) or body.endswith(mended)


def test_openai_style_models_are_asked_to_continue_a_partial_reply():
    history = [{"role": "user", "content": "Tell me"}, {"role": "assistant", "content": "Once"}]
    assert continuation_request(history) == [
        *history, {"role": "user", "content": CONTINUE_INSTRUCTION}]
    assert continuation_request(history[:1]) == history[:1]
