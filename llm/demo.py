"""Relay's offline demo model: a deterministic, helpful markdown reply streamed word by word."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .base import Attachment, Chunk, ToolCall

MAX_QUOTED_CHARS = 200
MAX_QUOTED_WORDS = 40  # keeps a prompt of many tiny words from doubling the reply's length

_HEADINGS = (
    "### Hello from Relay's demo model",
    "### Relay demo model here",
    "### Greetings from the offline demo model",
)
_OPENERS = (
    "Thanks for your message! You wrote:",
    "Here is what you sent me:",
    "I received your message:",
)
_BODY = """\
I can't really answer it, because no language model is connected yet:

- This reply comes from **Relay's offline demo model**. It runs inside Relay, needs no \
network, and always answers with this guide, streamed word by word like a real model.
- To chat with a real model, set `OPENAI_BASE_URL`, `OPENAI_API_KEY` and `CHAT_MODEL`, \
then restart Relay.
- **OpenAI:** set only `OPENAI_API_KEY`, plus a model such as `gpt-4o-mini`.
- **vLLM:** use the server's address, for example `http://localhost:8000/v1`.
- **Ollama:** use `http://localhost:11434/v1`; no API key is needed.
- **llama.cpp server:** use `http://localhost:8080/v1`.

For example, to use a local Ollama model:

```bash
export OPENAI_BASE_URL=http://localhost:11434/v1
export CHAT_MODEL=llama3.2
```

