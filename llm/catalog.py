"""The models a person can choose from, each with the provider that generates its replies.

CHAT_MODELS lists them, comma-separated, as `provider:model` (`openai`, `azure`,
`anthropic`) or `demo`, each optionally followed by flags and `=Label`; the first is the
default. Flags, each after a `;`: `vision` / `no-vision` (whether the model reads images;
unset, it is guessed from the name, and the demo model reads them) and `context=N` (its
context window in tokens; unset, CONTEXT_TOKENS): `openai:gpt-4o;vision;context=128000=GPT-4o`
or `openai:llama3=Llama 3;no-vision`.
`openai:*` adds every model the OpenAI-compatible server lists at `GET <base>/models`,
looked up in the background and remembered for MODEL_LIST_TTL_S. Without CHAT_MODELS the
one model of CHAT_PROVIDER / CHAT_MODEL is offered, as before.

A model's id is its name (`gpt-4o-mini`); when two providers offer the same name, the
later one's id is `provider:name`. Either form finds a model.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gevent

from .base import Provider
from .health import ModelHealth

log = logging.getLogger(__name__)

PROVIDER_NAMES = ("openai", "azure", "anthropic", "demo")
LIST_ALL = "*"
DEFAULT_CONTEXT_TOKENS = 128_000
_VISION = re.compile(r"(?i)gpt-4o|gpt-4\.1|gpt-4-turbo|gpt-5|\bo[134]\b|o[134]-|vision|"
                     r"claude|llava|pixtral|-vl\b|vl-|gemma-?3|llama-?4")


@dataclass(frozen=True)
class ModelChoice:
    """One model on offer: `id` (what clients send and replies record) and its provider."""

    id: str
    provider: Provider
    label: str
    reads_images: bool | None = None  # from CHAT_MODELS' flags; None: guessed from the name
    context: int = DEFAULT_CONTEXT_TOKENS

    @property
    def vision(self) -> bool:
        """Whether the model reads images: its flag, else guessed from its name (the demo
        model acknowledges them)."""
        if self.reads_images is not None:
            return self.reads_images
        return self.provider.name == "demo" or bool(_VISION.search(self.provider.model))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "provider": self.provider.name, "label": self.label,
                "vision": self.vision, "context": self.context}


@dataclass(frozen=True)
class ModelEntry:
    """One entry of CHAT_MODELS: provider, model name (or `*`), optional label."""

    provider: str
    model: str
    label: str | None = None
    vision: bool | None = None
    context: int | None = None


def _flags(item: str) -> tuple[str, str, bool | None, int | None]:
    """An entry's `provider:model`, label, and flags (see the module's docstring)."""
    spec, *flags = item.split(";")
    spec, _, label = spec.partition("=")
    vision: bool | None = None
    context: int | None = None
    for flag in flags:
        name, _, rest = flag.strip().partition("=")
        name = name.strip().lower()
        if name == "context":
            value, _, rest = rest.partition("=")
            if not value.strip().isdigit() or int(value) <= 0:
                raise ValueError(f"CHAT_MODELS: context={value!r} in {item!r} is not a "
                                 "number of tokens.")
            context = int(value)
        elif name in ("vision", "no-vision"):
            vision = name == "vision"
        else:
            raise ValueError(f"CHAT_MODELS: unknown flag {name!r} in {item!r}; flags are "
                             "vision, no-vision and context=N.")
        label = rest or label
    return spec, label, vision, context


def parse_models(text: str) -> list[ModelEntry]:
    """CHAT_MODELS as entries; raises ValueError naming what is wrong."""
    entries: list[ModelEntry] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        spec, label, vision, context = _flags(item)
        provider, _, model = spec.strip().partition(":")
        provider, model, label = provider.strip().lower(), model.strip(), label.strip()
        if provider == "demo" and not model:
            model = "demo"
        if provider not in PROVIDER_NAMES:
            raise ValueError(f"CHAT_MODELS: unknown provider {provider!r} in {item!r}; valid "
                             "providers are " + ", ".join(PROVIDER_NAMES) + ".")
        if not model:
            raise ValueError(f"CHAT_MODELS: {item!r} names no model; write provider:model.")
        if model == LIST_ALL and provider != "openai":
            raise ValueError("CHAT_MODELS: only openai:* can list the server's models.")
        entries.append(ModelEntry(provider, model, label or None, vision, context))
    if not entries:
        raise ValueError("CHAT_MODELS lists no model.")
    return entries


class ModelCatalog:
    """The models on offer, their providers and their health, owned by the app.

    `choices()` never waits on the network: a listing that is due is fetched by a
    greenlet of its own while the last one (or none) is answered.
    """

    def __init__(self, choices: list[ModelChoice], *, lister: Any = None,
                 list_ttl_s: float = 300.0, list_timeout_s: float = 2.0,
                 health_ttl_s: float = 5.0, health_timeout_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 context: int = DEFAULT_CONTEXT_TOKENS) -> None:
        if not choices and lister is None:
            raise ValueError("no model is configured")
        self._configured = list(choices)
        self.context = context  # of the models the server lists
        self._lister = lister  # the OpenAI-compatible provider behind `openai:*`
        self.list_ttl_s = list_ttl_s
        self.list_timeout_s = list_timeout_s
        self._clock = clock
        self._listed: list[ModelChoice] = []
        self._listed_at: float | None = None
        self._listing: gevent.Greenlet | None = None
        self._health_ttl_s, self._health_timeout_s = health_ttl_s, health_timeout_s
        self._health: dict[str, ModelHealth] = {}
        self._lock = threading.Lock()

    @classmethod
    def single(cls, provider: Provider, **options: Any) -> ModelCatalog:
        """The catalog of one model: today's configuration, or a test's provider."""
        context = options.get("context", DEFAULT_CONTEXT_TOKENS)
        return cls([ModelChoice(provider.model, provider, provider.label, context=context)],
                   **options)

    # -- what is on offer ----------------------------------------------------------------
    def choices(self, wait_s: float = 0.0) -> list[ModelChoice]:
        """Configured models, then listed ones; waits up to `wait_s` for a due listing."""
        if self._lister is not None:
            self._refresh_if_due()
            listing = self._listing
            if wait_s > 0 and listing is not None and self._listed_at is None:
                listing.join(timeout=wait_s)
        return self._configured + self._listed

    @property
    def default(self) -> ModelChoice:
        """The model a thread uses until someone picks another: the first one listed."""
        choices = self._configured + self._listed  # no listing started from here
        if not choices:  # only `openai:*`, and its listing has not come back (yet)
            return self._listed_fallback()
        return choices[0]

    def get(self, model_id: str | None) -> ModelChoice | None:
        """The model with this id (or `provider:name`); None when none is on offer."""
        if not model_id:
            return None
        choices = self.choices()
        for choice in choices:
            if choice.id == model_id:
                return choice
        for choice in choices:
            if f"{choice.provider.name}:{choice.provider.model}" == model_id:
                return choice
        return None

    def provider_for(self, model_id: str | None) -> tuple[ModelChoice, Provider]:
        """The model (the default when `model_id` is no longer on offer) and its provider."""
        choice = self.get(model_id) or self.default
        return choice, choice.provider

    def health(self, choice: ModelChoice) -> ModelHealth:
        """The model's reachability, probed at most every few seconds."""
        with self._lock:
            health = self._health.get(choice.id)
            if health is None:
                health = self._health[choice.id] = ModelHealth(
                    choice.provider, ttl_s=self._health_ttl_s,
                    timeout_s=self._health_timeout_s)
            return health

    @property
    def providers(self) -> list[Provider]:
        return [c.provider for c in self._configured + self._listed]

    # -- the server's own list -----------------------------------------------------------
    def _refresh_if_due(self) -> None:
        now = self._clock()
        with self._lock:
            due = self._listed_at is None or now - self._listed_at >= self.list_ttl_s
            if not due or (self._listing is not None and not self._listing.dead):
                return
            self._listing = gevent.spawn(self._list)

    def _list(self) -> None:
        try:
            names = self._lister.list_models(timeout=self.list_timeout_s)
        except Exception as err:  # the server is down or has no list: keep the last one
            log.info("listing the server's models failed (%s)", type(err).__name__)
            with self._lock:
                self._listed_at = self._clock()
            return
        taken = {c.id for c in self._configured}
        listed = []
        for name in sorted(set(names)):
            model_id = name if name not in taken else f"openai:{name}"
            if model_id not in taken:
                listed.append(ModelChoice(model_id, self._lister.for_model(name), name,
                                          context=self.context))
        with self._lock:
            self._listed, self._listed_at = listed, self._clock()

    def _listed_fallback(self) -> ModelChoice:
        # The provider asked for a model name the server may not have: its error says so.
        return ModelChoice(self._lister.model, self._lister, self._lister.label,
                           context=self.context)


