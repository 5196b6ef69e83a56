"""Tools a model may call while it writes a reply: a Python function and its JSON schema,
registered in one place (`BUILTIN_TOOLS`) and switched on per deployment (`TOOLS`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the reply it runs for."""

    thread_id: int
    session_factory: Callable[[], Any]
    owner: str | None = None  # None: the thread's owner, looked up when a tool needs it
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


def parse_tool_names(raw: str | None, known: Mapping[str, Tool]) -> tuple[str, ...]:
    """`TOOLS`: unset → every known tool; empty or `none` → no tools; else a comma list.
    Raises ValueError naming an unknown tool."""
    if raw is None:
        return tuple(known)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if not names or [n.lower() for n in names] == ["none"]:
        return ()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"TOOLS names unknown tools: {', '.join(unknown)}; known tools are "
                         f"{', '.join(known)} (or 'none').")
    return tuple(dict.fromkeys(names))


def known_tools(modules: str | None = None) -> dict[str, Tool]:
    """The built-ins, then the `TOOLS` lists of the comma-listed `modules`."""
    from .builtin import BUILTIN_TOOLS

    known = dict(BUILTIN_TOOLS)
    for name in (m.strip() for m in (modules or "").split(",")):
        if name:
            try:
                extra = importlib.import_module(name).TOOLS
            except (ImportError, AttributeError) as err:
                raise ValueError(f"TOOL_MODULES: cannot load tools from {name!r} ({err}).") \
                    from None
            known.update((tool.name, tool) for tool in extra)
    return known


def make_toolbox(config: Mapping[str, Any]) -> ToolBox:
    """The ToolBox the configuration asks for (`TOOLS`, `TOOL_MODULES`, `MAX_TOOL_STEPS`,
    `TOOL_TIMEOUT_S`); raises ValueError for a bad setting, naming it."""
    known = known_tools(config.get("TOOL_MODULES"))
    names = parse_tool_names(config.get("TOOLS"), known)
    max_steps, timeout = config.get("MAX_TOOL_STEPS", 5), config.get("TOOL_TIMEOUT_S", 10.0)
    if not isinstance(max_steps, int) or max_steps < 0:
        raise ValueError("MAX_TOOL_STEPS must be a whole number, 0 or more.")
    if not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError("TOOL_TIMEOUT_S must be a positive number.")
    return ToolBox(tools={name: known[name] for name in names}, max_steps=max_steps,
                   timeout_s=float(timeout))
