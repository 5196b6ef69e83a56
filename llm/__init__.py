"""Model backends for Relay: the Provider interface and `make_provider` to build one from config."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .azure_openai import AzureOpenAIProvider
from .base import Chunk, Provider, ProviderError
from .catalog import ModelCatalog, ModelChoice, make_catalog
from .demo import DemoProvider
from .openai_compat import OpenAICompatProvider

__all__ = [
    "AnthropicProvider",
    "AzureOpenAIProvider",
    "Chunk",
    "DemoProvider",
    "ModelCatalog",
    "ModelChoice",
    "OpenAICompatProvider",
    "Provider",
    "ProviderError",
    "make_models",
    "make_provider",
]

PROVIDERS = ("openai", "demo")


def __getattr__(name: str) -> Any:
    # The Anthropic SDK takes a second or more to import: only a process that asks for it
    # (an anthropic: model in CHAT_MODELS, or code naming llm.AnthropicProvider) pays for it.
    if name == "AnthropicProvider":
        from .anthropic_provider import AnthropicProvider

        return AnthropicProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_AZURE_API_VERSION = "2024-10-21"


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


def make_models(config: Mapping[str, Any], provider: Provider | None = None) -> ModelCatalog:
    """The models on offer (llm.catalog: CHAT_MODELS, else today's single model).

    `provider`, when given, is the single model (tests inject one); raises ValueError for
    a bad setting, naming it.
    """
    bases: dict[str, Any] = {}

    def build(name: str, model: str | None) -> Provider:
        if name == "demo":
            return make_provider({**config, "CHAT_PROVIDER": "demo"})
        base = bases.get(name)
        if base is None:
            base = bases[name] = _base_provider(config, name, model)
        return base if model is None else base.for_model(model)

    if provider is not None and not _text(config, "CHAT_MODELS"):
        return make_catalog({**config, "CHAT_MODELS": None}, lambda: provider, build)
    return make_catalog(config, lambda: make_provider(config), build)


def _base_provider(config: Mapping[str, Any], name: str, model: str | None) -> Any:
    """The one client-holding provider of `name` that every model of it shares."""
    timeouts = {"connect_timeout": _number(config, "OPENAI_CONNECT_TIMEOUT_S", 10.0,
                                           positive=True),
                "read_timeout": _number(config, "OPENAI_READ_TIMEOUT_S", 60.0, positive=True)}
    if name == "openai":
        return OpenAICompatProvider(base_url=_text(config, "OPENAI_BASE_URL"),
                                    api_key=_text(config, "OPENAI_API_KEY"),
                                    model=model or _text(config, "CHAT_MODEL")
                                    or DEFAULT_OPENAI_MODEL, **timeouts)
    if name == "azure":
        endpoint = _text(config, "AZURE_OPENAI_ENDPOINT")
        key = _text(config, "AZURE_OPENAI_API_KEY")
        if not endpoint or not key:
            raise ValueError("CHAT_MODELS lists an azure: model; set AZURE_OPENAI_ENDPOINT and "
                             "AZURE_OPENAI_API_KEY.")
        return AzureOpenAIProvider(endpoint=endpoint, api_key=key,
                                   api_version=_text(config, "AZURE_OPENAI_API_VERSION")
                                   or DEFAULT_AZURE_API_VERSION,
                                   deployment=model or "", **timeouts)
    if name == "anthropic":
        key = _text(config, "ANTHROPIC_API_KEY")
        base_url = _text(config, "ANTHROPIC_BASE_URL")
        if not key and not base_url:
            raise ValueError("CHAT_MODELS lists an anthropic: model; set ANTHROPIC_API_KEY.")
        from .anthropic_provider import AnthropicProvider  # its SDK loads only when used

        return AnthropicProvider(api_key=key, base_url=base_url, model=model or "",
                                 max_tokens=int(_number(config, "ANTHROPIC_MAX_TOKENS", 4096,
                                                        positive=True)), **timeouts)
    raise ValueError(f"Unknown provider {name!r}.")


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
