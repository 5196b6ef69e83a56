"""A Provider for any OpenAI-compatible Chat Completions server: OpenAI, vLLM, Ollama, llama.cpp."""

from __future__ import annotations

import email.utils
import logging
import math
import re
import ssl
import time
from collections.abc import Iterator
from typing import Any

import gevent
import httpx2
import openai

from . import chat_sse
from .base import Chunk, ProviderError, continuation_request

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Local servers (Ollama, llama.cpp, vLLM) ignore the key, but the SDK refuses to start without one.
PLACEHOLDER_API_KEY = "unused"
MAX_SERVER_MESSAGE_CHARS = 200
DRAIN_TIMEOUT_S = 0.5

_SK_TOKEN = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{3,}")
_BEARER = re.compile(r"(?i)\bbearer\s+\S+")
# Long opaque runs of letters and digits look like credentials whatever their prefix.
_OPAQUE_TOKEN = re.compile(r"\b(?=[A-Za-z0-9_\-]*\d)(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class OpenAICompatProvider:
    """Streams replies from an OpenAI-compatible server; every failure surfaces as ProviderError."""

    name = "openai"

    def __init__(self, *, base_url: str | None, api_key: str | None, model: str,
                 connect_timeout: float = 10.0, read_timeout: float = 60.0) -> None:
        self.model = model
        self.label = model
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self._api_key = api_key or PLACEHOLDER_API_KEY
        # Passing the base URL explicitly keeps the SDK from reading OPENAI_BASE_URL from the
        # environment behind Relay's configuration.
        self._client = openai.OpenAI(
            base_url=base_url or DEFAULT_BASE_URL,
            api_key=self._api_key,
            # Retrying (and telling the user about it) is Relay's decision, not the SDK's.
            max_retries=0,
            # httpx2 applies `read` to every socket read, so it bounds the wait for the first
            # token and the gap between two chunks, not the length of the whole reply.
            timeout=openai.Timeout(self.read_timeout, connect=self.connect_timeout),
        )
        url = self._client.base_url
        self._server = f"{url.host}:{url.port}" if url.port else str(url.host)

    def close(self) -> None:
        """Release the connection pool; later calls to stream() fail."""
        self._client.close()

    def stream(self, messages: list[dict[str, str]]) -> Iterator[Chunk]:
        """Stream the reply to `messages` as Chunks, as llm.base.Provider.stream specifies.

        The SDK builds and sends the request (auth, base URL, timeouts, error statuses);
        the reply's events are read from the raw response by `chat_sse`, which skips the
        SDK's per-request payload transformation and its typed object per chunk.
        """
        body = {"model": self.model,
                "messages": [{"role": m["role"], "content": m["content"]}
                             for m in continuation_request(messages)],
                "stream": True, "stream_options": {"include_usage": True}}
        response: httpx2.Response | None = None
        got_text = False
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None
        try:
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
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if text:
                        if not isinstance(text, str):
                            raise ValueError("delta content is not text")
                        got_text = True
                        yield Chunk(text=text)
                    if choice.get("finish_reason"):
                        finish_reason = str(choice["finish_reason"])
            _drain(raw)
        except openai.APIStatusError as err:
            raise self._fail(err, self._status_error(err)) from None
        except (openai.APIConnectionError, httpx2.RequestError, ssl.SSLError) as err:
            # APIConnectionError includes APITimeoutError. Raw httpx2 errors come from
            # reading the stream, and escape the SDK when an error status's body stalls.
            if finish_reason is None:
                raise self._fail(err, self._transport_error(
                    err, streaming=response is not None, got_text=got_text)) from None
            # The reply itself is complete; only the trailing usage event or [DONE] was lost.
            log.info("model stream lost after its finish reason (%s)", _cause_name(err))
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

        if finish_reason is None:
            # A stream that just ends (with or without [DONE]) is, for Relay, a cut-off
            # reply, never a complete one.
            raise self._fail(None, ProviderError(
                "The model's reply was cut off (the stream ended without a finish reason).",
                retryable=True))
        yield Chunk(finish_reason=finish_reason, usage=usage)

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
        status = err.status_code
        retry_after = _retry_after(err.response.headers)
        wait = f"; try again in {math.ceil(retry_after)} s" if retry_after else ""
        if status == 429:
            reason = f"The model is rate-limited (HTTP 429){wait or '; try again shortly'}."
        elif status == 401:
            reason = "The model server rejected the API key (HTTP 401)."
        elif status == 403:
            reason = "The model server refused access (HTTP 403)."
        elif status == 404:
            reason = (f"The model server has no model or endpoint for “{_clip(self.model, 80)}”"
                      " (HTTP 404); check CHAT_MODEL and OPENAI_BASE_URL.")
        elif status in (400, 413, 422):
            reason = f"The model server rejected the request (HTTP {status})."
        else:
            reason = f"The model server returned HTTP {status}{wait}."
        detail = self._server_message(err.body)
        if detail:
            reason = f"{reason} Server said: {detail}"
        retryable = status in (408, 409, 429) or status >= 500
        return ProviderError(reason, retryable=retryable, retry_after=retry_after, status=status)

    def _transport_error(self, err: BaseException, *, streaming: bool,
                         got_text: bool) -> ProviderError:
        cause = err.__cause__ if isinstance(err, openai.APIConnectionError) else err
        read = _seconds(self.read_timeout)
        if isinstance(cause, httpx2.ConnectTimeout):
            reason = (f"Could not connect to the model server at {self._server} within "
                      f"{_seconds(self.connect_timeout)}.")
        elif isinstance(cause, httpx2.PoolTimeout):
            reason = "Timed out waiting for a free connection to the model server."
        elif isinstance(cause, httpx2.WriteTimeout):
            reason = "Timed out sending the request to the model server."
        elif isinstance(err, openai.APITimeoutError | httpx2.TimeoutException):
            if got_text:
                reason = f"The model stopped sending for {read}; the reply was cut off."
            else:
                reason = f"The model did not answer within {read}."
        elif isinstance(cause, httpx2.ConnectError):
            reason = f"Could not connect to the model server at {self._server}{_why(cause)}."
        elif isinstance(cause, ssl.SSLError):
            reason = f"The TLS connection to the model server at {self._server} failed."
        elif streaming:
            reason = "The connection to the model server dropped mid-reply."
        else:
            reason = "The model server closed the connection without answering."
        return ProviderError(reason, retryable=True)

    def _event_error(self, body: Any) -> ProviderError:
        # An `{"error": {...}}` event inside a 200 stream: the server gave up mid-reply.
        detail = self._server_message(body)
        reason = "The model server reported an error mid-reply."
        if detail:
            reason = f"{reason} Server said: {detail}"
        kind = body.get("type") if isinstance(body, dict) else None
        code = str(body.get("code") or "") if isinstance(body, dict) else ""
        retryable = kind in (None, "server_error", "overloaded_error") or code in ("429", "503")
        return ProviderError(reason, retryable=retryable)

    def _server_message(self, body: object) -> str | None:
        """The server's own error message, scrubbed of credentials, or None if unusable."""
        message = body.get("message") if isinstance(body, dict) else body
        if not isinstance(message, str):
            return None
        message = " ".join(_CONTROL.sub(" ", message).split())
        if not message or len(message) >= MAX_SERVER_MESSAGE_CHARS or "<" in message:
            # Long or HTML bodies are proxy error pages or dumps, not messages for people.
            return None
        if self._api_key != PLACEHOLDER_API_KEY and self._api_key in message:
            if len(self._api_key) < 8:
                # Replacing a key this short would mangle ordinary words; drop the message.
                return None
            message = message.replace(self._api_key, "[redacted]")
        message = _SK_TOKEN.sub("[redacted]", message)
        message = _BEARER.sub("Bearer [redacted]", message)
        message = _OPAQUE_TOKEN.sub("[redacted]", message)
        return message

    def _fail(self, err: BaseException | None, error: ProviderError) -> ProviderError:
        # The reason is already scrubbed; the exception class names help operators without
        # copying the SDK's message (which may echo server text) into the log.
        log.warning("model %s failed: %s [%s]", self.model, error.reason,
                    _cause_name(err) if err is not None else "no finish reason")
        return error


def _drain(raw: Iterator[bytes]) -> None:
    """Read what follows `[DONE]` (the end of the chunked body, already on its way), so the
    connection goes back to the pool for the next reply instead of being closed; a server
    that keeps the body open is not waited for."""
    with gevent.Timeout(DRAIN_TIMEOUT_S, False):
        for _ in raw:
            pass


def _usage_dict(usage: Any) -> dict[str, int] | None:
    try:
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        total = int(usage.get("total_tokens") or prompt + completion)
    except (AttributeError, TypeError, ValueError):
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait (Retry-After-Ms, Retry-After seconds or date)."""
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        return seconds if math.isfinite(seconds) and seconds > 0 else None
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        seconds = email.utils.mktime_tz(parsed) - time.time()
    except (TypeError, ValueError, OverflowError):
        return None
    return float(seconds) if seconds > 0 else None


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _why(cause: BaseException) -> str:
    text = str(cause).lower()
    if "refused" in text:
        return " (connection refused)"
    if "name" in text and ("resolution" in text or "known" in text) or "getaddrinfo" in text:
        return " (unknown host)"
    return ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cause_name(err: BaseException) -> str:
    names = [type(err).__name__]
    if err.__cause__ is not None:
        names.append(type(err.__cause__).__name__)
    return " <- ".join(names)
