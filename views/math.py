"""TeX in model text as MathML: `$…$`, `\\(…\\)` inline and `$$…$$`, `\\[…\\]` displayed.

A markdown-it inline rule finds the formulas (so code spans and code blocks, which markdown-it
reads first, keep their dollars) and renders them on the server with latex2mathml; browsers
draw MathML themselves, so a page with formulas needs no script. A formula that is not closed
yet (a reply still streaming) stays text until its closing delimiter arrives.
"""

from __future__ import annotations

import re
from functools import lru_cache

from flask_babel import gettext
from latex2mathml.converter import convert
from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline
from markupsafe import escape

MAX_TEX_CHARS = 4_000  # longer "formulas" are shown as they are

# MathML Core elements latex2mathml writes; anything else is dropped by the sanitiser,
# keeping its text (never annotation-xml or maction: they can hold HTML or react to input).
MATHML_TAGS = {
    "math", "mi", "mn", "mo", "ms", "mtext", "mspace", "mrow", "mfrac", "msqrt", "mroot",
    "mstyle", "merror", "mpadded", "mphantom", "menclose", "msub", "msup", "msubsup",
    "munder", "mover", "munderover", "mmultiscripts", "mprescripts", "none", "mtable", "mtr",
    "mtd", "semantics", "annotation",
}
# Presentation attributes only: no href, no style, no colours, no event handlers.
_MATHML_ATTRIBUTES = {
    "display", "mathvariant", "displaystyle", "scriptlevel", "stretchy", "fence", "form",
    "separator", "lspace", "rspace", "minsize", "maxsize", "largeop", "movablelimits",
    "symmetric", "accent", "accentunder", "linethickness", "width", "height", "depth",
    "voffset", "notation", "columnalign", "rowalign", "columnspacing", "rowspacing",
    "columnlines", "rowlines", "frame", "columnspan", "rowspan",
}
MATHML_ATTRIBUTES = {tag: set(_MATHML_ATTRIBUTES) for tag in MATHML_TAGS}


@lru_cache(maxsize=1024)
def _convert(tex: str, display: bool) -> tuple[str, str]:
    """(MathML, "") or ("", why it could not be drawn)."""
    if len(tex) > MAX_TEX_CHARS:
        return "", "too long"
    try:
        return convert(tex, display="block" if display else "inline"), ""
    except RecursionError:
        return "", "nested too deeply"
    except Exception as error:  # noqa: BLE001 - any TeX the converter rejects is shown as text
        words = re.sub(r"(?<!^)(?=[A-Z])", " ", type(error).__name__.removesuffix("Error"))
        return "", (str(error) or words).lower()


def tex_to_html(tex: str, display: bool, source: str) -> str:
    """MathML for `tex`, or its `source` (with delimiters) in a code element titled with the
    reason when it is not TeX we can draw. Unsanitised: the caller's sanitiser runs after."""
    mathml, problem = _convert(tex, display)
    if mathml:
        return mathml
    title = gettext("Formula not shown: %(reason)s", reason=problem)
    return f'<code class="math-error" title="{escape(title)}">{escape(source)}</code>'


# Closers for the delimiters that open with a backslash.
_BACKSLASH_CLOSERS = {"(": ("\\)", False), "[": ("\\]", True)}


def _find_single_dollar_close(src: str, start: int, end: int) -> int:
    """Where the `$` closing an inline formula that opened just before `start` is, or -1.

    Pandoc's rules, stricter: the first unescaped `$` must close it, with no space before it
    and no digit after it; so prices ("$5 and $10") stay text. A backtick ends the search:
    a code span's dollars are its own."""
    i = start
    while i < end:
        ch = src[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "`":
            return -1
        if ch == "$":
            if src[i - 1].isspace() or (i + 1 < end and src[i + 1].isdigit()):
                return -1
            return i
        i += 1
    return -1


def _math_rule(state: StateInline, silent: bool) -> bool:
    src, pos, end = state.src, state.pos, state.posMax
    ch = src[pos]
    if ch == "$":
        if pos > 0 and src[pos - 1] == "$":
            return False  # the second dollar of a `$$` that did not close
        if src.startswith("$$", pos):
            close = src.find("$$", pos + 2, end)
            closer, display = "$$", True
            if close == -1:
                return False
        else:
            if pos + 1 >= end or src[pos + 1].isspace():
                return False
            close = _find_single_dollar_close(src, pos + 1, end)
            closer, display = "$", False
            if close == -1:
                return False
        opener = closer
    elif ch == "\\" and pos + 1 < end and src[pos + 1] in _BACKSLASH_CLOSERS:
        opener = src[pos:pos + 2]
        closer, display = _BACKSLASH_CLOSERS[src[pos + 1]]
        close = src.find(closer, pos + 2, end)
        if close == -1:
            return False
    else:
        return False
    tex = src[pos + len(opener):close]
    if not tex.strip():
        return False
    if not silent:
        token = state.push("math_display" if display else "math_inline", "math", 0)
        token.content = tex.strip()
        token.markup = opener
        token.info = src[pos:close + len(closer)]
    state.pos = close + len(closer)
    return True


def _render_math(self, tokens, idx, options, env) -> str:
    token = tokens[idx]
    return tex_to_html(token.content, token.type == "math_display", token.info)


def math_plugin(md: MarkdownIt) -> None:
    """Teach `md` the four TeX delimiters (before `escape`, which would eat `\\(`)."""
    md.inline.ruler.before("escape", "math", _math_rule)
    md.add_render_rule("math_inline", _render_math)
    md.add_render_rule("math_display", _render_math)
