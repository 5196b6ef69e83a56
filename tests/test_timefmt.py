"""Relative times in the thread list."""

from __future__ import annotations

import datetime as dt

from views.timefmt import time_ago


def test_relative_times_read_like_a_person_would_say_them():
    now = dt.datetime(2026, 5, 10, 12, 0, 0)
    assert time_ago(now - dt.timedelta(seconds=10), now) == "just now"
    assert time_ago(now - dt.timedelta(minutes=5), now) == "5 min ago"
    assert time_ago(now - dt.timedelta(hours=3), now) == "3 h ago"
    assert time_ago(now - dt.timedelta(days=1), now) == "yesterday"
    assert time_ago(now - dt.timedelta(days=4), now) == "4 days ago"
    assert time_ago(now - dt.timedelta(days=40), now) == "31 Mar 2026"