def make_catalog(config: Mapping[str, Any], make_single: Callable[[], Provider],
                 build: Callable[[str, str | None], Any]) -> ModelCatalog:
    """The catalog the configuration asks for (see the module's docstring).

    `make_single()` builds today's one provider; `build(provider_name, model)` builds the
    provider of one CHAT_MODELS entry (model None: the base of `openai:*`).
    """
    options = {"list_ttl_s": float(config.get("MODEL_LIST_TTL_S") or 300.0),
               "list_timeout_s": float(config.get("MODEL_LIST_TIMEOUT_S") or 2.0),
               "health_ttl_s": float(config.get("MODEL_HEALTH_TTL_S") or 5.0),
               "health_timeout_s": float(config.get("MODEL_HEALTH_TIMEOUT_S") or 2.0),
               "context": int(config.get("CONTEXT_TOKENS") or DEFAULT_CONTEXT_TOKENS)}
    text = str(config.get("CHAT_MODELS") or "").strip()
    if not text:
        return ModelCatalog.single(make_single(), **options)
    choices: list[ModelChoice] = []
    lister = None
    for entry in parse_models(text):
        if entry.model == LIST_ALL:
            lister = build("openai", None)
            continue
        provider = build(entry.provider, entry.model)
        model_id = provider.model
        if any(c.id == model_id for c in choices):
            model_id = f"{entry.provider}:{entry.model}"
            if any(c.id == model_id for c in choices):
                raise ValueError(f"CHAT_MODELS lists {model_id} twice.")
        choices.append(ModelChoice(model_id, provider, entry.label or provider.label,
                                   reads_images=entry.vision,
                                   context=entry.context or options["context"]))
    return ModelCatalog(choices, lister=lister, **options)
