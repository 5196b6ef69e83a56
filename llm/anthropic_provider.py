"""A Provider for Anthropic's Messages API, through the `anthropic` package's client."""

from __future__ import annotations

import base64
import copy
import json
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import anthropic
import gevent
import httpx2

from . import reasons
from .base import Attachment, Chunk, ProviderError, ToolCall

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
DRAIN_TIMEOUT_S = 0.5
# The API's stop reasons in the vocabulary the rest of Relay uses (OpenAI's).
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls",
                  "refusal": "content_filter"}
RETRYABLE_EVENT_ERRORS = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


class AnthropicProvider:
    """Streams replies from Anthropic's Messages API; every failure surfaces as ProviderError.

    A partial reply is continued natively: it is sent as the last (assistant) message, and
    the model writes on from its last character. The API refuses a final assistant message
    ending in whitespace, so that whitespace is held back from the request and matched
    against the start of the continuation instead; the seam is exact (`continues_exactly`).
    """

    name = "anthropic"
    continues_exactly = True
    supports_tools = True
    settings_hint = "the model name in CHAT_MODELS and ANTHROPIC_BASE_URL"

    def __init__(self, *, api_key: str | None, model: str, base_url: str | None = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, connect_timeout: float = 10.0,
                 read_timeout: float = 60.0, label: str | None = None) -> None:
        self.model = model
        self.label = label or model
        self.max_tokens = int(max_tokens)
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self._api_key = api_key
        # Every value is passed, so the SDK reads no key, URL or profile from the
        # environment behind Relay's configuration.
        self._client = anthropic.Anthropic(
            api_key=api_key or "unused", base_url=base_url or DEFAULT_BASE_URL,
            max_retries=0,  # retrying (and saying so) is Relay's decision
            timeout=anthropic.Timeout(self.read_timeout, connect=self.connect_timeout))
        url = self._client.base_url
        self._server = f"{url.host}:{url.port}" if url.port else str(url.host)

    def close(self) -> None:
        """Release the connection pool; later calls to stream() fail."""
        self._client.close()

    def for_model(self, model: str, label: str | None = None) -> AnthropicProvider:
        """Another model through the same client (and connection pool)."""
        other = copy.copy(self)
        other.model, other.label = model, label or model
        return other

    def stream(self, messages: list[dict[str, Any]],
               tools: list[dict[str, Any]] | None = None) -> Iterator[Chunk]:
        """Stream the reply to `messages` as Chunks, as llm.base.Provider.stream specifies.

        `tools` (OpenAI function schemas) are offered as Anthropic tools; `tool_use` blocks
        come back as the last Chunk's `tool_calls`, and thinking blocks as reasoning.
        """
        system, turns, held_space = request_messages(messages)
        params: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens,
                                  "messages": turns, "stream": True}
        if system:
            params["system"] = system
        if tools:
            params["tools"] = [anthropic_tool(tool) for tool in tools]
        stream: anthropic.Stream | None = None
        got_text = False
        stop_reason: str | None = None
        calls: dict[int, dict[str, Any]] = {}  # tool_use blocks by index
        prompt_tokens = completion_tokens = 0
        try:
            stream = self._client.messages.create(**params)
            for event in stream:
                kind = event.type
                if kind == "content_block_delta":
                    text = getattr(event.delta, "text", None)  # thinking and tool input: not text
                    if text and event.delta.type == "text_delta":
                        if held_space:
                            text, held_space = skip_held_space(text, held_space)
                        if text:
                            got_text = True
                            yield Chunk(text=text)
                    elif event.delta.type == "thinking_delta":
                        thought = getattr(event.delta, "thinking", None)
                        if thought:
                            got_text = True
                            yield Chunk(reasoning=thought)
                    elif event.delta.type == "input_json_delta" and event.index in calls:
                        calls[event.index]["input"].append(event.delta.partial_json or "")
                elif kind == "content_block_start":
                    block = event.content_block
                    if block.type == "tool_use":
                        calls[event.index] = {"id": block.id, "name": block.name, "input": []}
                elif kind == "message_start":
                    prompt_tokens = _input_tokens(event.message.usage, prompt_tokens)
                    completion_tokens = event.message.usage.output_tokens or 0
                elif kind == "message_delta":
                    if event.delta.stop_reason:
                        stop_reason = str(event.delta.stop_reason)
                    prompt_tokens = _input_tokens(event.usage, prompt_tokens)
                    completion_tokens = event.usage.output_tokens or completion_tokens
                elif kind == "message_stop":
                    # The body ends right after: read that end, so the connection goes back
                    # to the pool (a server that keeps it open is not waited for).
                    with gevent.Timeout(DRAIN_TIMEOUT_S, False):
                        for _ in stream:
                            pass
                    break
        except anthropic.APIStatusError as err:
            if stream is None:
                raise self._fail(err, self._status_error(err)) from None
            # An `error` event inside the 200 stream: the model gave up mid-reply.
            raise self._fail(err, self._event_error(err)) from None
        except (anthropic.APIConnectionError, httpx2.RequestError, ssl.SSLError) as err:
            # Raw httpx2 errors come from reading the stream; the SDK wraps only the request.
            if stop_reason is None:
                raise self._fail(err, self._transport_error(
                    err, streaming=stream is not None, got_text=got_text)) from None
            log.info("model stream lost after its stop reason (%s)", reasons.cause_name(err))
        except anthropic.AnthropicError as err:
            raise self._fail(err, ProviderError("The model request failed.")) from None
        except (ValueError, AttributeError, TypeError) as err:  # not the wire format
            raise self._fail(err, ProviderError(
                "The model server sent a malformed reply.", retryable=True)) from None
        finally:
            if stream is not None:
                # Closing the HTTP response stops an abandoned reply being generated.
                stream.close()

        if stop_reason is None:
            raise self._fail(None, ProviderError(
                "The model's reply was cut off (the stream ended without a stop reason).",
                retryable=True))
        yield Chunk(finish_reason=FINISH_REASONS.get(stop_reason, stop_reason),
                    usage={"prompt_tokens": prompt_tokens,
                           "completion_tokens": completion_tokens,
                           "total_tokens": prompt_tokens + completion_tokens},
                    tool_calls=tuple(ToolCall(c["id"], c["name"], "".join(c["input"]) or "{}")
                                     for _, c in sorted(calls.items())))

    def check(self, timeout: float = 2.0) -> str | None:
        """Whether the API answers: None when `GET /v1/models` does (a 404 counts as up),
        a short human reason otherwise."""
        try:
            self._client.with_options(timeout=timeout, max_retries=0).models.list(limit=1)
        except anthropic.APIStatusError as err:
            return None if err.status_code == 404 else self._status_error(err).reason
        except (anthropic.APIConnectionError, httpx2.HTTPError) as err:
            return self._transport_error(err, streaming=False, got_text=False).reason
        return None

    # -- mapping SDK failures to user-facing reasons ---------------------------------------
    def _status_error(self, err: anthropic.APIStatusError) -> ProviderError:
        return reasons.status_error(err.status_code, err.response.headers,
                                    reasons.server_message(err.api_message, self._api_key),
                                    model=self.model, settings=self.settings_hint)

    def _event_error(self, err: anthropic.APIStatusError) -> ProviderError:
        reason = "The model server reported an error mid-reply."
        detail = reasons.server_message(err.api_message, self._api_key)
        if detail:
            reason = f"{reason} Server said: {detail}"
        return ProviderError(reason, retryable=err.type in RETRYABLE_EVENT_ERRORS)

    def _transport_error(self, err: BaseException, *, streaming: bool,
                         got_text: bool) -> ProviderError:
        cause = err.__cause__ if isinstance(err, anthropic.APIConnectionError) else err
        return reasons.transport_error(
            cause if cause is not None else err, server=self._server,
            connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
            streaming=streaming, got_text=got_text,
            timed_out=isinstance(err, anthropic.APITimeoutError))

    def _fail(self, err: BaseException | None, error: ProviderError) -> ProviderError:
        log.warning("model %s failed: %s [%s]", self.model, error.reason,
                    reasons.cause_name(err) if err is not None else "no stop reason")
        return error


def anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI function schema as an Anthropic tool."""
    function = tool["function"]
    return {"name": function["name"], "description": function.get("description", ""),
            "input_schema": function.get("parameters") or {"type": "object"}}


def _blocks(message: dict[str, Any]) -> tuple[str, Any]:
    """A history message's role and content for the Messages API: tool turns (the OpenAI
    shape Relay keeps) become `tool_use` and `tool_result` blocks."""
    role, content = message["role"], message.get("content")
    if role == "tool":
        return "user", [{"type": "tool_result", "tool_use_id": message["tool_call_id"],
                         "content": content or "",
                         "is_error": (content or "").startswith("Error:")}]
    if message.get("tool_calls"):
        blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
        for call in message["tool_calls"]:
            try:
                arguments = json.loads(call["function"]["arguments"] or "{}")
            except ValueError:
                arguments = {}
            blocks.append({"type": "tool_use", "id": call["id"],
                           "name": call["function"]["name"],
                           "input": arguments if isinstance(arguments, dict) else {}})
        return role, blocks
    if message.get("attachments"):
        return role, attachment_blocks(message["attachments"], content or "")
    return role, content


def attachment_blocks(attachments: list[Attachment], text: str) -> list[dict[str, Any]]:
    """Attachments as Messages API blocks: a document as a text block, an image as an
    `image` block with a base64 source; then the prompt's text."""
    blocks: list[dict[str, Any]] = []
    for attachment in attachments:
        if attachment.is_image:
            blocks.append({"type": "image", "source": {
                "type": "base64", "media_type": attachment.type,
                "data": base64.b64encode(attachment.data).decode("ascii")}})
        else:
            blocks.append({"type": "text", "text": attachment.document()})
    if text:
        blocks.append({"type": "text", "text": text})
    return blocks


