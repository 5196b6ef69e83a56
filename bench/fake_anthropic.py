"""A scriptable fake of Anthropic's Messages API on real sockets, for tests and benchmarks.

It speaks the API's streaming wire format (named SSE events over chunked HTTP/1.1:
message_start, content_block_start, ping, content_block_delta, content_block_stop,
message_delta, message_stop, and `error` events), checks the headers the `anthropic`
client sends, and answers errors in the API's JSON shape. Scripts, records and socket
handling are FakeUpstream's; only the wire format differs:

    python -m bench.fake_anthropic --port 9200 --tokens 200 --token-delay-ms 20
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .fake_upstream import (
    IMAGE_MEDIA_TYPES,
    FakeUpstream,
    Reply,
    RequestRecord,
    _Handler,
    numbered_tokens,
    serve_until_stopped,
)

API_VERSION = "2023-06-01"
# Relay's finish reasons (what a Reply is scripted with) as the API's stop reasons.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "refusal"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
               529: "overloaded_error"}


def blocks_problem(blocks: list[Any], where: str) -> str | None:
    """What is wrong with a message's content blocks as the Messages API checks text and
    image blocks (base64 sources of an image type); None when they are fine."""
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
            return f"{where}.{j}.text: text content blocks must be non-empty"
        if kind == "image":
            source = block.get("source")
            if not isinstance(source, dict) or source.get("type") != "base64":
                return f"{where}.{j}.source: Input tag does not match the expected tags"
            if source.get("media_type") not in IMAGE_MEDIA_TYPES:
                return f"{where}.{j}.source.media_type: Input should be " + \
                    ", ".join(repr(t) for t in IMAGE_MEDIA_TYPES)
            try:
                base64.b64decode(source.get("data") or "", validate=True)
            except (ValueError, TypeError):
                return f"{where}.{j}.source.data: invalid base64 data"
            if not source.get("data"):
                return f"{where}.{j}.source.data: image data must be non-empty"
        elif kind not in ("text", "tool_use", "tool_result", "thinking", "redacted_thinking"):
            return f"{where}.{j}.type: Input tag {kind!r} does not match the expected tags"
    return None


class FakeAnthropic(FakeUpstream):
    """A fake Messages API; `url` is what ANTHROPIC_BASE_URL should be set to.

    Requests must carry the key (`x-api-key`, or `Authorization: Bearer`) and
    `anthropic-version`. A scripted Reply's
    `finish_reason` becomes the stop reason ("stop" → end_turn, "length" → max_tokens;
    None: the stream ends with neither message_delta nor message_stop), `send_done=False`
    leaves out message_stop, `error_after` sends an `error` event (overloaded_error).
    """

    def __init__(self, *args: Any, api_key: str = "sk-ant-test-key", **kwargs: Any) -> None:
        self.api_key = api_key
        super().__init__(*args, **kwargs)

    @property
    def handler_class(self) -> type[_Handler]:  # type: ignore[override]
        return _MessagesHandler

    @property
    def url(self) -> str:
        return self.endpoint  # the client adds /v1/messages itself


class _MessagesHandler(_Handler):
    server_version = "FakeAnthropic/1.0"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/v1/models":
            if self._authorised():
                model = {"type": "model", "id": "claude-fake", "display_name": "Claude Fake",
                         "created_at": "2025-01-01T00:00:00Z"}
                self._send_json(200, {"data": [model], "has_more": False,
                                      "first_id": model["id"], "last_id": model["id"]})
        else:
            super().do_GET()

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self._read_body()
        if raw is None:
            return
        if url.path != "/v1/messages":
            self._send_error_json(404, f"Unknown path {url.path}", "", None)
            return
        if not self._authorised():
            return
        self._serve_reply(url, raw)

    problem_type = ""  # Anthropic's errors carry their type in their own shape

    def _status_error(self, status: int) -> tuple[str, str | None]:
        return "", None

    # -- what the API checks ---------------------------------------------------------------
    def _authorised(self) -> bool:
        # The client sends the key as `x-api-key` or as a bearer token, by version.
        keys = {self.headers.get("x-api-key"),
                (self.headers.get("authorization") or "").removeprefix("Bearer ")}
        if self.fake.api_key not in keys:
            self._send_error_json(401, "invalid x-api-key", "", None)
            return False
        if not self.headers.get("anthropic-version"):
            self._send_error_json(400, "anthropic-version: header is required", "", None)
            return False
        return True

    def _check_request(self, body: Any) -> str | None:
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return "Content-Type must be application/json."
        if not isinstance(body, dict):
            return "The body must be a JSON object."
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model: Field required"
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return "max_tokens: Field required"
        system = body.get("system")
        if system is not None and not isinstance(system, str | list):
            return "system: Input should be a valid string"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                return f"messages.{i}.role: Input should be 'user' or 'assistant'"
            content = m.get("content")
            if isinstance(content, str) and not content:
                return f"messages.{i}: text content blocks must be non-empty"
            if not isinstance(content, str | list):
                return f"messages.{i}.content: Input should be a valid list"
            if isinstance(content, list):
                problem = blocks_problem(content, f"messages.{i}.content")
                if problem:
                    return problem
        last = messages[-1]
        if last["role"] == "assistant" and isinstance(last["content"], str) and \
                last["content"] != last["content"].rstrip():
            return "messages: final assistant content cannot end with trailing whitespace"
        return None

    # -- answers -----------------------------------------------------------------------------
    def _complete(self, record: RequestRecord, body: dict[str, Any], reply: Reply) -> None:
        if not self._pause(reply.first_token_delay_s):
            self._client_gone(record)
            return
        text = "".join(t for t in reply.tokens if isinstance(t, str))
        payload = {**_message(record, body, reply.finish_reason),
                   "content": [{"type": "text", "text": text}],
                   "usage": {"input_tokens": _input_tokens(body),
                             "output_tokens": len(reply.tokens)}}
        if self._send_json(200, payload, {"request-id": f"req_fake{record.id}"}):
            self.fake._update(record, status=200, finished=time.monotonic(),
                              tokens_sent=len(reply.tokens), outcome="complete")
        else:
            self._client_gone(record)

    def _stream(self, record: RequestRecord, body: dict[str, Any], reply: Reply) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("request-id", f"req_fake{record.id}")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.fake._update(record, status=200)

        def frame(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data)

        input_tokens = _input_tokens(body)
        start = {**_message(record, body, None), "content": [],
                 "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                           "cache_read_input_tokens": 0, "output_tokens": 1,
                           "service_tier": "standard"}}
        tokens = reply.tokens
        # Content blocks one after another: text, thinking (reasoning tokens) and tool_use
        # (tool-call tokens, as the OpenAI fake scripts them; calls are not interleaved).
        block: _Block | None = None
        opening = _event("message_start", {"type": "message_start", "message": start})
        if not tokens or isinstance(tokens[0], str):
            block = _Block(0, "text")
            opening += block.start()
        opening += _event("ping", {"type": "ping"})
        if not self._write(frame(opening)):
            self._client_gone(record)
            return
        for i in range(len(tokens) + 1):
            stop_here = i == reply.drop_after or i == reply.error_after
            if i == len(tokens) and not stop_here:
                break
            if not self._pause(reply.first_token_delay_s if i == 0 else reply.token_delay_s):
                self._client_gone(record)
                return
            if i == reply.drop_after:
                self._drop(record)
                return
            if i == reply.error_after:
                error = {"type": "error", "error": {"type": "overloaded_error",
                                                    "message": reply.error_message}}
                if self._write(frame(_event("error", error)) + b"0\r\n\r\n"):
                    self.fake._update(record, finished=time.monotonic(), outcome="error_event")
                else:
                    self._client_gone(record)
                return
            kind, head, delta = _part(tokens[i])
            events = b""
            if block is None or block.kind != kind or head is not None:
                if block is not None:
                    events += block.stop()
                block = _Block(0 if block is None else block.index + 1, kind, head)
                events += block.start()
            if delta is not None:
                events += _event("content_block_delta", {"type": "content_block_delta",
                                                         "index": block.index, "delta": delta})
            # (An empty chunk would end the chunked body: a token with nothing to send waits.)
            if events and not self._write(frame(events)):
                self._client_gone(record)
                return
            self.fake._token_sent(record, time.monotonic())

        # One write for the tail, as the real API's last events arrive together.
        tail = (block or _Block(0, "text")).stop()
        if reply.finish_reason is not None:
            usage = {"output_tokens": (reply.usage or {}).get("completion_tokens",
                                                              record.tokens_sent)}
            tail += _event("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": STOP_REASONS.get(reply.finish_reason,
                                                          reply.finish_reason),
                          "stop_sequence": None},
                "usage": usage})
            if reply.send_done:
                tail += _event("message_stop", {"type": "message_stop"})
        if self._write(frame(tail) + b"0\r\n\r\n"):
            self.fake._update(record, finished=time.monotonic(), outcome="complete")
        else:
            self._client_gone(record)

    def _send_error_json(self, status: int, message: str, kind: str, code: str | None,
                         headers: dict[str, str] | None = None) -> bool:
        body = {"type": "error",
                "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
                "request_id": "req_fake_error"}
        return self._send_json(status, body, headers)


@dataclass
class _Block:
    """The content block being streamed: its index, kind, and (tool_use) id and name."""

    index: int
    kind: str
    head: dict[str, Any] | None = None

    def start(self) -> bytes:
        if self.kind == "tool_use":
            block = {"type": "tool_use", **(self.head or {}), "input": {}}
        elif self.kind == "thinking":
            block = {"type": "thinking", "thinking": ""}
        else:
            block = {"type": "text", "text": ""}
        return _event("content_block_start", {"type": "content_block_start",
                                              "index": self.index, "content_block": block})

    def stop(self) -> bytes:
        return _event("content_block_stop", {"type": "content_block_stop", "index": self.index})


def _part(token: str | dict[str, Any]) -> tuple[str, dict[str, Any] | None, dict | None]:
    """A scripted token as (block kind, a new tool_use block's id and name, the delta)."""
    if isinstance(token, str):
        return "text", None, {"type": "text_delta", "text": token}
    thought = token.get("reasoning_content") or token.get("reasoning")
    if thought:
        return "thinking", None, {"type": "thinking_delta", "thinking": thought}
    fragment = (token.get("tool_calls") or [{}])[0]
    function = fragment.get("function") or {}
    head = {"id": fragment["id"], "name": function.get("name", "")} if fragment.get("id") \
        else None
    arguments = function.get("arguments")
    delta = {"type": "input_json_delta", "partial_json": arguments} if arguments else None
    return "tool_use", head, delta


def _event(name: str, data: dict[str, Any]) -> bytes:
    return (f"event: {name}\ndata: ".encode()
            + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")


def _message(record: RequestRecord, body: dict[str, Any],
             finish_reason: str | None) -> dict[str, Any]:
    stop = STOP_REASONS.get(finish_reason, finish_reason) if finish_reason else None
    return {"id": f"msg_fake{record.id}", "type": "message", "role": "assistant",
            "model": body["model"], "stop_reason": stop, "stop_sequence": None}


def _input_tokens(body: dict[str, Any]) -> int:
    system = body.get("system")
    words = len(system.split()) if isinstance(system, str) else 0
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        words += 4 + (len(content.split()) if isinstance(content, str) else 0)
    return words


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--api-key", default="sk-ant-test-key")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    parser.add_argument("--token-delay-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    tokens = numbered_tokens(args.tokens)

    def reply(body: dict[str, Any]) -> Reply:
        return Reply(tokens=tokens, token_delay_s=args.token_delay_ms / 1000)

    fake = FakeAnthropic(args.host, args.port, default_reply=reply, api_key=args.api_key)
    print(f"fake Anthropic API serving {args.tokens} tokens every {args.token_delay_ms:g} ms "
          f"at {fake.url}", flush=True)
    serve_until_stopped(fake)
    return 0


if __name__ == "__main__":
    sys.exit(main())
