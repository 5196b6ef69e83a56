"""Running the tool calls of one model turn: each one a visible step, never a crash."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gevent

from llm.base import ToolCall
from tools import ToolBox, ToolContext, ToolFailed

if TYPE_CHECKING:
    from .generation import Generation

log = logging.getLogger(__name__)

MAX_RESULT_CHARS = 4000  # what is kept, shown and sent back to the model


def step_limit_note(text: str, max_steps: int) -> str:
    """The note that ends a reply whose model wanted more tool steps than allowed."""
    note = (f"*Stopped: this reply reached the limit of {max_steps} tool "
            f"step{'' if max_steps == 1 else 's'} (MAX_TOOL_STEPS).*")
    if not text:
        return note
    return ("\n\n" if not text.endswith("\n") else "\n") + note


def run_tool_calls(generation: Generation, calls: Sequence[ToolCall], toolbox: ToolBox,
                   context: ToolContext, turn_text: str) -> list[dict[str, Any]]:
    """Run each call as a step of `generation`; the messages that tell the model the
    results (its own turn with the calls, then one `tool` message per call)."""
    messages: list[dict[str, Any]] = [{
        "role": "assistant", "content": turn_text or None,
        "tool_calls": [{"id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments}}
                       for call in calls]}]
    for call in calls:
        index = generation.start_step(call.name, call.arguments)
        status, result = run_tool_call(call, toolbox, context)
        generation.end_step(index, status, result)
        messages.append({"role": "tool", "tool_call_id": call.id,
                         "content": result if status == "ok" else f"Error: {result}"})
    return messages


def run_tool_call(call: ToolCall, toolbox: ToolBox, context: ToolContext) -> tuple[str, str]:
    """("ok", result) or ("error", why): a tool that is unknown, gets bad arguments, fails
    or runs past the timeout is a failed step the model is told about."""
    tool = toolbox.tools.get(call.name)
    if tool is None:
        return "error", f"There is no tool named {call.name!r}."
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError as err:
        return "error", f"The arguments are not valid JSON ({err})."
    if not isinstance(arguments, dict):
        return "error", "The arguments must be a JSON object."
    timeout = gevent.Timeout(toolbox.timeout_s)
    timeout.start()
    try:
        result = tool.run(arguments, context)
    except ToolFailed as err:
        return "error", _short(str(err))
    except gevent.Timeout as err:
        if err is not timeout:
            raise
        return "error", f"The tool took longer than {toolbox.timeout_s:g} s."
    except Exception:
        log.exception("tool %s failed", call.name)
        return "error", "The tool failed unexpectedly."
    finally:
        timeout.close()
    return "ok", _short(str(result))


def _short(text: str) -> str:
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS - 1] + "…"
