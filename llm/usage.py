"""Token counts of a reply: the model's own when it sent them, else an estimate.

The estimate is deliberately simple and documented: about four characters of text per
token (English prose and code with the common BPE vocabularies land within ±30%), plus
four tokens of framing per chat message. Replies whose counts are estimated carry
`"estimated": true`, so nobody mistakes them for the provider's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role and separators around each message of a chat request
COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def estimate_tokens(text: str) -> int:
    """About how many tokens `text` is: one per four characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


IMAGE_TOKENS_MAX = 1600
PIXELS_PER_TOKEN = 750


def file_tokens(text: str | None, width: int | None, height: int | None) -> int:
    """About how many tokens the model reads of a file: its text as any text; an image by
    its area (about 750 pixels a token, at most IMAGE_TOKENS_MAX)."""
    if text is not None:
        return estimate_tokens(text)
    if width and height:
        return min(IMAGE_TOKENS_MAX, math.ceil(width * height / PIXELS_PER_TOKEN))
    return 0


def estimate_usage(messages: Iterable[Mapping[str, Any]], completion: str) -> dict[str, Any]:
    """Usage estimated from the request's messages (and their files) and the text the
    model wrote."""
    prompt = 0
    for message in messages:
        content = message.get("content")
        prompt += TOKENS_PER_MESSAGE + (estimate_tokens(content) if isinstance(content, str)
                                        else 0)
        for file in message.get("attachments") or ():
            prompt += file_tokens(file.text, file.width, file.height)
    completion_tokens = estimate_tokens(completion)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens, "estimated": True}


def add_usage(earlier: Mapping[str, Any] | None,
              later: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Two calls' usage together (a reply continued after a stop paid for both); estimated
    when either part was."""
    if not earlier:
        return dict(later) if later else None
    if not later:
        return dict(earlier)
    total: dict[str, Any] = {key: _count(earlier, key) + _count(later, key) for key in COUNTS}
    if earlier.get("estimated") or later.get("estimated"):
        total["estimated"] = True
    return total


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and value >= 0 else 0
