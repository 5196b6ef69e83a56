"""Model text to safe HTML: markdown-it (raw HTML off), code highlighted, then nh3-sanitised."""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True)
_TOKEN_CLASSES = {name for name in STANDARD_TYPES.values() if name}
MAX_HIGHLIGHT_CHARS = 20_000  # highlighting is for reading; huge blocks stay plain

# Images would let model output make the browser fetch any URL: they are left out.
ALLOWED_TAGS = nh3.ALLOWED_TAGS - {"img", "map", "area"}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "span": {"class"},
    "ol": {"start"},
    # No style attributes: the Content-Security-Policy allows no inline styles.
    "th": {"align"},
    "td": {"align"},
}


def _highlight(code: str, lang: str, _attrs: str) -> str:
    if not lang or len(code) > MAX_HIGHLIGHT_CHARS:
        return ""  # markdown-it escapes it as plain code
    try:
        lexer = get_lexer_by_name(lang.split()[0].lower())
    except ClassNotFound:
        return ""
    return highlight(code, lexer, _FORMATTER)


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False,
                                   "highlight": _highlight})
    return md.enable(["table", "strikethrough"])


def _classes(tag: str, name: str, value: str) -> str | None:
    """Keep only the classes our own renderer emits (highlighting and languages)."""
    if name != "class":
        return value
    allowed = [c for c in value.split()
               if (tag == "span" and c in _TOKEN_CLASSES)
               or (tag == "code" and c.startswith("language-") and c[9:].isidentifier())]
    return " ".join(allowed) or None


def render_markdown(text: str) -> Markup:
    """Safe HTML for model output: nothing in it runs, loads, or escapes its box."""
    if not text:
        return Markup("")
    try:
        html = _parser().render(text)
    except RecursionError:  # pathological nesting: show the text as it is
        return Markup(f"<p>{escape(text)}</p>")
    clean = nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                      attribute_filter=_classes, url_schemes={"http", "https", "mailto"},
                      link_rel="noopener noreferrer nofollow", strip_comments=True)
    return Markup(clean)
