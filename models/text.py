"""What counts as text a person wrote: one definition of blank for prompts and titles, and
one rule for short names (titles, folders)."""

from __future__ import annotations

# Characters that show nothing and are not whitespace to str.isspace(): zero-width space,
# non-joiner and joiner, word joiner, byte-order mark (zero-width no-break space).
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


def is_blank(text: str) -> bool:
    """True when `text` shows nothing: only whitespace (any Unicode space, NBSP included)
    and invisible characters."""
    return all(c.isspace() or c in INVISIBLE for c in text)


def one_line_name(value: object, *, field: str, what: str, limit: int) -> str:
    """`value` trimmed, as a name of one line (a thread's title, a folder's name); else
    ValueError with a sentence for the person. `what` names it ("A thread's title")."""
    if not isinstance(value, str):
        raise ValueError(f"Send the name as '{field}'.")
    name = value.strip()
    if is_blank(name):
        raise ValueError(f"{what} cannot be empty.")
    if len(name) > limit:
        raise ValueError(f"{what} is {len(name)} characters long; the limit is {limit}.")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"{what} is one line of text.")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"'{field}' is not valid Unicode text.") from None
    return name
