"""What replies cost: MODEL_PRICES, USD per million input and output tokens, per model.

    MODEL_PRICES='{"gpt-4o-mini": {"input": 0.15, "output": 0.60}}'

Keys are model ids as `GET /models` lists them (`gpt-4o-mini`) or `provider:model`. A
model without a price costs `None` (unknown), never 0. Costs are computed from the stored
token counts with the table in force, so a corrected price corrects past totals too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class Price:
    """USD per million input (prompt) and output (completion) tokens."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / PER_TOKENS


class PriceTable:
    """Prices by model id; `price_of` also finds `provider:model` under its bare name."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices = dict(prices or {})

    def __bool__(self) -> bool:
        return bool(self._prices)

    def price_of(self, model: str | None) -> Price | None:
        if not model:
            return None
        price = self._prices.get(model)
        if price is None and ":" in model:
            price = self._prices.get(model.partition(":")[2])
        return price

    def cost(self, model: str | None, usage: Mapping[str, Any] | None) -> float | None:
        """USD for `usage` by `model`; None when the model has no price or there is no usage."""
        price = self.price_of(model)
        if price is None or not usage:
            return None
        return price.cost(_tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens"))


def parse_prices(text: str | None) -> PriceTable:
    """MODEL_PRICES as a PriceTable; raises ValueError saying what is wrong and where."""
    if text is None or not str(text).strip():
        return PriceTable()
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise ValueError(f"MODEL_PRICES is not valid JSON ({err}); write "
                         '{"model-id": {"input": 0.15, "output": 0.6}}.') from None
    if not isinstance(raw, dict):
        raise ValueError("MODEL_PRICES must be a JSON object of model ids to prices.")
    prices: dict[str, Price] = {}
    for model, entry in raw.items():
        if not model.strip():
            raise ValueError("MODEL_PRICES has an empty model id.")
        if not isinstance(entry, dict) or set(entry) - {"input", "output"} \
                or not {"input", "output"} <= set(entry):
            raise ValueError(f"MODEL_PRICES[{model!r}] must be "
                             '{"input": <USD per million>, "output": <USD per million>}.')
        values = [entry["input"], entry["output"]]
        for name, value in zip(("input", "output"), values, strict=True):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"MODEL_PRICES[{model!r}].{name} must be a non-negative "
                                 "number (USD per million tokens).")
        prices[model.strip()] = Price(float(values[0]), float(values[1]))
    return PriceTable(prices)


def _tokens(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and value >= 0 else 0
