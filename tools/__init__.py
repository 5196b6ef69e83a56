"""Tools a model may call while it writes a reply: a Python function and its JSON schema,
registered in one place (`BUILTIN_TOOLS`) and switched on per deployment (`TOOLS`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOOLS = ("calculator", "current_time", "search_threads")


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the reply it runs for."""

    owner: str
    thread_id: int
    session_factory: Callable[[], Any]
    clock: Callable[[], float] | None = None


class ToolFailed(Exception):
    """A tool could not do what was asked; the message is shown and sent to the model."""


@dataclass(frozen=True)
class Tool:
    """A function the model may call: `run(arguments, context)` returns short text."""

    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any], ToolContext], str]

    def schema(self) -> dict[str, Any]:
        """The OpenAI `tools` entry for this tool."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolBox:
    """The tools switched on for this deployment, and the limits they run under."""

    tools: Mapping[str, Tool] = field(default_factory=dict)
    max_steps: int = 5
    timeout_s: float = 10.0

    def __bool__(self) -> bool:
        return bool(self.tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self.tools.values()]


def parse_tool_names(raw: str | None) -> tuple[str, ...]:
    """`TOOLS`: unset → every built-in; empty or `none` → no tools; else a comma list.
    Raises ValueError naming an unknown tool."""
    from .builtin import BUILTIN_TOOLS

    if raw is None:
        return DEFAULT_TOOLS
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names or [n.lower() for n in names] == ["none"]:
        return ()
    unknown = [n for n in names if n not in BUILTIN_TOOLS]
    if unknown:
        raise ValueError(f"TOOLS names unknown tools: {', '.join(unknown)}; known tools are "
                         f"{', '.join(BUILTIN_TOOLS)} (or 'none').")
    return tuple(dict.fromkeys(names))


def make_toolbox(config: Mapping[str, Any]) -> ToolBox:
    """The ToolBox the configuration asks for (`TOOLS`, `MAX_TOOL_STEPS`, `TOOL_TIMEOUT_S`)."""
    from .builtin import BUILTIN_TOOLS

    names = parse_tool_names(config.get("TOOLS"))
    return ToolBox(tools={name: BUILTIN_TOOLS[name] for name in names},
                   max_steps=max(0, int(config.get("MAX_TOOL_STEPS", 5))),
                   timeout_s=float(config.get("TOOL_TIMEOUT_S", 10.0)))
