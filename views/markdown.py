"""Model text to safe HTML: markdown-it (raw HTML off), code highlighted, TeX as MathML,
mermaid fences marked for the page's diagram renderer, then nh3-sanitised."""

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

from .math import MATHML_ATTRIBUTES, MATHML_TAGS, math_plugin

_FORMATTER = HtmlFormatter(nowrap=True)
_TOKEN_CLASSES = {name for name in STANDARD_TYPES.values() if name}
MAX_HIGHLIGHT_CHARS = 20_000  # highlighting is for reading; huge blocks stay plain
_LANGUAGE = r"[A-Za-z0-9_+#.-]{1,32}"  # a fence's language as a label: "python", "c++", "c#"

# Images would let model output make the browser fetch any URL: they are left out.
ALLOWED_TAGS = (nh3.ALLOWED_TAGS - {"img", "map", "area"}) | MATHML_TAGS
ALLOWED_ATTRIBUTES = {
    **MATHML_ATTRIBUTES,
    "a": {"href", "title"},
    "code": {"class", "title"},
    "pre": {"class"},
    "span": {"class"},
    "ol": {"start"},
    # No style attributes: the Content-Security-Policy allows no inline styles.
    "th": {"align"},
    "td": {"align"},
}


def _highlight(code: str, lang: str, attrs: str) -> str:
    if lang == "mermaid" and attrs == DIAGRAM:
        return ('<pre class="diagram-source"><code class="language-mermaid">'
                f"{escape(code)}</code></pre>")
    if not lang or len(code) > MAX_HIGHLIGHT_CHARS:
        return ""  # markdown-it escapes it as plain code
    try:
        lexer = get_lexer_by_name(lang.split()[0].lower())
    except ClassNotFound:
        return ""
    return highlight(code, lexer, _FORMATTER)


DIAGRAM = "diagram"  # the info a mermaid fence gets once it is complete
_FENCE_LINE = re.compile(r"^[\s>]*(`{3,}|~{3,})\s*$")


def _fence_closed(token, lines: list[str]) -> bool:
    """Whether the fence's own closing line was seen (a streaming reply may not have it yet)."""
    start, end = token.map or (0, 0)
    if end - start < 2:
        return False
    closing = _FENCE_LINE.match(lines[end - 1])
    return bool(closing) and closing.group(1)[0] == token.markup[0] \
        and len(closing.group(1)) >= len(token.markup)


def _mark_fences(state) -> None:
    """A mermaid fence is a diagram once complete: its closing fence seen, or the reply
    completed (env "final"); until then it is shown as code, never as half a diagram.
    Also notes in env "code_end" whether the text ends with a closed code block."""
    final = state.env.get("final", True)
    lines: list[str] = []

    def closed(token) -> bool:
        if not lines:
            lines.extend(state.src.split("\n"))
        return _fence_closed(token, lines)

    for token in state.tokens:
        if token.type == "fence" and token.info.strip().split(" ")[0].lower() == "mermaid":
            token.info = f"mermaid {DIAGRAM}" if final or closed(token) else "mermaid"
    last = state.tokens[-1] if state.tokens else None
    state.env["code_end"] = last is not None and last.type == "fence" and closed(last)


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False,
                                   "highlight": _highlight})
    md.use(math_plugin)
    md.core.ruler.after("block", "fences", _mark_fences)
    return md.enable(["table", "strikethrough"])


def _classes(tag: str, name: str, value: str) -> str | None:
    """Keep only the classes our own renderer emits (highlighting, languages, diagrams and
    formulas it could not draw)."""
    if name != "class":
        return value
    allowed = [c for c in value.split()
               if (tag == "span" and c in _TOKEN_CLASSES)
               or (tag == "code" and c.startswith("language-")
                   and re.fullmatch(_LANGUAGE, c[9:]))
               or (tag == "code" and c == "math-error")
               or (tag == "pre" and c == "diagram-source")]
    return " ".join(allowed) or None


# After sanitising, `<pre>` and `<table>` can only come from our own renderer (raw HTML is
# off and escaped), so these exact tags are safe anchors for the boxes that frame them.
_CODE_START = re.compile(
    rf'<pre( class="diagram-source")?><code(?: class="language-({_LANGUAGE})")?>')


def _code_box(match: re.Match) -> str:
    diagram, language = match.group(1), match.group(2)
    if diagram:  # the page draws it (static/js/diagrams.js); the source stays one click away
        return ('<div class="code-block diagram" data-language="mermaid"><div class="code-head">'
                '<span class="code-lang">mermaid</span></div>'
                '<pre tabindex="0"><code class="language-mermaid">')
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


def render_markdown(text: str, final: bool = True) -> Markup:
    """Safe HTML for model output: nothing in it runs, loads, or escapes its box.

    `final`: the text is a whole reply; otherwise a reply still streaming, whose last mermaid
    fence is a diagram only once its closing fence has arrived."""
    return render_live(text, final)[0]


def render_live(text: str, final: bool = True) -> tuple[Markup, str]:
    """`render_markdown`, and how text arriving after `text` goes on from its rendering (a
    streaming tab shows it before the next rendering comes): "code-end" when `text` ends with
    a closed code block (what follows is a new block, never inside the code), "block" after
    a blank line, "space" after other whitespace, "" when it goes straight on."""
    trail = text[len(text.rstrip()):]
    kind = ("block" if trail.count("\n") > 1 else "space") if trail else ""
    if not text:
        return Markup(""), kind
    env = {"final": final}
    try:
        html = _parser().render(text, env)
    except RecursionError:  # pathological nesting: show the text as it is
        return Markup(f"<p>{escape(text)}</p>"), kind
    clean = nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                      attribute_filter=_classes, url_schemes={"http", "https", "mailto"},
                      link_rel="noopener noreferrer nofollow", strip_comments=True)
    return Markup(_framed(clean)), "code-end" if env.get("code_end") else kind
