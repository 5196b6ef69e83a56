"""Tools: the calculator's safe arithmetic, tool-call assembly, the tool step runner, the
deployment's tool settings, and the cursor that covers every part of a reply."""

from __future__ import annotations

import json

import gevent
import pytest

from llm.base import ToolCall
from llm.tool_calls import ToolCallAssembler
from streaming.parts import Cursor, parse_cursor, step_event, step_event_count
from streaming.tool_steps import run_tool_call, step_limit_note
from tools import Tool, ToolBox, ToolContext, ToolFailed, make_toolbox
from tools.builtin import BUILTIN_TOOLS
from tools.calculator import CalculatorError, calculate

CONTEXT = ToolContext(owner="someone", thread_id=1, session_factory=lambda: None)


# -- calculator --------------------------------------------------------------------------------
@pytest.mark.parametrize(("expression", "value"), [
    ("2+3*4", 14), ("(2+3)*4", 20), ("7/2", 3.5), ("7//2", 3), ("-7 % 3", 2), ("2**10", 1024),
    ("2^3", 8), ("sqrt(16)", 4.0), ("abs(-3.5)", 3.5), ("1e3 + .5", 1000.5),
    ("round(2.567, 2)", 2.57), ("-(-(3))", 3), ("3 × 4 ÷ 2", 6.0),
])
def test_calculator_does_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression", [
    "__import__('os').system('true')", "open('/etc/passwd').read()", "x", "a.b", "[1, 2]",
    "(lambda: 1)()", "'text' * 3", "1 if 2 else 3", "1 < 2", "not 1", "{1: 2}", "f'{1}'",
    "sqrt.__class__", "sqrt(x=4)", "().__class__.__bases__", "True + 1", "", "   ",
    "1; 2", "import os", "2 +", "sqrt(1, 2, 3)",
])
def test_calculator_refuses_anything_but_arithmetic(expression):
    with pytest.raises(CalculatorError):
        calculate(expression)


@pytest.mark.parametrize("expression", ["9**9**9", "10**100000", "2**-100000",
                                        "(10**4000)*(10**4000)", "1" * 501, "-" * 60 + "1",
                                        "1e308 * 10", "(-8) ** 0.5"])
def test_calculator_bounds_work_and_size_instead_of_hanging(expression):
    with pytest.raises(CalculatorError):
        calculate(expression)


def test_calculator_errors_say_what_is_wrong():
    with pytest.raises(CalculatorError, match="Division by zero"):
        calculate("1/0")
    with pytest.raises(CalculatorError, match="'x' is not allowed"):
        calculate("x + 1")
    with pytest.raises(CalculatorError, match="Exponents are limited"):
        calculate("2 ** 100000")


def test_calculator_tool_answers_text_and_fails_as_a_tool():
    run = BUILTIN_TOOLS["calculator"].run
    assert run({"expression": "6*7"}, CONTEXT) == "42"
    assert run({"expression": "10/4"}, CONTEXT) == "2.5"
    with pytest.raises(ToolFailed, match="required"):
        run({}, CONTEXT)
    with pytest.raises(ToolFailed, match="not allowed"):
        run({"expression": "exit()"}, CONTEXT)


# -- tool-call assembly ------------------------------------------------------------------------
def test_a_call_split_across_many_chunks_is_put_back_together():
    calls = ToolCallAssembler()
    calls.add([{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "calculator", "arguments": ""}}])
    for piece in ['{"expr', 'ession"', ': "2+', '3"}']:
        calls.add([{"index": 0, "function": {"arguments": piece}}])
    assert calls.calls() == (ToolCall("call_1", "calculator", '{"expression": "2+3"}'),)


def test_several_calls_of_one_turn_interleaved_keep_their_own_arguments():
    calls = ToolCallAssembler()
    calls.add([{"index": 0, "id": "a", "function": {"name": "calculator", "arguments": "{\"e"}},
               {"index": 1, "id": "b", "function": {"name": "current_time", "arguments": ""}}])
    calls.add([{"index": 1, "function": {"arguments": "{}"}}])
    calls.add([{"index": 0, "function": {"arguments": "xpression\": \"1\"}"}}])
    assert calls.calls() == (ToolCall("a", "calculator", '{"expression": "1"}'),
                             ToolCall("b", "current_time", "{}"))


def test_calls_without_index_or_id_still_assemble():
    calls = ToolCallAssembler()
    calls.add([{"function": {"name": "calc", "arguments": "{"}}])
    calls.add([{"function": {"name": "ulator", "arguments": "}"}}])  # a name split in two
    calls.add([{"id": "x2", "function": {"name": "current_time", "arguments": "{}"}}])
    assert calls.calls() == (ToolCall("call_0", "calculator", "{}"),
                             ToolCall("x2", "current_time", "{}"))


def test_calls_without_index_that_repeat_their_id_stay_one_call():
    calls = ToolCallAssembler()
    calls.add([{"id": "a", "function": {"name": "calculator", "arguments": "{\"expression"}}])
    calls.add([{"id": "a", "function": {"arguments": "\": \"2\"}"}}])
    calls.add([{"id": "b", "function": {"name": "current_time", "arguments": "{}"}}])
    calls.add([{"id": "a", "function": {"arguments": ""}}])
    assert calls.calls() == (ToolCall("a", "calculator", '{"expression": "2"}'),
                             ToolCall("b", "current_time", "{}"))


@pytest.mark.parametrize("fragments", ["nope", [1], [{"index": 0, "function": "x"}]])
def test_a_tool_call_of_the_wrong_shape_is_a_malformed_reply(fragments):
    with pytest.raises(ValueError):
        ToolCallAssembler().add(fragments)


