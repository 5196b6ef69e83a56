"""Model output rendered as markdown: formatted, highlighted, and inert whatever it holds."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from views.markdown import render_live, render_markdown

SAFE_SCHEMES = ("http://", "https://", "mailto:")
# Tags that can run script, load something, or take input; none may appear as an element.
# (MathML may: the renderer draws TeX with it; its attributes are checked like any others.)
FORBIDDEN_TAGS = {"script", "iframe", "object", "embed", "img", "svg", "form", "input",
                  "link", "meta", "style", "base", "frame", "frameset", "video", "audio",
                  "maction", "annotation-xml"}


class ElementCollector(HTMLParser):
    """The elements and attributes a browser would build from the HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


HOSTILE_PARTS = [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))", "[x](  javascript:alert(1))", "<a href=\"javascript:x\">a</a>",
    "<svg onload=alert(1)>", "<iframe src=//evil>", "![i](https://evil/x.png)",
    "<div style=\"background:url(x)\">", "[x](data:text/html,<script>alert(1)</script>)",
    "<<script>script>", "`<script>`", "```html\n<script>alert(1)</script>\n```",
    "&lt;script&gt;", "<a href='java\tscript:alert(1)'>t</a>", "[a](vbscript:msgbox)",
    "<details open ontoggle=alert(1)>", "\"><script>x</script>", "*", "**", "\n", " ", "> ",
    "- ", "1. ", "| a |\n|---|\n| b |", "[ref]: javascript:alert(1)\n\n[ref]",
    "<https://ok.example>", "<javascript:alert(1)>", "<math><maction actiontype=x>",
    "$", "$$", "\\(", "\\)", "\\[", "\\]", "\\href{javascript:alert(1)}{x}",
    "\\text{<img src=x onerror=alert(1)>}", "\\style{background:url(x)}{y}", "x^2", "`",
    "```mermaid\n", "graph TD; A-->B\n", "```\n",
]


def assert_inert(html: str) -> None:
    collector = ElementCollector()
    collector.feed(html)
    for tag, attrs in collector.elements:
        assert tag not in FORBIDDEN_TAGS, (tag, html)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, html)
            assert name != "style", (tag, html)
            if name in ("href", "src", "action", "formaction", "xlink:href"):
                url = "".join((value or "").split()).lower()
                assert url.startswith(SAFE_SCHEMES) or ":" not in url.split("/")[0], (url, html)


def test_markdown_is_formatted_and_code_is_highlighted():
    html = render_markdown("# Title\n\n**bold** and `code`\n\n```python\ndef f():\n    pass\n```")
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert '<code class="language-python">' in html and '<span class="k">def</span>' in html


def test_raw_html_is_shown_as_text_not_run():
    html = render_markdown("<script>alert(1)</script> <b>x</b>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>" not in html


def test_links_keep_safe_urls_only_and_never_carry_a_referrer():
    html = render_markdown("[ok](https://example.com/a) [bad](javascript:alert(1))")
    assert '<a href="https://example.com/a" rel="noopener noreferrer nofollow">ok</a>' in html
    assert "javascript:" not in html.split("[bad]")[0]
    assert_inert(html)


def test_images_are_not_loaded():
    html = render_markdown("![tracker](https://example.com/pixel.png)")
    assert "<img" not in html


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(HOSTILE_PARTS), st.text(max_size=12)), max_size=12))
def test_hostile_model_output_renders_inert(parts):
    assert_inert(render_markdown("".join(parts)))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_any_text_renders_without_error_and_inert(text):
    assert_inert(render_markdown(text))



def test_code_block_shows_the_fence_language_in_a_labelled_head():
    html = render_markdown("```python\nprint('hi')\n```\n\n```c++\nint x;\n```")
    assert ('<div class="code-block" data-language="python"><div class="code-head">'
            '<span class="code-lang">python</span></div>'
            '<pre tabindex="0"><code class="language-python">') in html
    assert '<span class="code-lang">c++</span>' in html
    assert html.count('<div class="code-block"') == 2
    assert html.count("</code></pre></div>") == 2


def test_code_block_without_a_language_is_framed_without_a_label():
    html = render_markdown("```\nplain text\n```\n\n    indented code\n")
    assert html.count('<div class="code-block"><div class="code-head"><span></span></div>') == 2
    assert "code-lang" not in html


def test_a_language_that_could_break_out_of_its_attribute_is_dropped():
    html = render_markdown('```x"onmouseover=alert(1)\ncode\n```\n\n```a<b>\ncode\n```')
    assert "code-lang" not in html and "onmouseover" not in html.split("<code>")[0]
    assert_inert(html)


def test_tables_scroll_in_a_keyboard_reachable_box():
    html = render_markdown("| Algorithm | Complexity |\n|---|---|\n| Quicksort | n log n |")
    assert '<div class="table-scroll" tabindex="0" role="group" aria-label="Table">' in html
    assert html.index("table-scroll") < html.index("<table>") < html.index("</table>") \
        < html.rindex("</div>")


def test_code_and_table_lookalikes_in_text_stay_text():
    html = render_markdown("`<pre><code>` and <table> and </code></pre>")
    assert "code-block" not in html and "table-scroll" not in html
    assert_inert(html)


@pytest.mark.parametrize(("text", "kind"), [
    ("Some words", ""),
    ("Some words ", "space"),
    ("Some words\n", "space"),
    ("A paragraph.\n\n", "block"),
    ("```python\nprint(1)\n```\n", "code-end"),
    ("```python\nprint(1)\n```", "code-end"),
    ("~~~~\ncode\n~~~~\n\n", "code-end"),
    ("```mermaid\ngraph TD\n  A --> B\n```\n", "code-end"),
    # Still open: what follows is more code.
    ("```python\nprint(1)\n", "space"),
    ("```\n", "space"),
    ("````\nshown ```\n```\n", "space"),  # a shorter fence does not close a longer one
    ("```\ncode\n``` not a close\n", "space"),
    ("```\na\n```\n\nThen text\n", "space"),  # the code block is not the last block
])
def test_the_trail_says_where_text_after_a_rendering_goes(text, kind):
    assert render_live(text, final=False)[1] == kind
