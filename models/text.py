"""What counts as text a person wrote: one definition of blank for prompts and titles."""

from __future__ import annotations

# Characters that show nothing and are not whitespace to str.isspace(): zero-width space,
# non-joiner and joiner, word joiner, byte-order mark (zero-width no-break space).
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


def is_blank(text: str) -> bool:
    """True when `text` shows nothing: only whitespace (any Unicode space, NBSP included)
    and invisible characters."""
    return all(c.isspace() or c in INVISIBLE for c in text)