# -- running a call ----------------------------------------------------------------------------
def toolbox(*tools: Tool, timeout_s: float = 5.0) -> ToolBox:
    return ToolBox(tools={**{t.name: t for t in BUILTIN_TOOLS.values()},
                          **{t.name: t for t in tools}}, timeout_s=timeout_s)


def test_malformed_arguments_unknown_tools_and_crashes_are_failed_steps():
    def broken(arguments, context):
        raise RuntimeError("a bug")

    box = toolbox(Tool("broken", "", {}, broken))
    assert run_tool_call(ToolCall("1", "calculator", '{"expression": "2+'), box, CONTEXT)[0] == \
        "error"
    assert "not valid JSON" in run_tool_call(ToolCall("1", "calculator", "{"), box, CONTEXT)[1]
    assert run_tool_call(ToolCall("1", "calculator", "[1]"), box, CONTEXT) == (
        "error", "The arguments must be a JSON object.")
    assert run_tool_call(ToolCall("1", "rm", "{}"), box, CONTEXT) == (
        "error", "There is no tool named 'rm'.")
    assert run_tool_call(ToolCall("1", "broken", "{}"), box, CONTEXT) == (
        "error", "The tool failed unexpectedly.")
    assert run_tool_call(ToolCall("1", "current_time", ""), box, CONTEXT)[0] == "ok"


def test_a_tool_past_its_timeout_is_a_failed_step():
    def slow(arguments, context):
        gevent.sleep(5)
        return "late"

    box = toolbox(Tool("slow", "", {}, slow), timeout_s=0.05)
    status, result = run_tool_call(ToolCall("1", "slow", "{}"), box, CONTEXT)
    assert (status, result) == ("error", "The tool took longer than 0.05 s.")


def test_long_results_are_cut_short():
    box = toolbox(Tool("long", "", {}, lambda a, c: "x" * 10_000))
    status, result = run_tool_call(ToolCall("1", "long", "{}"), box, CONTEXT)
    assert status == "ok" and len(result) == 4000 and result.endswith("…")


def test_step_limit_note_names_the_limit():
    assert step_limit_note("", 1) == "*Stopped: this reply reached the limit of 1 tool step " \
                                     "(MAX_TOOL_STEPS).*"
    assert step_limit_note("Some text", 3).startswith("\n\n*Stopped")


# -- settings ----------------------------------------------------------------------------------
def test_tools_setting_unset_offers_every_builtin_and_none_offers_nothing():
    assert set(make_toolbox({}).tools) == {"calculator", "current_time", "search_threads"}
    assert not make_toolbox({"TOOLS": ""})
    assert not make_toolbox({"TOOLS": " none "})
    assert list(make_toolbox({"TOOLS": "current_time, calculator"}).tools) == [
        "current_time", "calculator"]
    schemas = make_toolbox({"TOOLS": "calculator"}).schemas()
    assert schemas[0]["function"]["parameters"]["required"] == ["expression"]


@pytest.mark.parametrize("config", [{"TOOLS": "calculator,shell"}, {"MAX_TOOL_STEPS": -1},
                                    {"TOOL_TIMEOUT_S": 0}, {"TOOL_MODULES": "no.such.module"}])
def test_bad_tool_settings_are_refused_by_name(config):
    with pytest.raises(ValueError, match="TOOL"):
        make_toolbox(config)


def test_tool_modules_add_tools():
    box = make_toolbox({"TOOL_MODULES": "tests.slow_tools"})
    assert "wait" in box.tools and "calculator" in box.tools


# -- the cursor --------------------------------------------------------------------------------
def test_cursor_is_plain_for_text_only_and_compound_otherwise():
    assert str(Cursor(12)) == "12"
    assert str(Cursor(12, 0, 1)) == "12.0.1"
    assert str(Cursor(0, 5, 0)) == "0.5.0"
    assert parse_cursor("12") == Cursor(12)
    assert parse_cursor("3.4.5") == Cursor(3, 4, 5)
    for junk in ("", "1.2", "1.2.3.4", "-1", "1e3", "٣", "1.2.x", " 1", "1234567890123"):
        assert parse_cursor(junk) is None, junk


def test_step_events_are_a_start_and_an_end_per_step():
    steps = [{"name": "a", "arguments": "{}", "result": "1", "status": "ok"},
             {"name": "b", "arguments": "{\"x\": 1}", "result": None, "status": "running"}]
    assert step_event_count(steps) == 3
    assert step_event(steps, 0) == {"index": 0, "name": "a", "arguments": "{}",
                                    "result": None, "status": "running"}
    assert step_event(steps, 1) == {"index": 0, **steps[0]}
    assert step_event(steps, 2)["status"] == "running"
    with pytest.raises(IndexError):
        step_event(steps, 3)
    json.dumps(step_event(steps, 1))  # what the stream sends


def test_search_threads_finds_only_the_owners_own_threads(app):
    from models import Message, Thread, db

    with app.app_context():
        mine = Thread(owner="me", title="Zebra facts")
        theirs = Thread(owner="someone else", title="Zebra secrets")
        db.session.add_all([mine, theirs])
        db.session.flush()
        db.session.add_all([Message(thread_id=mine.id, role="user", content="stripes galore"),
                            Message(thread_id=theirs.id, role="user", content="stripes too")])
        db.session.commit()
        sessions = app.extensions["relay"].session
        run = BUILTIN_TOOLS["search_threads"].run
        found = run({"query": "stripes"}, ToolContext(owner="me", thread_id=mine.id,
                                                      session_factory=sessions))
        assert "Zebra facts" in found and "stripes" in found and "secrets" not in found
        assert run({"query": "nothing matches this"},
                   ToolContext(owner="me", thread_id=mine.id, session_factory=sessions)) == \
            "No threads match."
        with pytest.raises(ToolFailed):
            run({"query": " "}, CONTEXT)
