"""Token and cost totals of replies: per thread, and per owner by day and by model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from llm.pricing import PriceTable
from llm.usage import CHARS_PER_TOKEN

from . import ACTIVE_STATUSES, Message, StreamDelta, Thread


@dataclass
class Totals:
    """Tokens and USD of some replies. `cost` is None when none of them has a price;
    `unpriced_replies` counts those left out of it. `estimated`: some counts are guesses."""

    replies: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    estimated: bool = False
    unpriced_replies: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, replies: int, prompt: int, completion: int, cost: float | None,
            estimated: bool) -> None:
        self.replies += replies
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.estimated = self.estimated or estimated
        if cost is None:
            self.unpriced_replies += replies
        else:
            self.cost = (self.cost or 0.0) + cost

    def to_json(self) -> dict[str, Any]:
        return {"replies": self.replies, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "total_tokens": self.total_tokens,
                "cost": None if self.cost is None else round(self.cost, 8),
                "estimated": self.estimated, "unpriced_replies": self.unpriced_replies}


@dataclass
class OwnerUsage:
    """One owner's usage: everything, by UTC day (newest first) and by model."""

    total: Totals = field(default_factory=Totals)
    days: dict[str, Totals] = field(default_factory=dict)
    models: dict[str, Totals] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total.to_json(),
                "by_day": [{"day": day, **t.to_json()} for day, t in self.days.items()],
                "by_model": [{"model": model, **t.to_json()}
                             for model, t in self.models.items()]}


def _counted():
    """Replies with counts (a JSON null or a dict without them is no usage)."""
    return Message.usage["completion_tokens"].as_integer().is_not(None)


def _sums():
    prompt = Message.usage["prompt_tokens"].as_integer()
    completion = Message.usage["completion_tokens"].as_integer()
    estimated = Message.usage["estimated"].as_boolean()
    return (func.count(Message.id), func.coalesce(func.sum(prompt), 0),
            func.coalesce(func.sum(completion), 0),
            func.coalesce(func.sum(case((estimated.is_(True), 1), else_=0)), 0))


def thread_totals(session: Session, thread_id: int, prices: PriceTable) -> Totals:
    """Every reply of the thread, all versions (each was paid for). A reply still being
    written counts with an estimate of the text persisted so far (updated every flush)."""
    totals = Totals()
    rows = session.execute(
        select(Message.model, *_sums())
        .where(Message.thread_id == thread_id, Message.role == "assistant", _counted())
        .group_by(Message.model)).all()
    for model, replies, prompt, completion, estimated in rows:
        totals.add(replies, prompt, completion,
                   prices.cost(model, {"prompt_tokens": prompt,
                                       "completion_tokens": completion}), bool(estimated))
    live = session.execute(
        select(Message.model, func.max(StreamDelta.end))
        .join(StreamDelta, StreamDelta.message_id == Message.id)
        .where(Message.thread_id == thread_id, Message.status.in_(ACTIVE_STATUSES))
        .group_by(Message.id, Message.model)).all()
    for model, chars in live:
        completion = -(-int(chars or 0) // CHARS_PER_TOKEN)  # rounded up
        totals.add(0, 0, completion, prices.cost(model, {"completion_tokens": completion}),
                   True)
    return totals


def owner_usage(session: Session, owner: str, prices: PriceTable) -> OwnerUsage:
    """The owner's replies (their threads only), by UTC day of the reply and by model."""
    day = func.date(Message.created_at)
    rows = session.execute(
        select(day, Message.model, *_sums())
        .join(Thread, Thread.id == Message.thread_id)
        .where(Thread.owner == owner, Message.role == "assistant", _counted())
        .group_by(day, Message.model)).all()
    usage = OwnerUsage()
    for day_value, model, replies, prompt, completion, estimated in sorted(
            rows, key=lambda r: (str(r[0]), r[1] or ""), reverse=True):
        cost = prices.cost(model, {"prompt_tokens": prompt, "completion_tokens": completion})
        name = model or "unknown"
        key = day_value.isoformat() if hasattr(day_value, "isoformat") else str(day_value)
        for totals in (usage.total, usage.days.setdefault(key, Totals()),
                       usage.models.setdefault(name, Totals())):
            totals.add(replies, prompt, completion, cost, bool(estimated))
    usage.models = dict(sorted(usage.models.items(),
                               key=lambda item: (-(item[1].cost or 0), item[0])))
    return usage
