"""Model backends for Relay: the Provider interface and `make_provider` to build one from config."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .base import Chunk, Provider, ProviderError
from .demo import DemoProvider
from .openai_compat import OpenAICompatProvider

__all__ = [
    "Chunk",
    "DemoProvider",
    "OpenAICompatProvider",
    "Provider",
    "ProviderError",
    "make_provider",
]

PROVIDERS = ("openai", "demo")
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def make_provider(config: Mapping[str, Any]) -> Provider:
    """The Provider `config` asks for; raises ValueError for an unknown name or a bad number.

    CHAT_PROVIDER picks "openai" or "demo"; left empty it is "openai" when OPENAI_API_KEY or
    OPENAI_BASE_URL is set and "demo" otherwise.
    """
    base_url = _text(config, "OPENAI_BASE_URL")
    api_key = _text(config, "OPENAI_API_KEY")
    name = (_text(config, "CHAT_PROVIDER") or "").lower()
    if not name:
        name = "openai" if (api_key or base_url) else "demo"
    if name == "demo":
        return DemoProvider(token_delay_s=_number(config, "DEMO_TOKEN_DELAY_MS", 35.0) / 1000)
    if name == "openai":
        return OpenAICompatProvider(
            base_url=base_url,
            api_key=api_key,
            model=_text(config, "CHAT_MODEL") or DEFAULT_OPENAI_MODEL,
            connect_timeout=_number(config, "OPENAI_CONNECT_TIMEOUT_S", 10.0, positive=True),
            read_timeout=_number(config, "OPENAI_READ_TIMEOUT_S", 60.0, positive=True),
        )
    raise ValueError(
        f"Unknown CHAT_PROVIDER {name!r}; valid values are "
        + ", ".join(repr(p) for p in PROVIDERS) + " (or leave it empty to choose automatically)."
    )


def _text(config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _number(config: Mapping[str, Any], key: str, default: float, *,
             positive: bool = False) -> float:
    raw = config.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, not {str(raw)[:40]!r}.") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{key} must be a {'positive' if positive else 'non-negative'} number.")
    return value
