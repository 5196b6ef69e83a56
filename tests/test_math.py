"""TeX in replies drawn as MathML on the server, and mermaid fences marked as diagrams only
once complete: code keeps its dollars, prices stay prices, half a formula stays text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_markdown import ElementCollector, assert_inert
from views.markdown import render_markdown


def maths(html: str) -> list[str]:
    return re.findall(r'<math display="(inline|block)">', html)


def test_dollar_inline_formula_is_mathml_inline():
    html = render_markdown("The area is $x^2$ here.")
    assert maths(html) == ["inline"]
    assert "<msup><mi>x</mi><mn>2</mn></msup>" in html
    assert "$" not in html


def test_double_dollar_formula_is_displayed():
    html = render_markdown(r"$$\int_0^1 x^2\,dx$$")
    assert maths(html) == ["block"]
    assert "<msubsup><mo>∫</mo><mn>0</mn><mn>1</mn></msubsup>" in html


def test_backslash_delimiters_inline_and_displayed():
    html = render_markdown(r"Inline \(a+b\) then \[\frac{a}{b}\] done.")
    assert maths(html) == ["inline", "block"]
    assert "<mfrac>" in html and "\\(" not in html and "\\[" not in html


def test_display_formula_on_its_own_lines():
    html = render_markdown("Before\n\n$$\n\\sum_{i=1}^n i\n$$\n\nAfter")
    assert maths(html) == ["block"]
    assert "<p>Before</p>" in html and "<p>After</p>" in html


def test_markdown_inside_a_formula_is_left_to_tex():
    html = render_markdown(r"$a_1 * b_2 * c$")
    assert maths(html) == ["inline"]
    assert "<em>" not in html and "<msub>" in html


def test_dollars_in_code_spans_and_code_blocks_are_untouched():
    html = render_markdown("Use `$x$` or `echo $$HOME$$`.\n\n```\necho $PATH $x$\n```\n\n"
                           "    $$y$$\n")
    assert maths(html) == []
    assert "<code>$x$</code>" in html and "<code>echo $$HOME$$</code>" in html
    assert "echo $PATH $x$" in html and "$$y$$" in html


def test_a_formula_does_not_reach_into_a_code_span():
    html = render_markdown("$a `b$` c$")
    assert "<code>b$</code>" in html


@pytest.mark.parametrize("text", [
    "It costs $5 and $10.",
    "Between $5 and $10, or US$20.",
    "$ 5 and 6 $",
    "A lone $ sign, and $x$5.",
    "Prices: $3.50, $4.",
])
def test_prices_are_not_formulas(text):
    html = render_markdown(text)
    assert maths(html) == []


def test_escaped_dollars_stay_dollars():
    html = render_markdown(r"Not math: \$x\$ and \$y$.")
    assert maths(html) == []
    assert "$x$" in html


def test_an_unclosed_formula_stays_text_until_it_closes():
    # A reply streaming: the text so far ends inside a display formula.
    streaming = render_markdown("Here: $$\\int_0^1 x", final=False)
    assert maths(streaming) == []
    assert "$$\\int_0^1 x" in streaming
    assert maths(render_markdown("Here: $$\\int_0^1 x$$", final=False)) == ["block"]
    assert maths(render_markdown("Here: \\[ x", final=False)) == []
    assert maths(render_markdown("Here: $x", final=False)) == []


def test_tex_that_cannot_be_drawn_shows_its_source_with_the_reason():
    html = render_markdown(r"Broken: $x^$ and $$\frac$$ and \(\left( x\) end")
    assert maths(html) == []
    errors = re.findall(r'<code class="math-error" title="([^"]+)">([^<]*)</code>', html)
    assert [source for _, source in errors] == ["$x^$", r"$$\frac$$", r"\(\left( x\)"]
    assert all(title.startswith("Formula not shown: ") for title, _ in errors)


def test_a_very_long_formula_is_shown_as_text():
    html = render_markdown("$" + "x+" * 3000 + "x$")
    assert maths(html) == [] and "math-error" in html


def test_mathml_keeps_no_link_style_colour_or_script():
    html = render_markdown(r"$\href{javascript:alert(1)}{a}$ $\style{color:red}{b}$ "
                           r"$\color{red} c$ $\text{<script>alert(1)</script><img src=x>}$")
    assert maths(html) == ["inline"] * 4
    for banned in ("href", " style=", "mathcolor", "script", "<img", "javascript"):
        assert banned not in html, banned
    assert_inert(html)


def test_only_presentation_attributes_survive_on_mathml():
    html = render_markdown(r"$$\begin{cases} a & b \\ c \end{cases} \xrightarrow{x} \boxed{y}$$")
    collector = ElementCollector()
    collector.feed(html)
    names = {name for tag, attrs in collector.elements for name in attrs if tag.startswith("m")}
    assert names and names <= {"display", "stretchy", "fence", "form", "columnalign", "width",
                               "lspace", "voffset", "height", "depth", "scriptlevel", "notation"}


def test_raw_mathml_in_model_text_is_shown_as_text():
    html = render_markdown('<math><maction actiontype="statusline">x</maction></math>')
    assert "&lt;math&gt;" in html and "<math" not in html


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["$", "$$", "\\(", "\\)", "\\[", "\\]", "`", "x", " ", "5",
                                 "\\frac{", "}", "^", "_", "\n", "\\text{<b>}", "\\"]),
                max_size=20))
def test_any_dollars_and_delimiters_render_without_error_and_inert(parts):
    for final in (True, False):
        assert_inert(render_markdown("".join(parts), final=final))


DIAGRAM = '<div class="code-block diagram" data-language="mermaid">'
SOURCE = "```mermaid\ngraph TD\n  A[Start] --> B{Done?}\n"


def test_a_complete_mermaid_fence_is_marked_as_a_diagram_with_its_source():
    html = render_markdown(SOURCE + "```\n", final=False)
    assert html.count(DIAGRAM) == 1
    assert '<pre tabindex="0"><code class="language-mermaid">graph TD\n  A[Start] --&gt; B{Done?}' \
        in html


def test_a_mermaid_fence_still_streaming_is_code_not_a_diagram():
    html = render_markdown(SOURCE, final=False)
    assert DIAGRAM not in html and '<div class="code-block" data-language="mermaid">' in html
    # ...and once the reply is finished, even an unclosed fence is the whole diagram.
    assert DIAGRAM in render_markdown(SOURCE, final=True)


def test_a_closed_mermaid_fence_in_a_quote_or_longer_fence_counts_as_closed():
    assert DIAGRAM in render_markdown("> ```mermaid\n> graph TD\n> ```\n\nmore", final=False)
    assert DIAGRAM in render_markdown("````mermaid\ngraph TD\n````", final=False)
    assert DIAGRAM not in render_markdown("````mermaid\ngraph TD\n```", final=False)


def test_a_model_cannot_mark_other_code_as_a_diagram():
    html = render_markdown("```python diagram\nx\n```\n\n```mermaid diagram\ny", final=False)
    assert DIAGRAM not in html
