"""Where the delta writer may cut pending text: every mode, its edge cases, and no lost text."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.chunking import CHUNK_MODES, make_chunker

# --- word ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("partial", 0),
        ("Hi there", 3),
        ("Hi there ", 9),
        (" lead", 1),
        ("a\tb\nc", 4),
        ("one  two", 5),
        ("caf\u00e9 na\u00efve", 5),
        ("\U0001f600\u3000\u3042", 2),  # IDEOGRAPHIC SPACE is whitespace too
    ],
)
def test_word_flushes_through_the_last_whitespace(text, expected):
    assert make_chunker("word")(text) == expected


# --- line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("no newline", 0), ("a\nb", 2), ("a\nb\n", 4), ("a\r\nb", 3), ("a\rb", 0)],
)
def test_line_flushes_through_the_last_lf(text, expected):
    assert make_chunker("line")(text) == expected


# --- sentence -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("Hi there", 0),
        ("Hi there.", 0),  # the sentence might go on ("Hi there.com")
        ("Hi there. How", 10),
        ("Hi there. ", 10),
        ("Hi.  Two spaces", 5),
        ("Really?! Yes", 9),
        ("Wait\u2026 what", 6),
        ("Wait... what", 8),
        ('He said "Hi." Then', 14),
        ("(Like this.) And", 13),
        ("\u00bbQuote.\u00ab no", 0),  # an opening \u00ab after the stop ends no sentence
        ("She said \u201cgo.\u201d Then", 15),
        ("Pi is 3.14 and e is 2.71", 0),
        ("One. Two. Thr", 10),
        ("no stop\nnext", 8),
        ("Done.\n  indented", 8),
        ("\u00bfQu\u00e9? \U0001f600 s\u00ed", 6),
    ],
)
def test_sentence_flushes_through_the_whitespace_after_the_last_sentence_end(text, expected):
    assert make_chunker("sentence")(text) == expected


def _timed(chunker, text: str) -> tuple[int, float]:
    started = time.perf_counter()
    cut = chunker(text)
    return cut, time.perf_counter() - started


# A linear pass takes about a millisecond on these inputs and a quadratic one over ten seconds,
# so the one-second bound only trips on a real regression.
@pytest.mark.parametrize(
    ("text", "expected"),
    [("." * 30_000, 0), ("a" + " " * 30_000 + "b", 0), (". " * 15_000 + "x", 30_000)],
)
def test_sentence_stays_linear_on_long_runs(text, expected):
    cut, seconds = _timed(make_chunker("sentence"), text)

    assert cut == expected
    assert seconds < 1.0


# --- paragraph ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("one line\nsecond line", 0),
        ("para\n\nnext", 6),
        ("para\r\n\r\nnext", 8),
        ("para\n   \t\nnext", 10),
        ("a\n\nb\n\nc", 6),
        ("a\n\n\n\nb", 5),
        ("para\n\n", 6),
        ("para\n", 0),
        ("\n\n", 2),
        ("para\n \u00a0\nnext", 8),  # NO-BREAK SPACE counts as whitespace
        ("para\n x\nnext", 0),
    ],
)
def test_paragraph_flushes_through_the_last_blank_line(text, expected):
    assert make_chunker("paragraph")(text) == expected


def test_paragraph_stays_linear_on_long_whitespace_runs():
    cut, seconds = _timed(make_chunker("paragraph"), "a\n" + " " * 30_000 + "b")

    assert cut == 0
    assert seconds < 1.0


# --- byte counts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "text", "expected"),
    [
        (4, "", 0),
        (4, "abc", 0),
        (4, "abcd", 4),
        (4, "abcdefghij", 8),
        ("4", "abcdefghij", 8),
        (1, "h\u00e9\U0001f600", 3),
        (2, "\u20ac", 0),  # 3 bytes pending, but the first 2 would split the euro sign
        (2, "\u20ac\u20ac\u20ac", 2),  # 9 bytes -> budget 8 -> two whole euro signs (6 bytes)
        (4, "a\u20acb", 2),  # budget 4 -> "a" + euro sign is exactly 4 bytes
        (3, "\U0001f600", 0),  # 4 bytes -> budget 3 -> the emoji does not fit
        (4, "\U0001f600\U0001f600x", 2),
        (5, "e\u0301e\u0301", 3),  # a combining mark is a code point of its own
    ],
)
def test_byte_count_flushes_whole_code_points_within_a_multiple_of_n_bytes(spec, text, expected):
    assert make_chunker(spec)(text) == expected


@given(n=st.integers(min_value=1, max_value=16), text=st.text())
def test_byte_count_cut_is_the_longest_prefix_within_budget(n, text):
    cut = make_chunker(n)(text)

    budget = len(text.encode()) // n * n
    assert len(text[:cut].encode()) <= budget
    assert cut == len(text) or len(text[: cut + 1].encode()) > budget


def test_byte_count_accepts_a_stray_surrogate():
    assert make_chunker(3)("a\ud800b") == 1  # the surrogate counts as 3 bytes


# --- regex --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "text", "expected"),
    [
        (r"re:\d+", "ab12cd3e", 7),
        (r"re:\d+", "no digits", 0),
        (r"re:x*", "abxc", 3),  # the empty matches around it do not count
        (r"re:x*", "abc", 0),
        (r"re:</p>", "<p>a</p><p>b", 8),
        (r"re:(?i)END", "a end b", 5),
        (r"RE:,\s", "a, b, c", 6),
        ("re:\u3002", "\u3042\u3002\u3044", 2),
    ],
)
def test_regex_flushes_through_the_end_of_the_last_non_empty_match(spec, text, expected):
    assert make_chunker(spec)(text) == expected


def test_invalid_regex_is_rejected_when_the_chunker_is_made():
    with pytest.raises(ValueError, match=r"invalid chunk regex '\(unclosed'"):
        make_chunker("re:(unclosed")


def test_empty_regex_is_rejected():
    with pytest.raises(ValueError, match="regex is empty"):
        make_chunker("re:")


# --- callables ----------------------------------------------------------------------------


def test_callable_result_is_used_as_given():
    chunker = make_chunker(lambda text: text.find("|") + 1)

    assert chunker("ab|cd") == 3
    assert chunker("abcd") == 0


@pytest.mark.parametrize("result", [-1, 5, 2.0, "2", None, True])
def test_callable_result_outside_range_or_not_int_is_rejected(result):
    chunker = make_chunker(lambda text: result)

    with pytest.raises(ValueError, match="returned"):
        chunker("abcd")


# --- spec parsing -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["WORD", " Line ", "Sentence", "PARAGRAPH"])
def test_mode_names_are_case_insensitive(spec):
    assert make_chunker(spec).spec == spec.strip().lower()


@pytest.mark.parametrize(
    "spec", ["", "   ", "0", "-3", 0, -1, "1.5", 1.5, "words", "\u0661", None, True, b"word", []]
)
def test_invalid_specs_are_rejected_with_the_list_of_valid_modes(spec):
    with pytest.raises(ValueError, match=r"expected 'word', 'line', 'sentence', 'paragraph', 're:"):
        make_chunker(spec)


# --- properties shared by every mode ------------------------------------------------------

ALL_SPECS = [*CHUNK_MODES, r"re:\s+", r"re:[.!?]", "1", "2", "3", 7, lambda text: len(text) // 2]

pieces = st.lists(
    st.one_of(
        st.text(),
        st.sampled_from(
            [" ", "\n", "\r\n", "\n\n", "\n \n", ". ", "?\u201d ", "\u2026", "\u20ac", "\U0001f600"]
        ),
    ),
    max_size=12,
)


@settings(max_examples=300)
@given(spec=st.sampled_from(ALL_SPECS), arrivals=pieces)
def test_flushing_repeatedly_never_loses_or_reorders_text(spec, arrivals):
    chunker = make_chunker(spec)
    pending = ""
    flushed: list[str] = []

    for piece in arrivals:
        pending += piece
        cut = chunker(pending)
        assert type(cut) is int
        assert 0 <= cut <= len(pending)
        flushed.append(pending[:cut])
        pending = pending[cut:]

    assert "".join(flushed) + pending == "".join(arrivals)


@settings(max_examples=300)
@given(spec=st.sampled_from(CHUNK_MODES), arrivals=pieces)
def test_text_left_after_a_boundary_cut_holds_no_further_boundary(spec, arrivals):
    chunker = make_chunker(spec)
    text = "".join(arrivals)

    cut = chunker(text)

    assert chunker(text[cut:]) == 0


def _reference_cut(mode: str, text: str) -> int:
    """Each mode's definition, checked position by position (quadratic, for tests only)."""

    def ends_blank_line(i: int) -> bool:
        # text[i] is an LF; the line it ends must follow another LF and be whitespace-only.
        start = text.rfind("\n", 0, i)
        line = text[start + 1 : i]
        return start != -1 and (line == "" or line.isspace())

    def sentence_ends_at(i: int) -> bool:
        if text[i - 1] == "\n":
            return True
        if not text[i - 1].isspace() or (i < len(text) and text[i].isspace()):
            return False
        head = text[:i].rstrip().rstrip("\"')]}\u00bb\u2019\u201d\u203a")
        return head.endswith((".", "!", "?", "\u2026"))

    ok = {
        "word": lambda i: text[i - 1].isspace(),
        "line": lambda i: text[i - 1] == "\n",
        "sentence": sentence_ends_at,
        "paragraph": lambda i: text[i - 1] == "\n" and ends_blank_line(i - 1),
    }[mode]
    return next((i for i in range(len(text), 0, -1) if ok(i)), 0)


@settings(max_examples=500)
@given(mode=st.sampled_from(CHUNK_MODES), arrivals=pieces)
def test_each_mode_matches_its_definition(mode, arrivals):
    text = "".join(arrivals)

    assert make_chunker(mode)(text) == _reference_cut(mode, text)
