"""The built-in tools: calculator, current_time, search_threads."""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import Tool, ToolContext, ToolFailed
from .calculator import CalculatorError, calculate

SEARCH_RESULTS = 5


def _calculator(arguments: dict[str, Any], context: ToolContext) -> str:
    expression = arguments.get("expression")
    if not isinstance(expression, str):
        raise ToolFailed("The argument 'expression' (text) is required.")
    try:
        value = calculate(expression)
    except CalculatorError as err:
        raise ToolFailed(str(err)) from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


def _current_time(arguments: dict[str, Any], context: ToolContext) -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _search_threads(arguments: dict[str, Any], context: ToolContext) -> str:
    from sqlalchemy import select

    from models import Thread
    from models.search import search

    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolFailed("The argument 'query' (text) is required.")
    with context.session_factory() as session:
        owner = context.owner or session.scalar(
            select(Thread.owner).where(Thread.id == context.thread_id))
        hits = search(session, owner, query[:200], limit=SEARCH_RESULTS) if owner else []
    if not hits:
        return "No threads match."
    lines = []
    for hit in hits:
        snippet = " ".join(hit.snippet.striptags().split())
        lines.append(f"- {hit.title} (thread {hit.thread_id}): {snippet}"[:300])
    return "\n".join(lines)


BUILTIN_TOOLS: dict[str, Tool] = {tool.name: tool for tool in (
    Tool("calculator", "Evaluate an arithmetic expression exactly (numbers, + - * / // % **, "
         "parentheses, sqrt, log, sin, cos, pi, e).",
         {"type": "object", "properties": {"expression": {
             "type": "string", "description": "for example (2 + 3) * 4 / 7"}},
          "required": ["expression"]}, _calculator),
    Tool("current_time", "The current date and time (UTC, ISO 8601).",
         {"type": "object", "properties": {}}, _current_time),
    Tool("search_threads", "Search the user's own earlier conversations in Relay.",
         {"type": "object", "properties": {"query": {"type": "string",
                                                      "description": "words to look for"}},
          "required": ["query"]}, _search_threads),
)}
