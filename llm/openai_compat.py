"""A Provider for any OpenAI-compatible Chat Completions server: OpenAI, vLLM, Ollama, llama.cpp."""

from __future__ import annotations

import base64
import copy
import json
import logging
import ssl
import time
from collections.abc import Iterator
from typing import Any

import gevent
import httpx2
import openai

from . import chat_sse, reasons
from .base import Attachment, Chunk, ProviderError, continuation_request
from .tool_calls import ToolCallAssembler

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the SDK refuses to start without one.
PLACEHOLDER_API_KEY = "unused"
DRAIN_TIMEOUT_S = 0.5
# A server that refused to stream is asked without streaming for this long, then tried again.
STREAM_REFUSAL_TTL_S = 600.0
# A reply that is not streamed arrives only once it is whole: wait at least this long for it.
WHOLE_REPLY_TIMEOUT_S = 300.0
# What a server (or a proxy before it) answers when it will not stream; for 400 and the like
# only when its message is about streaming.
REFUSES_STREAM_STATUSES = (400, 405, 415, 422, 501)


class OpenAICompatProvider:
    """Streams replies from an OpenAI-compatible server; every failure surfaces as ProviderError."""

    name = "openai"
    supports_tools = True
    settings_hint = "CHAT_MODEL and OPENAI_BASE_URL"  # what to check when the model is unknown

    def __init__(self, *, base_url: str | None, api_key: str | None, model: str,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0,
                 label: str | None = None) -> None:
        self.model = model
        self.label = label or model
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self._api_key = api_key or PLACEHOLDER_API_KEY
        self._stream_refused_at: float | None = None  # when the server last refused to stream
        self._client = self._make_client(base_url)
        url = self._client.base_url
        self._server = f"{url.host}:{url.port}" if url.port else str(url.host)

    def _make_client(self, base_url: str | None) -> openai.OpenAI:
        # Passing the base URL explicitly keeps the SDK from reading OPENAI_BASE_URL from the
        # environment behind Relay's configuration.
        return openai.OpenAI(base_url=base_url or DEFAULT_BASE_URL, api_key=self._api_key,
                             **self._client_options())

    def _client_options(self) -> dict[str, Any]:
        return {
            # Retrying (and telling the user about it) is Relay's decision, not the SDK's.
            "max_retries": 0,
            # httpx2 applies `read` to every socket read, so it bounds the wait for the first
            # token and the gap between two chunks, not the length of the whole reply.
            "timeout": openai.Timeout(self.read_timeout, connect=self.connect_timeout),
        }

    def for_model(self, model: str, label: str | None = None) -> OpenAICompatProvider:
        """The same server (and connection pool) asked for another of its models."""
        other = copy.copy(self)
        other.model, other.label = model, label or model
        return other

    def list_models(self, timeout: float = 2.0) -> list[str]:
        """The ids the server lists at `GET <base>/models`; raises openai.OpenAIError or
        httpx2.HTTPError when it cannot say."""
        page = self._client.with_options(timeout=timeout, max_retries=0).models.list()
        return [m.id for m in page.data if isinstance(getattr(m, "id", None), str)]

    def close(self) -> None:
        """Release the connection pool; later calls to stream() fail."""
        self._client.close()

    def stream(self, messages: list[dict[str, Any]],
               tools: list[dict[str, Any]] | None = None) -> Iterator[Chunk]:
        """Stream the reply to `messages` as Chunks, as llm.base.Provider.stream specifies.

        The SDK builds and sends the request (auth, base URL, timeouts, error statuses);
        the reply's events are read from the raw response by `chat_sse`, which skips the
        SDK's per-request payload transformation and its typed object per chunk.

        A server that refuses `stream: true` (some proxies do) is asked the same without
        streaming: the reply comes as one Chunk, and the last one has `streamed=False`.
        """
        plain: dict[str, Any] = {
            "model": self.model,
            "messages": [_wire_message(m) for m in continuation_request(messages)]}
        if tools:
            plain["tools"] = tools
        if self._refuses_streaming():
            yield from self._whole_reply(plain)
            return
        body = {**plain, "stream": True, "stream_options": {"include_usage": True}}
        refused = False
        response: httpx2.Response | None = None
        got_text = False
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None
        calls = ToolCallAssembler()
        try:
            try:
                response = self._client.post("/chat/completions", body=body,
                                             cast_to=httpx2.Response, stream=True)
            except openai.APIStatusError as err:
                if not (tools and err.status_code in (400, 422) and _about_tools(err)):
                    raise
                # A server (or model) that cannot call tools: the same request without them.
                log.info("model %s refused tools; asking again without them", self.model)
                del body["tools"]
                plain.pop("tools", None)
                response = self._client.post("/chat/completions", body=body,
                                             cast_to=httpx2.Response, stream=True)
            raw = response.iter_bytes()
            for event in chat_sse.chunks(raw):
                if event.get("usage") is not None:
                    usage = _usage_dict(event["usage"])
                # The usage event has `choices == []`; some servers send null there instead.
                for choice in event.get("choices") or ():
                    # Only one choice is asked for; some servers leave out `index` entirely.
                    if choice.get("index") not in (0, None):
                        continue
                    delta = choice.get("delta")
                    if not isinstance(delta, dict):
                        delta = {}
                    text = delta.get("content")
                    if text:
                        if not isinstance(text, str):
                            raise ValueError("delta content is not text")
                        got_text = True
                        yield Chunk(text=text)
                    else:
                        # vLLM and DeepSeek say `reasoning_content`; Ollama and OpenRouter
                        # `reasoning`.
                        thought = delta.get("reasoning_content") or delta.get("reasoning")
                        if thought:
                            if not isinstance(thought, str):
                                raise ValueError("delta reasoning is not text")
                            got_text = True
                            yield Chunk(reasoning=thought)
                    if "tool_calls" in delta and delta["tool_calls"]:
                        calls.add(delta["tool_calls"])
                    if choice.get("finish_reason"):
                        finish_reason = str(choice["finish_reason"])
            _drain(raw)
        except openai.APIStatusError as err:
            if not _refuses_stream(err):
                raise self._fail(err, self._status_error(err)) from None
            log.info("model %s: the server refused to stream (HTTP %s); asking without "
                     "streaming", self.model, err.status_code)
            self._stream_refused_at = time.monotonic()
            refused = True
        except (openai.APIConnectionError, httpx2.RequestError, ssl.SSLError) as err:
            # APIConnectionError includes APITimeoutError. Raw httpx2 errors come from
            # reading the stream, and escape the SDK when an error status's body stalls.
            if finish_reason is None:
                raise self._fail(err, self._transport_error(
                    err, streaming=response is not None, got_text=got_text)) from None
            # The reply itself is complete; only the trailing usage event or [DONE] was lost.
            log.info("model stream lost after its finish reason (%s)", reasons.cause_name(err))
        except chat_sse.StreamErrorEvent as err:
            raise self._fail(err, self._event_error(err.body)) from None
        except openai.OpenAIError as err:
            raise self._fail(err, ProviderError("The model request failed.")) from None
        except (ValueError, AttributeError, TypeError) as err:  # not the wire format
            raise self._fail(err, ProviderError(
                "The model server sent a malformed reply.", retryable=True)) from None
        finally:
            if response is not None:
                # Closing the HTTP response stops an abandoned reply being generated
                # upstream instead of running to the end.
                response.close()

        if refused:
            yield from self._whole_reply(plain)
            return
        if finish_reason is None:
            # A stream that just ends (with or without [DONE]) is, for Relay, a cut-off
            # reply, never a complete one.
            raise self._fail(None, ProviderError(
                "The model's reply was cut off (the stream ended without a finish reason).",
                retryable=True))
        yield Chunk(finish_reason=finish_reason, usage=usage, tool_calls=calls.calls())

    def _refuses_streaming(self) -> bool:
        refused_at = self._stream_refused_at
        return refused_at is not None and time.monotonic() - refused_at < STREAM_REFUSAL_TTL_S

    def _whole_reply(self, body: dict[str, Any]) -> Iterator[Chunk]:
        """The reply to `body` asked without streaming: its text as one Chunk, then the
        finish reason and usage with `streamed=False`; failures as stream() raises them."""
        response: httpx2.Response | None = None
        timeout = openai.Timeout(max(self.read_timeout, WHOLE_REPLY_TIMEOUT_S),
                                 connect=self.connect_timeout)
        try:
            # Read as a raw response so that closing it (a stop) abandons the request.
            response = self._client.post("/chat/completions", body=body,
                                         cast_to=httpx2.Response, stream=True,
                                         options={"timeout": timeout})
            reply = json.loads(response.read())
            if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
                raise chat_sse.StreamErrorEvent(reply["error"])
            choice = reply["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
            if not isinstance(text, str):
                raise ValueError("message content is not text")
            finish_reason = str(choice.get("finish_reason") or "stop")
            usage = _usage_dict(reply["usage"]) if reply.get("usage") is not None else None
            calls = ToolCallAssembler()
            asked = (choice.get("message") or {}).get("tool_calls")
            if asked:  # the whole call in one piece, as a stream's first delta would carry it
                calls.add([{**call, "index": i} for i, call in enumerate(asked)
                           if isinstance(call, dict)])
        except openai.APIStatusError as err:
            raise self._fail(err, self._status_error(err)) from None
        except (openai.APIConnectionError, httpx2.RequestError, ssl.SSLError) as err:
            raise self._fail(err, self._transport_error(
                err, streaming=False, got_text=False)) from None
        except chat_sse.StreamErrorEvent as err:
            raise self._fail(err, self._event_error(err.body)) from None
        except openai.OpenAIError as err:
            raise self._fail(err, ProviderError("The model request failed.")) from None
        except (ValueError, AttributeError, TypeError, KeyError, IndexError) as err:
            raise self._fail(err, ProviderError(
                "The model server sent a malformed reply.", retryable=True)) from None
        finally:
            if response is not None:
                response.close()
        if text:
            yield Chunk(text=text)
        yield Chunk(finish_reason=finish_reason, usage=usage, streamed=False,
                    tool_calls=calls.calls())

    def check(self, timeout: float = 2.0) -> str | None:
        """Whether the server answers: None when `GET <base>/models` does, a short human
        reason otherwise. A server without that endpoint (HTTP 404) still counts as up."""
        try:
            self._client.with_options(timeout=timeout, max_retries=0).models.list()
        except openai.APIStatusError as err:
            return None if err.status_code == 404 else self._status_error(err).reason
        except (openai.APIConnectionError, openai.APITimeoutError, httpx2.HTTPError) as err:
            return self._transport_error(err, streaming=False, got_text=False).reason
        return None

    # -- mapping SDK failures to user-facing reasons ---------------------------------------
    def _status_error(self, err: openai.APIStatusError) -> ProviderError:
        body = err.body
        message = body.get("message") if isinstance(body, dict) else body
        return reasons.status_error(err.status_code, err.response.headers,
                                    reasons.server_message(message, self._secret),
                                    model=self.model, settings=self.settings_hint)

    def _transport_error(self, err: BaseException, *, streaming: bool,
                         got_text: bool) -> ProviderError:
        cause = err.__cause__ if isinstance(err, openai.APIConnectionError) else err
        return reasons.transport_error(
            cause if cause is not None else err, server=self._server,
            connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
            streaming=streaming, got_text=got_text,
            timed_out=isinstance(err, openai.APITimeoutError))

    def _event_error(self, body: Any) -> ProviderError:
        # An `{"error": {...}}` event inside a 200 stream: the server gave up mid-reply.
        message = body.get("message") if isinstance(body, dict) else body
        detail = reasons.server_message(message, self._secret)
        reason = "The model server reported an error mid-reply."
        if detail:
            reason = f"{reason} Server said: {detail}"
        kind = body.get("type") if isinstance(body, dict) else None
        code = str(body.get("code") or "") if isinstance(body, dict) else ""
        retryable = kind in (None, "server_error", "overloaded_error") or code in ("429", "503")
        return ProviderError(reason, retryable=retryable)

    @property
    def _secret(self) -> str | None:
        return None if self._api_key == PLACEHOLDER_API_KEY else self._api_key

    def _fail(self, err: BaseException | None, error: ProviderError) -> ProviderError:
        # The reason is already scrubbed; the exception class names help operators without
        # copying the SDK's message (which may echo server text) into the log.
        log.warning("model %s failed: %s [%s]", self.model, error.reason,
                    reasons.cause_name(err) if err is not None else "no finish reason")
        return error


def _drain(raw: Iterator[bytes]) -> None:
    """Read what follows `[DONE]` (the end of the chunked body, already on its way), so the
    connection goes back to the pool for the next reply instead of being closed; a server
    that keeps the body open is not waited for."""
    with gevent.Timeout(DRAIN_TIMEOUT_S, False):
        for _ in raw:
            pass


def _refuses_stream(err: openai.APIStatusError) -> bool:
    """Whether an error status says "no streaming here" rather than "bad request"."""
    if err.status_code not in REFUSES_STREAM_STATUSES:
        return False
    return err.status_code == 501 or "stream" in f"{err.message} {err.body}".lower()


def _about_tools(err: openai.APIStatusError) -> bool:
    body = err.body
    message = body.get("message") if isinstance(body, dict) else body
    return "tool" in str(message or err.message).lower()


def _wire_message(message: dict[str, Any]) -> dict[str, Any]:
    """A history message as the Chat Completions API takes it (tool turns included; a
    prompt's attachments as content parts before its text)."""
    wire = {"role": message["role"], "content": message["content"]}
    if message.get("attachments"):
        wire["content"] = content_parts(message["attachments"], message["content"])
    if message.get("tool_calls"):
        wire["tool_calls"] = message["tool_calls"]
    if message["role"] == "tool":
        wire["tool_call_id"] = message["tool_call_id"]
    return wire


def content_parts(attachments: list[Attachment], text: str) -> list[dict[str, Any]]:
    """Attachments as Chat Completions content parts: a document as a text part, an image
    as an `image_url` part with a base64 data: URL; then the prompt's text."""
    parts: list[dict[str, Any]] = []
    for attachment in attachments:
        if attachment.is_image:
            encoded = base64.b64encode(attachment.data).decode("ascii")
            parts.append({"type": "image_url", "image_url": {
                "url": f"data:{attachment.type};base64,{encoded}"}})
        else:
            parts.append({"type": "text", "text": attachment.document()})
    parts.append({"type": "text", "text": text})
    return parts


def _usage_dict(usage: Any) -> dict[str, int] | None:
    try:
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        total = int(usage.get("total_tokens") or prompt + completion)
    except (AttributeError, TypeError, ValueError):
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