def _joined(first: Any, second: Any) -> Any:
    if isinstance(first, str) and isinstance(second, str):
        return f"{first}\n\n{second}"
    return _as_blocks(first) + _as_blocks(second)


def _as_blocks(content: Any) -> list[dict[str, Any]]:
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


def request_messages(messages: list[dict[str, Any]]
                     ) -> tuple[str | None, list[dict[str, Any]], str]:
    """Relay's history as the Messages API wants it: (system, turns, held-back whitespace).

    System messages become the `system` parameter; turns alternate user/assistant (two in
    a row are joined) and start with the user; empty ones are left out. A final assistant
    message (a partial reply to go on from) loses its trailing whitespace, which the API
    refuses; that whitespace is returned, to be matched against the continuation.
    """
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system"
                         and m["content"])
    turns: list[dict[str, Any]] = []
    for m in messages:
        role, content = _blocks(m)
        if role == "system" or not content or (role == "assistant" and not turns):
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1] = {"role": role, "content": _joined(turns[-1]["content"], content)}
        else:
            turns.append({"role": role, "content": content})
    held = ""
    if turns and turns[-1]["role"] == "assistant" and isinstance(turns[-1]["content"], str):
        partial = turns[-1]["content"]
        kept = partial.rstrip()
        held = partial[len(kept):]
        if kept:
            turns[-1] = {"role": "assistant", "content": kept}
        else:
            turns.pop()
    return system or None, turns, held


def skip_held_space(text: str, held: str) -> tuple[str, str]:
    """The continuation's `text` without the whitespace already shown (`held`), as far as
    it matches; and what of `held` is still to be matched ("" once the seam is passed)."""
    i = 0
    while i < len(text) and i < len(held) and text[i] == held[i]:
        i += 1
    if i == len(text):
        return "", held[i:]  # all of it was already shown; more may follow
    return text[i:], ""


def _input_tokens(usage: Any, default: int) -> int:
    """Input tokens of a usage object: plain, cache writes and cache reads together."""
    plain = getattr(usage, "input_tokens", None)
    if plain is None:
        return default
    return plain + (getattr(usage, "cache_creation_input_tokens", None) or 0) + \
        (getattr(usage, "cache_read_input_tokens", None) or 0)