"""
_CLOSERS = (
    "Once Relay restarts with these settings, your next message goes to the real model.",
    "After a restart with these settings, the real model will answer your next message.",
    "Restart Relay with these settings and the real model will take over from here.",
)

_TOKEN = re.compile(r"\s*\S+\s*")
# "calculate 2+3*4" (with the calculator on) shows reasoning and a tool step offline.
_CALCULATE = re.compile(r"\bcalculate\s+([-+*/%^().\d\s]*\d[-+*/%^().\d\s]*)", re.IGNORECASE)
# Backslash-escaping every ASCII punctuation character is always literal in CommonMark, so
# the quoted prompt cannot open a list, a link, code, HTML, emphasis or an entity.
_MD_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


class DemoProvider:
    """Streams a fixed, prompt-dependent markdown guide; the same prompt gives the same reply."""

    name = "demo"
    model = "demo"
    label = "Demo model (offline)"

    def __init__(self, *, token_delay_s: float = 0.035,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.token_delay_s = max(0.0, float(token_delay_s))
        self._sleep = sleep or _sleep

    continues_exactly = True  # asked to go on, it writes the rest of its own reply
    supports_tools = True

    def stream(self, messages: list[dict[str, Any]],
               tools: list[dict[str, Any]] | None = None) -> Iterator[Chunk]:
        """Yield the reply one word (plus its trailing whitespace) at a time, then the usage.

        A history ending with a partial reply gets the rest of that reply: the words after
        the partial text (the whole reply again if the partial is not its start). A prompt
        asking to "calculate" arithmetic, with the calculator among `tools`, is answered
        with some reasoning and a calculator call, then the result the tool sent back.
        """
        asked = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        prompt = asked.get("content") or ""
        match = _CALCULATE.search(prompt)
        if match and _offers(tools, "calculator"):
            yield from self._calculate(messages, match.group(1).strip())
            return
        reply = demo_reply(prompt, asked.get("attachments") or ())
        partial = messages[-1].get("content", "") if messages and \
            messages[-1].get("role") == "assistant" else ""
        if partial and reply.startswith(partial):
            reply = reply[len(partial):]
        tokens = split_words(reply)
        seed = _digest(prompt)
        for i, token in enumerate(tokens):
            if i:
                # Jitter (0.6x to 1.4x) derived from the prompt keeps the pace lifelike yet
                # reproducible.
                self._sleep(self.token_delay_s * (0.6 + 0.8 * seed[i % len(seed)] / 255))
            yield Chunk(text=token)
        yield Chunk(finish_reason="stop", usage=_usage(messages, reply))

    def _calculate(self, messages: list[dict[str, Any]], expression: str) -> Iterator[Chunk]:
        """Think, call the calculator; once its result is back, think and answer with it."""
        last = messages[-1] if messages else {}
        if last.get("role") != "tool":
            thoughts = (f"The user wants the value of {expression}. Working it out by hand "
                        "could go wrong, so I will ask the calculator tool.")
            arguments = json.dumps({"expression": expression})
            yield from self._words(thoughts, reasoning=True)
            yield Chunk(finish_reason="tool_calls", usage=_usage(messages, thoughts),
                        tool_calls=(ToolCall("call_demo_1", "calculator", arguments),))
            return
        result = last.get("content") or ""
        if result.startswith("Error:"):
            thoughts = "The calculator could not work it out; I will say so."
            reply = f"The calculator could not compute `{expression}`: {result[6:].strip()}"
        else:
            thoughts = f"The calculator says {result}. That is the answer."
            reply = f"{expression} = **{result}**"
        yield from self._words(thoughts, reasoning=True)
        yield from self._words(reply)
        yield Chunk(finish_reason="stop", usage=_usage(messages, thoughts + reply))

    def _words(self, text: str, *, reasoning: bool = False) -> Iterator[Chunk]:
        for i, token in enumerate(split_words(text)):
            if i:
                self._sleep(self.token_delay_s)
            yield Chunk(reasoning=token) if reasoning else Chunk(text=token)


def _offers(tools: list[dict[str, Any]] | None, name: str) -> bool:
    return any((tool.get("function") or {}).get("name") == name for tool in tools or ())


def _usage(messages: list[dict[str, Any]], written: str) -> dict[str, int]:
    prompt_tokens = sum(_estimate_tokens(m.get("content") or "") + 4 for m in messages)
    completion_tokens = _estimate_tokens(written)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _sleep(seconds: float) -> None:
    # Looked up on every call, not bound at import: gevent may patch time.sleep after this
    # module was imported (e.g. gunicorn --preload), and the bound original would block.
    time.sleep(seconds)


def demo_reply(prompt: str, attachments: Sequence[Attachment] = ()) -> str:
    """The demo model's full markdown reply to `prompt`, naming its attachments; a pure
    function of both."""
    seed = _digest(prompt)
    parts = [_HEADINGS[seed[0] % len(_HEADINGS)], _OPENERS[seed[1] % len(_OPENERS)],
             "> " + quote_for_markdown(prompt)]
    if attachments:
        # Only the names are the person's text: they are escaped like the quoted prompt.
        named = ", ".join(_MD_SPECIAL.sub(r"\\\1", a.name) + f" ({a.details()})"
                          for a in attachments)
        parts.append(f"You attached: {named}.")
    parts.append(_BODY + _CLOSERS[seed[2] % len(_CLOSERS)])
    return "\n\n".join(parts)


def quote_for_markdown(text: str, limit: int = MAX_QUOTED_CHARS,
                       max_words: int = MAX_QUOTED_WORDS) -> str:
    """`text` on one line, cut to `limit` chars and `max_words` words, markdown-escaped."""
    words = text.split()
    if not words:
        return "*(an empty message)*"
    flat = " ".join(words[:max_words])[:limit].rstrip()
    if len(flat) < len(" ".join(words)):
        flat += "…"
    return _MD_SPECIAL.sub(r"\\\1", flat)


def split_words(text: str) -> list[str]:
    """Word tokens (a word plus the whitespace after it) whose concatenation is `text`."""
    return _TOKEN.findall(text) or ([text] if text else [])


def _digest(text: str) -> bytes:
    # hashlib, not hash(): str hashes are salted per process and would break determinism.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _estimate_tokens(text: str) -> int:
    # About four tokens for every three English words is close enough for a demo.
    return math.ceil(len(text.split()) * 4 / 3)
