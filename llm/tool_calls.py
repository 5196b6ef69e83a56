"""Tool calls streamed in pieces (OpenAI `delta.tool_calls`), put back together."""

from __future__ import annotations

from typing import Any

from .base import ToolCall

MAX_CALLS = 32  # per model turn: more is a runaway model, not a plan
MAX_ARGUMENT_CHARS = 64_000


class ToolCallAssembler:
    """Collects `delta.tool_calls` fragments by their `index` and yields whole calls.

    A call's first fragment usually holds its id and name, later ones pieces of the JSON
    arguments; several calls of one turn interleave by index. Without `index`, a fragment
    belongs to the call with its id, or (no id) to the last call.
    """

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragments: Any) -> None:
        """Take one chunk's `delta.tool_calls` list; raises ValueError for a wrong shape."""
        if not isinstance(fragments, list):
            raise ValueError("tool_calls is not a list")
        for fragment in fragments:
            if not isinstance(fragment, dict):
                raise ValueError("a tool call fragment is not an object")
            index = fragment.get("index")
            if not isinstance(index, int) or isinstance(index, bool):
                index = self._index_by_id(fragment.get("id"))
            call = self._calls.get(index)
            if call is None:
                if len(self._calls) >= MAX_CALLS:
                    raise ValueError("too many tool calls in one turn")
                call = self._calls[index] = {"id": "", "name": "", "arguments": []}
            if fragment.get("id"):
                call["id"] = str(fragment["id"])
            function = fragment.get("function") or {}
            if not isinstance(function, dict):
                raise ValueError("a tool call's function is not an object")
            name = function.get("name")
            # Most servers send the name once; a few repeat it whole, some split it.
            if isinstance(name, str) and name and call["name"] != name:
                call["name"] += name
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                call["arguments"].append(arguments)
                if sum(map(len, call["arguments"])) > MAX_ARGUMENT_CHARS:
                    raise ValueError("a tool call's arguments are too long")

    def _index_by_id(self, call_id: Any) -> int:
        """Where a fragment without `index` goes: the call with its id, a new call for a new
        id, else the last call."""
        if call_id:
            for index, call in self._calls.items():
                if call["id"] == str(call_id):
                    return index
            return max(self._calls, default=-1) + 1
        return max(self._calls, default=0)

    def calls(self) -> tuple[ToolCall, ...]:
        """The calls assembled so far, in index order; each gets an id when it had none."""
        return tuple(ToolCall(id=call["id"] or f"call_{index}", name=call["name"],
                              arguments="".join(call["arguments"]))
                     for index, call in sorted(self._calls.items()))
