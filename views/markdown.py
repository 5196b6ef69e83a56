"""Model text to safe HTML: markdown-it (raw HTML off), code highlighted, then nh3-sanitised."""

from __future__ import annotations

import re
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
_LANGUAGE = r"[A-Za-z0-9_+#.-]{1,32}"  # a fence's language as a label: "python", "c++", "c#"

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
               or (tag == "code" and c.startswith("language-")
                   and re.fullmatch(_LANGUAGE, c[9:]))]
    return " ".join(allowed) or None


# After sanitising, `<pre>` and `<table>` can only come from our own renderer (raw HTML is
# off and escaped), so these exact tags are safe anchors for the boxes that frame them.
_CODE_START = re.compile(rf'<pre><code(?: class="language-({_LANGUAGE})")?>')


def _code_box(match: re.Match) -> str:
    language = match.group(1)
    if not language:
        return ('<div class="code-block"><div class="code-head"><span></span></div>'
                '<pre tabindex="0"><code>')
    return (f'<div class="code-block" data-language="{language}"><div class="code-head">'
            f'<span class="code-lang">{language}</span></div>'
            f'<pre tabindex="0"><code class="language-{language}">')


def _framed(html: str) -> str:
    """Code blocks get a head (language label; the page adds a copy button); tables get a box
    that scrolls sideways. Scrolling boxes take keyboard focus so they can be scrolled."""
    html = _CODE_START.sub(_code_box, html).replace("</code></pre>", "</code></pre></div>")
    return (html.replace("<table>", '<div class="table-scroll" tabindex="0" role="group" '
                                    'aria-label="Table">\n<table>')
                .replace("</table>", "</table>\n</div>"))


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
    return Markup(_framed(clean))
