"""Relative times for people: "just now", "5 min ago", "3 days ago"."""

from __future__ import annotations

import datetime as dt

from models import utcnow


def time_ago(when: dt.datetime, now: dt.datetime | None = None) -> str:
    """A short relative time for a naive-UTC timestamp; a date once it is weeks old."""
    seconds = int(((now or utcnow()) - when).total_seconds())
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{round(seconds / 60)} min ago"
    if seconds < 86400:
        return f"{round(seconds / 3600)} h ago"
    if seconds < 7 * 86400:
        days = round(seconds / 86400)
        return "yesterday" if days == 1 else f"{days} days ago"
    return when.strftime("%-d %b %Y")
