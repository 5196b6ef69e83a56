"""What replies cost: the owner's usage page, and the totals a thread page shows."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template

from llm.pricing import PriceTable
from models import Thread, db
from models.usage import Totals, owner_usage, thread_totals

from . import wants_json
from .access import current_owner

bp = Blueprint("usage", __name__)


def prices() -> PriceTable:
    return current_app.extensions["relay_prices"]


def usd(amount: float | None) -> str:
    """Dollars for people: cents from $1 up; below, up to four decimals (at least two),
    and three significant digits under a cent."""
    if amount is None:
        return "–"
    if amount == 0:
        return "$0"
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount >= 0.01:
        digits = f"{amount:.4f}".rstrip("0")
        return "$" + digits + "0" * max(0, 2 - len(digits.partition(".")[2]))
    return f"${amount:.3g}" if amount >= 1e-6 else "<$0.000001"


def totals_of(thread: Thread) -> Totals:
    return thread_totals(db.session, thread.id, prices())


def render_thread_cost(thread: Thread, *, oob: bool = False) -> str:
    """The thread's running total (tokens and cost), swapped in by id when `oob`."""
    return render_template("_thread_cost.html", thread=thread, totals=totals_of(thread),
                           oob=oob)


@bp.get("/usage")
def usage_show():
    """The owner's tokens and cost, by day and by model (JSON with Accept: application/json)."""
    from .pages import sidebar_threads  # pages imports us

    usage = owner_usage(db.session, current_owner(), prices())
    if wants_json():
        return jsonify(usage.to_json())
    return render_template("usage.html", usage=usage, priced=bool(prices()),
                           **sidebar_threads())
