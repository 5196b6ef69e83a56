"""Reasoning and tool calls from the model to the generation: the fake upstream's wire format
(read by the real `openai` client), the providers, and the generation's step loop."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import gevent
import openai
import pytest

from bench.fake_upstream import FakeUpstream, Reply
from llm import Chunk, DemoProvider, OpenAICompatProvider
from llm.base import ToolCall
from llm.demo import demo_reply
from streaming.generation import Generation, GenerationCancelled, run_generation
from streaming.reader import Delta, Reasoning, StepEvent, Terminal, read_live
from tools import Tool, ToolBox, ToolContext, make_toolbox

CONTEXT = ToolContext(owner="someone", thread_id=1, session_factory=lambda: None)
TOOLS = make_toolbox({"TOOLS": "calculator,current_time"})
PATIENCE_S = 10.0


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_script(fake) -> Iterator[None]:
    yield
    fake.clear_queue()


@pytest.fixture(scope="module")
def provider(fake) -> Iterator[OpenAICompatProvider]:
    p = OpenAICompatProvider(base_url=fake.url, api_key="sk-test", model="fake-model",
                             read_timeout=PATIENCE_S)
    yield p
    p.close()


# -- the fake server's wire format, as the openai client reads it -----------------------------
def test_the_openai_client_reads_split_tool_calls_and_reasoning_from_the_fake(fake):
    fake.enqueue(Reply.calling([("calculator", '{"expression": "6*7"}'),
                                ("current_time", "{}")],
                               pieces=5, interleave=True, reasoning="I should compute."))
    client = openai.OpenAI(base_url=fake.url, api_key="sk-test", max_retries=0)
    stream = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "6 times 7?"}], stream=True,
        tools=TOOLS.schemas())
    reasoning, arguments, names, finish = [], {}, {}, None
    fragments = 0
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        extra = choice.delta.model_extra or {}
        if extra.get("reasoning_content"):
            reasoning.append(extra["reasoning_content"])
        for call in choice.delta.tool_calls or ():
            fragments += 1
            if call.function.name:
                names[call.index] = call.function.name
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments
                                                                     or "")
        finish = choice.finish_reason or finish
    assert "".join(reasoning) == "I should compute."
    assert names == {0: "calculator", 1: "current_time"}
    assert json.loads(arguments[0]) == {"expression": "6*7"} and arguments[1] == "{}"
    assert fragments >= 7  # really split across chunks
    assert finish == "tool_calls"
    assert fake.requests[-1].body["tools"][0]["function"]["name"] == "calculator"


# -- the OpenAI-compatible provider ------------------------------------------------------------
@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_deltas_become_reasoning_chunks(fake, provider, field):
    fake.enqueue(Reply.thinking("Hmm, <let> me & think.", "The answer.", field=field))
    chunks = list(provider.stream([{"role": "user", "content": "Q"}]))
    assert "".join(c.reasoning for c in chunks) == "Hmm, <let> me & think."
    assert "".join(c.text for c in chunks) == "The answer."
    assert all(not (c.text and c.reasoning) for c in chunks)
    assert chunks[-1].finish_reason == "stop" and chunks[-1].tool_calls == ()


def test_tool_calls_are_assembled_and_tool_turns_are_sent_in_the_openai_shape(fake, provider):
    fake.enqueue(Reply.calling([("calculator", '{"expression": "1+1"}'),
                                ("current_time", "")], pieces=7, interleave=True))
    history = [{"role": "user", "content": "Q"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "c0", "type": "function",
                    "function": {"name": "calculator", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "c0", "content": "Error: bad"}]
    chunks = list(provider.stream(history, tools=TOOLS.schemas()))
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].tool_calls == (
        ToolCall("call_0_calculator", "calculator", '{"expression": "1+1"}'),
        ToolCall("call_1_current_time", "current_time", ""))
    sent = fake.requests[-1].body
    assert sent["messages"][1:] == history[1:]
    assert [t["function"]["name"] for t in sent["tools"]] == ["calculator", "current_time"]


def test_without_tools_the_request_has_no_tools_key(fake, provider):
    fake.enqueue(Reply.words("plain"))
    assert "".join(c.text for c in provider.stream([{"role": "user", "content": "Q"}])) == \
        "plain"
    assert "tools" not in fake.requests[-1].body


# -- the generation's step loop ----------------------------------------------------------------
class TurnsProvider:
    """A provider that answers each model turn from a script of chunk lists."""

    name, model, label = "scripted", "scripted", "Scripted"
    supports_tools = True

    def __init__(self, *turns: list[Chunk]) -> None:
        self.turns = list(turns)
        self.requests: list[list[dict]] = []

    def stream(self, messages, tools=None):
        self.requests.append([dict(m) for m in messages])
        turn = self.turns.pop(0) if len(self.turns) > 1 else self.turns[0]
        yield from turn


def calls(*pairs: tuple[str, str]) -> Chunk:
    return Chunk(finish_reason="tool_calls",
                 tool_calls=tuple(ToolCall(f"c{i}", n, a) for i, (n, a) in enumerate(pairs)))


def generate(provider, toolbox: ToolBox = TOOLS) -> Generation:
    generation = Generation(1, 1, clock=time.monotonic)
    run_generation(generation, provider, [{"role": "user", "content": "Q"}],
                   lambda g: g.finalized.set(), toolbox=toolbox, tool_context=CONTEXT)
    return generation


def test_tool_results_go_back_to_the_model_which_then_answers():
    provider = TurnsProvider(
        [Chunk(reasoning="think "), Chunk(text="Let me see. "),
         calls(("calculator", '{"expression": "2+3*4"}'), ("calculator", "{bad"))],
        [Chunk(reasoning="got it"), Chunk(text="It is 14."), Chunk(finish_reason="stop")])
    generation = generate(provider)
    assert generation.status == "complete"
    assert generation.text == "Let me see. It is 14."
    assert generation.reasoning == "think \n\ngot it"
    assert [(s["status"], s["result"]) for s in generation.steps] == [
        ("ok", "14"), ("error", generation.steps[1]["result"])]
    assert "not valid JSON" in generation.steps[1]["result"]
    told = provider.requests[1]
    assert told[1] == {"role": "assistant", "content": "Let me see. ", "tool_calls": [
        {"id": "c0", "type": "function",
         "function": {"name": "calculator", "arguments": '{"expression": "2+3*4"}'}},
        {"id": "c1", "type": "function", "function": {"name": "calculator",
                                                      "arguments": "{bad"}}]}
    assert told[2] == {"role": "tool", "tool_call_id": "c0", "content": "14"}
    assert told[3]["content"].startswith("Error: The arguments are not valid JSON")


def test_past_max_tool_steps_the_reply_ends_with_a_note_and_no_more_calls():
    provider = TurnsProvider([calls(("current_time", "{}"))])
    box = ToolBox(tools=TOOLS.tools, max_steps=3)
    generation = generate(provider, box)
    assert generation.status == "complete"
    assert len(generation.steps) == 3 and len(provider.requests) == 4
    assert generation.text == "*Stopped: this reply reached the limit of 3 tool steps " \
                              "(MAX_TOOL_STEPS).*"
    assert generation.finish_reason == "tool_step_limit"


def test_a_provider_without_tools_is_never_offered_them():
    class Plain:
        name, model, label = "plain", "plain", "Plain"

        def stream(self, messages):
            yield Chunk(text="hi")
            yield Chunk(finish_reason="stop")

    assert generate(Plain()).text == "hi"


def test_a_cancel_during_a_tool_call_ends_aborted_with_the_steps_kept():
    started = gevent.event.Event()

    def slow(arguments, context):
        started.set()
        gevent.sleep(30)
        return "never"

    box = ToolBox(tools={**TOOLS.tools, "slow": Tool("slow", "", {}, slow)})
    provider = TurnsProvider([calls(("calculator", '{"expression": "1"}'), ("slow", "{}"))])
    generation = Generation(1, 1, clock=time.monotonic)
    greenlet = gevent.spawn(run_generation, generation, provider,
                            [{"role": "user", "content": "Q"}], lambda g: None,
                            toolbox=box, tool_context=CONTEXT)
    generation.greenlet = greenlet
    assert started.wait(PATIENCE_S)
    greenlet.kill(GenerationCancelled, block=True, timeout=PATIENCE_S)
    assert generation.status == "aborted"
    assert [(s["name"], s["status"]) for s in generation.steps] == [
        ("calculator", "ok"), ("slow", "aborted")]
    assert generation.step_events == 4  # the stopped step's end is an event too


def test_the_live_reader_sends_each_part_once_with_the_cursor_after_it():
    provider = TurnsProvider(
        [Chunk(reasoning="ab"), calls(("calculator", '{"expression": "2"}'))],
        [Chunk(text="xyz"), Chunk(finish_reason="stop")])
    generation = generate(provider)
    generation.finalized.set()
    items = list(read_live(generation, 0, idle_s=1))
    assert [type(i) for i in items] == [Reasoning, StepEvent, StepEvent, Delta, Terminal]
    assert [str(i.cursor) for i in items[:4]] == ["0.2.0", "0.2.1", "0.2.2", "3.2.2"]
    # From the middle of every part: only what follows.
    from streaming.parts import Cursor
    rest = list(read_live(generation, Cursor(1, 1, 1), idle_s=1))
    assert [(type(i).__name__, getattr(i, "text", None)) for i in rest[:3]] == [
        ("Reasoning", "b"), ("StepEvent", None), ("Delta", "yz")]


# -- the demo model ----------------------------------------------------------------------------
def test_demo_model_thinks_and_calls_the_calculator_when_asked_to_calculate():
    generation = generate(DemoProvider(token_delay_s=0))
    assert generation.text == demo_reply("Q")  # an ordinary prompt: the ordinary reply
    demo = DemoProvider(token_delay_s=0)
    generation = Generation(1, 1, clock=time.monotonic)
    run_generation(generation, demo, [{"role": "user", "content": "Please calculate 2+3*4"}],
                   lambda g: None, toolbox=TOOLS, tool_context=CONTEXT)
    assert generation.text == "2+3*4 = **14**"
    assert "calculator" in generation.reasoning
    assert generation.steps == [{"name": "calculator", "arguments": '{"expression": "2+3*4"}',
                                 "result": "14", "status": "ok"}]


def test_demo_model_without_the_calculator_answers_as_always():
    chunks = list(DemoProvider(token_delay_s=0).stream(
        [{"role": "user", "content": "calculate 1+1"}]))
    assert "".join(c.text for c in chunks) == demo_reply("calculate 1+1")
    assert not any(c.reasoning or c.tool_calls for c in chunks)


def test_a_server_that_refuses_tools_is_asked_again_without_them(fake, provider):
    fake.enqueue(Reply(tokens=[], status=400,
                       error_message="registry.ollama.ai/library/x does not support tools"),
                 Reply.words("Answered without tools."))
    chunks = list(provider.stream([{"role": "user", "content": "Q"}], tools=TOOLS.schemas()))
    assert "".join(c.text for c in chunks) == "Answered without tools."
    refused, asked_again = fake.requests[-2:]
    assert "tools" in refused.body and "tools" not in asked_again.body


def test_other_bad_requests_still_fail_with_their_reason(fake, provider):
    from llm import ProviderError

    fake.enqueue(Reply(tokens=[], status=400, error_message="context length exceeded"))
    with pytest.raises(ProviderError):
        list(provider.stream([{"role": "user", "content": "Q"}], tools=TOOLS.schemas()))
    assert "tools" in fake.requests[-1].body


# -- Anthropic: thinking blocks and tool_use --------------------------------------------------
@pytest.fixture(scope="module")
def claude() -> Iterator:
    from bench.fake_anthropic import FakeAnthropic
    from llm import AnthropicProvider

    with FakeAnthropic(api_key="sk-ant-test") as server:
        provider = AnthropicProvider(api_key="sk-ant-test", model="claude-fake",
                                     base_url=server.url, read_timeout=PATIENCE_S)
        yield server, provider
        provider.close()


def test_anthropic_thinking_blocks_are_reasoning(claude):
    server, provider = claude
    server.enqueue(Reply.thinking("Weigh <this> & that.", "Answer."))
    chunks = list(provider.stream([{"role": "user", "content": "Q"}]))
    assert "".join(c.reasoning for c in chunks) == "Weigh <this> & that."
    assert "".join(c.text for c in chunks) == "Answer."


def test_anthropic_tool_use_blocks_are_tool_calls_and_results_go_back_as_blocks(claude):
    server, provider = claude
    server.enqueue(Reply.calling([("calculator", '{"expression": "6*7"}'),
                                  ("current_time", "")], pieces=4, text="Let me check."))
    chunks = list(provider.stream([{"role": "user", "content": "Q"}], tools=TOOLS.schemas()))
    assert "".join(c.text for c in chunks) == "Let me check."
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].tool_calls == (
        ToolCall("call_0_calculator", "calculator", '{"expression": "6*7"}'),
        ToolCall("call_1_current_time", "current_time", "{}"))
    assert server.requests[-1].body["tools"][0] == {
        "name": "calculator", "description": TOOLS.tools["calculator"].description,
        "input_schema": TOOLS.tools["calculator"].parameters}

    # The generation's next turn, in the OpenAI shape, becomes tool_use / tool_result blocks.
    server.enqueue(Reply.words("It is 42."))
    history = [{"role": "user", "content": "Q"},
               {"role": "assistant", "content": "Let me check.", "tool_calls": [
                   {"id": "t1", "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}},
                   {"id": "t2", "type": "function",
                    "function": {"name": "current_time", "arguments": "{bad"}}]},
               {"role": "tool", "tool_call_id": "t1", "content": "42"},
               {"role": "tool", "tool_call_id": "t2", "content": "Error: bad arguments"}]
    chunks = list(provider.stream(history, tools=TOOLS.schemas()))
    assert "".join(c.text for c in chunks) == "It is 42."
    sent = server.requests[-1].body["messages"]
    assert sent[1] == {"role": "assistant", "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "t1", "name": "calculator", "input": {"expression": "6*7"}},
        {"type": "tool_use", "id": "t2", "name": "current_time", "input": {}}]}
    assert sent[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "42", "is_error": False},
        {"type": "tool_result", "tool_use_id": "t2", "content": "Error: bad arguments",
         "is_error": True}]}


def test_a_reply_with_tool_steps_counts_the_usage_of_every_model_call():
    # Each call's own count is its last (some servers repeat a running count per chunk).
    first = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    provider = TurnsProvider(
        [Chunk(usage={"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}),
         Chunk(finish_reason="tool_calls", usage=first,
               tool_calls=(ToolCall("c0", "calculator", '{"expression": "1+1"}'),))],
        [Chunk(text="It is 2."), Chunk(finish_reason="stop", usage={
            "prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24})])
    generation = generate(provider)
    assert generation.status == "complete" and generation.text == "It is 2."
    assert generation.usage == {"prompt_tokens": 30, "completion_tokens": 7,
                                "total_tokens": 37}
