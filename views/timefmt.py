"""Relative times for people: "just now", "5 min ago", "3 days ago", in the page's language."""

from __future__ import annotations

import datetime as dt

from babel.dates import format_date, format_skeleton, format_time
from babel.numbers import format_decimal
from flask_babel import get_locale, gettext, ngettext

from models import utcnow


def time_ago(when: dt.datetime, now: dt.datetime | None = None) -> str:
    """A short relative time for a naive-UTC timestamp; a date once it is weeks old."""
    seconds = int(((now or utcnow()) - when).total_seconds())
    if seconds < 45:
        return gettext("just now")
    if seconds < 3600:
        return ngettext("%(num)d min ago", "%(num)d min ago", round(seconds / 60))
    if seconds < 86400:
        return ngettext("%(num)d h ago", "%(num)d h ago", round(seconds / 3600))
    if seconds < 7 * 86400:
        days = round(seconds / 86400)
        return gettext("yesterday") if days == 1 else \
            ngettext("%(num)d day ago", "%(num)d days ago", days)
    return long_date(when)


def long_date(when: dt.date) -> str:
    """A day as people of the page's language write it ("31 Mar 2026" in English)."""
    locale = get_locale()
    if locale is None or locale.language == "en":
        return format_date(when, "d MMM y", locale="en")
    return format_skeleton("yMMMd", when, locale=locale)  # as the page's script writes it


def date_time(when: dt.datetime) -> str:
    """A moment, date and time, in the page's language ("31 Mar 2026, 14:05")."""
    locale = get_locale()
    if locale is None or locale.language == "en":
        return f"{format_date(when, 'd MMM y', locale='en')}, {when:%H:%M}"
    return locale.datetime_formats["medium"].format(format_time(when, "short", locale=locale),
                                                    format_date(when, "medium", locale=locale))


def number(value: float, digits: int = 0) -> str:
    """A count or measure with the page's separators ("12,345", "1.5"; "12 345", "1,5")."""
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, pattern, locale=get_locale() or "en")
