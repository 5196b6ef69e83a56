"""The short, human reasons a model failure is shown with, shared by every HTTP provider.

Each provider maps its SDK's exceptions onto these: an HTTP status (with its headers and
the server's own message), or a transport failure (connect, timeout, dropped stream).
Nothing here ever puts an API key, a stack trace or an object repr into a reason.
"""

from __future__ import annotations

import email.utils
import math
import re
import ssl
import time
from typing import Any

import httpx2

from .base import ProviderError

MAX_SERVER_MESSAGE_CHARS = 200

_SK_TOKEN = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{3,}")
_BEARER = re.compile(r"(?i)\bbearer\s+\S+")
# Long opaque runs of letters and digits look like credentials whatever their prefix.
_OPAQUE_TOKEN = re.compile(r"\b(?=[A-Za-z0-9_\-]*\d)(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_HTML = re.compile(r"<(?:!doctype|html|head|body|title|h1|p|pre|center)\b", re.IGNORECASE)


def status_error(status: int, headers: Any, server_message: str | None, *, model: str,
                 settings: str) -> ProviderError:
    """The ProviderError for an HTTP error status; `settings` names what to check on a 404."""
    retry_after = retry_after_seconds(headers)
    wait = f"; try again in {math.ceil(retry_after)} s" if retry_after else ""
    if status == 429:
        reason = f"The model is rate-limited (HTTP 429){wait or '; try again shortly'}."
    elif status == 401:
        reason = "The model server rejected the API key (HTTP 401)."
    elif status == 403:
        reason = "The model server refused access (HTTP 403)."
    elif status == 404:
        reason = (f"The model server has no model or endpoint for “{clip(model, 80)}”"
                  f" (HTTP 404); check {settings}.")
    elif status in (400, 413, 422):
        reason = f"The model server rejected the request (HTTP {status})."
    elif status == 529:
        reason = f"The model is overloaded (HTTP 529){wait or '; try again shortly'}."
    else:
        reason = f"The model server returned HTTP {status}{wait}."
    if server_message:
        reason = f"{reason} Server said: {server_message}"
    retryable = status in (408, 409, 429) or status >= 500
    return ProviderError(reason, retryable=retryable, retry_after=retry_after, status=status)


def transport_error(cause: BaseException, *, server: str, connect_timeout: float,
                    read_timeout: float, streaming: bool, got_text: bool,
                    timed_out: bool = False) -> ProviderError:
    """The ProviderError for a failure below HTTP: `cause` is the httpx2/ssl exception
    (`timed_out` when the SDK only says that the request timed out)."""
    read = seconds(read_timeout)
    if isinstance(cause, httpx2.ConnectTimeout):
        reason = (f"Could not connect to the model server at {server} within "
                  f"{seconds(connect_timeout)}.")
    elif isinstance(cause, httpx2.PoolTimeout):
        reason = "Timed out waiting for a free connection to the model server."
    elif isinstance(cause, httpx2.WriteTimeout):
        reason = "Timed out sending the request to the model server."
    elif timed_out or isinstance(cause, httpx2.TimeoutException):
        if got_text:
            reason = f"The model stopped sending for {read}; the reply was cut off."
        else:
            reason = f"The model did not answer within {read}."
    elif isinstance(cause, httpx2.ConnectError):
        reason = f"Could not connect to the model server at {server}{connect_why(cause)}."
    elif isinstance(cause, ssl.SSLError):
        reason = f"The TLS connection to the model server at {server} failed."
    elif streaming:
        reason = "The connection to the model server dropped mid-reply."
    else:
        reason = "The model server closed the connection without answering."
    return ProviderError(reason, retryable=True)


def server_message(message: object, api_key: str | None) -> str | None:
    """A server's own error message fit to show, scrubbed of credentials and shortened to
    MAX_SERVER_MESSAGE_CHARS; None if unusable."""
    if not isinstance(message, str):
        return None
    message = " ".join(_CONTROL.sub(" ", message).split())
    if not message or _HTML.search(message):
        return None  # an HTML body is a proxy's error page, not a message for people
    if api_key and api_key in message:
        if len(api_key) < 8:
            # Replacing a key this short would mangle ordinary words; drop the message.
            return None
        message = message.replace(api_key, "[redacted]")
    message = _SK_TOKEN.sub("[redacted]", message)
    message = _BEARER.sub("Bearer [redacted]", message)
    message = _OPAQUE_TOKEN.sub("[redacted]", message)
    # Scrubbed first, cut after: a secret cut in two would no longer be recognised.
    return clip(message, MAX_SERVER_MESSAGE_CHARS)


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds the server asked us to wait (Retry-After-Ms, Retry-After seconds or date)."""
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            wait = float(value) * scale
        except ValueError:
            continue
        return wait if math.isfinite(wait) and wait > 0 else None
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        wait = email.utils.mktime_tz(parsed) - time.time()
    except (TypeError, ValueError, OverflowError):
        return None
    return float(wait) if wait > 0 else None


def seconds(value: float) -> str:
    return f"{value:g} s"


def connect_why(cause: BaseException) -> str:
    text = str(cause).lower()
    if "refused" in text:
        return " (connection refused)"
    if "name" in text and ("resolution" in text or "known" in text) or "getaddrinfo" in text:
        return " (unknown host)"
    return ""


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cause_name(err: BaseException) -> str:
    names = [type(err).__name__]
    if err.__cause__ is not None:
        names.append(type(err.__cause__).__name__)
    return " <- ".join(names)
