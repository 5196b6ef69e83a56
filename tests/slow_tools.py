"""A tool that takes its time, for tests that stop a reply while a tool runs
(loaded with TOOL_MODULES=tests.slow_tools)."""

from __future__ import annotations

import time

from tools import Tool


def _wait(arguments: dict, context) -> str:
    seconds = float(arguments.get("seconds", 1))
    time.sleep(seconds)  # cooperative under gevent, like a tool waiting on the network
    return f"waited {seconds:g} s"


TOOLS = [Tool("wait", "Wait a number of seconds.",
              {"type": "object", "properties": {"seconds": {"type": "number"}}}, _wait)]
