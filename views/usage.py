"""What replies cost: the owner's usage page, and the totals a thread page shows."""

from __future__ import annotations

from babel.numbers import format_currency
from flask import Blueprint, current_app, jsonify, render_template
from flask_babel import get_locale

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
    locale = get_locale()
    if locale is not None and locale.language != "en":
        return _local_usd(amount, locale)
    if amount == 0:
        return "$0"
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount >= 0.01:
        digits = f"{amount:.4f}".rstrip("0")
        return "$" + digits + "0" * max(0, 2 - len(digits.partition(".")[2]))
    return f"${amount:.3g}" if amount >= 1e-6 else "<$0.000001"


def _local_usd(amount: float, locale) -> str:
    """`usd` with the separators and the dollar sign's place of a language."""
    if amount >= 1:
        return format_currency(amount, "USD", locale=locale)
    if amount > 0 and amount < 1e-6:
        return "< " + format_currency(1e-6, "USD", locale=locale, decimal_quantization=False)
    rounded = round(amount, 4) if amount >= 0.01 else float(f"{amount:.3g}")
    return format_currency(rounded, "USD", locale=locale, decimal_quantization=False)


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
    from .temporary import leave_temporary

    leave_temporary()
    return render_template("usage.html", usage=usage, priced=bool(prices()),
                           **sidebar_threads())
