"""Formulas and diagrams in replies: TeX drawn as MathML live while the reply streams, a
mermaid diagram drawn once its fence is complete (never half of one), its source a click
away, its errors shown; the diagram renderer loads only on pages that show a diagram."""

from __future__ import annotations

import gzip
import re
import threading

import pytest

from bench.fake_upstream import Reply, split_words

from .conftest import (
    ROOT,
    api_get,
    new_thread,
    open_followers,
    sampler_js,
    send_prompt,
    wait_for_reply,
    wait_live,
    wait_until,
)

pytestmark = pytest.mark.browser

DIAGRAM = "graph TD\n  A[Question] --> B{Known?}\n  B -->|yes| C[Answer]\n  B -->|no| D[Look it up]"
REPLY = f"""## The integral

The value of $$\\int_0^1 x^2\\,dx$$ is one third, and inline math such as $e^{{i\\pi}} + 1 = 0$ \
or \\(a^2 + b^2 = c^2\\) sits in the line. Prices like $5 and $10 stay prices, and `$HOME` \
stays code.

```mermaid
{DIAGRAM}
```

A few more words after the diagram, so the reply goes on streaming for a while once the \
diagram's fence has closed, and then one last sentence to end it.
"""
MATH_ONLY = """Here is the result, written out with a few words around it so the reply takes \
a moment to stream:

$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$

and inline $\\sqrt{2} \\approx 1.414$ with \\(\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}\\) to end."""
BROKEN = "```mermaid\ngraph TD\n  A --> ((( nowhere\n  ]]] -->\n```\n"

# Every animation frame: the reply's status, height and what its body shows.
SAMPLER_JS = sampler_js("""
  status: el.getAttribute('data-status'),
  height: body.getBoundingClientRect().height,
  line: parseFloat(getComputedStyle(body).lineHeight) || 24,
  maths: body.querySelectorAll('math').length,
  blockMaths: body.querySelectorAll('math[display="block"]').length,
  openFence: !!body.querySelector('.code-block[data-language="mermaid"]:not(.diagram)'),
  diagramSource: body.querySelector('.code-block.diagram pre code')?.textContent ?? null,
  drawn: !!body.querySelector('.code-block.diagram .diagram-view img'),
  text: body.textContent,""")

SHOWN_JS = """(article) => {
  const body = document.querySelector(`#${article} .message-body`);
  const block = body.querySelector('.code-block.diagram');
  return {maths: body.querySelectorAll('math').length,
          state: block ? block.getAttribute('data-diagram-state') : null,
          image: !!(block && block.querySelector('.diagram-view img')),
          sourceHidden: block ? block.querySelector('pre').hidden : null};
}"""


def samples_until_done(page, article: str) -> list[dict]:
    wait_for_reply(page, article, ("complete",), timeout=60)
    wait_until(lambda: page.evaluate("window.__samples.filter(s => s.status === 'complete')"
                                     ".length") >= 5, what="frames after the end")
    return page.evaluate("window.__samples")


def shift_at_completion(samples: list[dict]) -> tuple[float, float]:
    """(height change of the reply's body when the finished reply is swapped in, a line)."""
    last = [s for s in samples if s["status"] == "streaming"][-1]
    done = next(s for s in samples if s["status"] == "complete")
    return done["height"] - last["height"], last["line"]


def drawn(page, article: str) -> bool:
    return page.evaluate(SHOWN_JS, article)["state"] == "drawn"


def test_math_is_live_and_the_diagram_is_drawn_only_when_its_fence_is_complete(context,
                                                                             upstream):
    page = context.new_page()
    thread = new_thread(page)
    wait_live(page, "the thread's websocket")
    follower, poller = open_followers(context, thread)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    # The model holds the words after the diagram until the page has drawn it, however long
    # drawing takes: the reply's end (below) is then measured on its own.
    drawn_meanwhile = threading.Event()
    head = REPLY[:REPLY.index("A few more words")]
    reply = Reply(tokens=split_words(REPLY), token_delay_s=0.03, hold=drawn_meanwhile,
                  hold_at=len(split_words(head)))
    article = send_prompt(page, upstream.script(reply))
    page.evaluate(SAMPLER_JS, article)
    try:
        wait_until(lambda: drawn(page, article), timeout=30,
                   what="the diagram drawn once its fence closed, the reply still running")
    finally:
        drawn_meanwhile.set()
    samples = samples_until_done(page, article)
    streaming = [s for s in samples if s["status"] == "streaming"]
    assert len(streaming) > 20, "the reply was not seen streaming"

    # Formulas were drawn while the reply streamed, the displayed one included.
    assert any(s["blockMaths"] == 1 and s["maths"] >= 2 for s in streaming)
    # While its fence was open the diagram was code, never a diagram or a drawing...
    assert any(s["openFence"] for s in streaming)
    assert not any(s["openFence"] and s["drawn"] for s in samples)
    # ...and whenever it was a diagram, it was the whole of it.
    assert {s["diagramSource"].rstrip("\n") for s in samples if s["diagramSource"]} == {DIAGRAM}
    wait_until(lambda: drawn(page, article), what="the diagram drawn")
    assert any(r.endswith("/diagrams/frame") for r in requests)

    delta, line = shift_at_completion(samples)
    print(f"\nmath + diagram reply: body height change at completion {delta:+.0f} px "
          f"(line {line:.0f} px)")
    assert abs(delta) <= line + 1

    # The finished reply: three formulas, prices and code left alone, the diagram drawn.
    body = page.locator(f"#{article} .message-body")
    assert body.locator("math").count() == 3
    assert body.locator('math[display="block"]').count() == 1
    text = body.inner_text()
    assert "$5 and $10" in text and "$HOME" in text and "\\int" not in text
    assert body.locator(".code-block.diagram .diagram-view img").get_attribute("alt") == "Diagram"

    # Followers (websocket, polling) and a reload show the same.
    expected = {"maths": 3, "state": "drawn", "image": True, "sourceHidden": True}
    for other in (follower, poller):
        wait_until(lambda o=other: o.evaluate(SHOWN_JS, article) == expected,
                   what="a follower showing the formulas and the diagram")
    page.reload()
    wait_until(lambda: page.evaluate(SHOWN_JS, article) == expected,
               what="the reloaded page showing the formulas and the diagram")


@pytest.mark.parametrize("viewport", [{"width": 1366, "height": 900},
                                      {"width": 390, "height": 844}], ids=["desktop", "phone"])
def test_a_reply_ending_in_a_formula_moves_at_most_one_line_when_it_completes(new_context,
                                                                            model, viewport):
    page = new_context(viewport=viewport).new_page()
    new_thread(page)
    wait_live(page, "the thread's websocket")
    article = send_prompt(page, model.script(MATH_ONLY, token_delay_s=0.03))
    page.evaluate(SAMPLER_JS, article)
    samples = samples_until_done(page, article)
    assert any(s["blockMaths"] for s in samples if s["status"] == "streaming")
    delta, line = shift_at_completion(samples)
    print(f"\n{viewport['width']}px math reply: body height change at completion {delta:+.0f} px "
          f"(line {line:.0f} px)")
    assert abs(delta) <= line + 1
    assert page.locator(f"#{article} .message-body math").count() == 3


def test_show_source_toggles_the_diagram_source_by_mouse_and_keyboard(context, model):
    page = context.new_page()
    new_thread(page)
    wait_live(page, "the thread's websocket")
    article = send_prompt(page, model.script(f"```mermaid\n{DIAGRAM}\n```\n",
                                             token_delay_s=0.03))
    page.evaluate(SAMPLER_JS, article)
    samples = samples_until_done(page, article)
    wait_until(lambda: drawn(page, article), what="the diagram drawn")
    # A reply that ends with its diagram: the code it showed becomes the drawing.
    last = [s for s in samples if s["status"] == "streaming"][-1]
    height = page.evaluate(f"document.querySelector('#{article} .message-body')"
                           ".getBoundingClientRect().height")
    print(f"\nreply ending in a diagram: body {last['height']:.0f} px while streaming (code), "
          f"{height:.0f} px once drawn")
    block = page.locator(f"#{article} .code-block.diagram")
    image = block.locator(".diagram-view img")
    assert int(image.get_attribute("width")) > 0 and int(image.get_attribute("height")) > 0
    source = block.locator("pre")
    toggle = block.locator("button[data-action=diagram-source]")
    assert source.is_hidden() and toggle.inner_text() == "Show source"
    assert toggle.get_attribute("aria-expanded") == "false"
    toggle.click()
    assert source.is_visible() and "B -->|yes| C[Answer]" in source.inner_text()
    assert toggle.get_attribute("aria-expanded") == "true" and toggle.inner_text() == "Hide source"
    toggle.focus()
    page.keyboard.press("Enter")
    assert source.is_hidden() and toggle.inner_text() == "Show source"
    # The drawing is an image of the SVG: nothing in it runs.
    src = block.locator(".diagram-view img").get_attribute("src")
    assert src.startswith("data:image/svg+xml") and "%3Csvg" in src


def test_a_diagram_that_does_not_parse_shows_its_source_and_the_error(context, model):
    page = context.new_page()
    new_thread(page)
    article = send_prompt(page, model.script("Broken:\n\n" + BROKEN))
    wait_for_reply(page, article, ("complete",))
    block = page.locator(f"#{article} .code-block.diagram")
    wait_until(lambda: block.get_attribute("data-diagram-state") == "error",
               what="the diagram's error")
    error = block.locator(".diagram-error[role=alert]")
    assert error.locator("strong").inner_text() == "Diagram error"
    assert re.search(r"(?i)parse|error|expecting", error.locator("pre").inner_text())
    assert block.locator("pre code").first.is_visible()
    assert "((( nowhere" in block.locator("pre code").first.inner_text()
    assert block.locator(".diagram-view").count() == 0


FILLS_JS = """(id) => {
  const src = document.querySelector(`#${id} .diagram-view img`).getAttribute('src');
  const svg = decodeURIComponent(src.slice(src.indexOf(',') + 1));
  const fills = [...svg.matchAll(/fill:\\s*(#[0-9a-fA-F]{3,6})/g)].map(m => m[1].toLowerCase());
  return [...new Set(fills)];
}"""


def test_diagrams_in_the_dark_theme_are_drawn_in_dark_colours(new_context, model):
    page = new_context(color_scheme="dark").new_page()
    new_thread(page)
    article = send_prompt(page, model.script(f"```mermaid\n{DIAGRAM}\n```\n"))
    wait_for_reply(page, article, ("complete",))
    wait_until(lambda: drawn(page, article), what="the diagram drawn")
    key = page.evaluate(f"document.querySelector('#{article} .code-block.diagram')"
                        ".relayDiagramKey")
    assert key.startswith("dark\n")
    dark = page.evaluate(FILLS_JS, article)
    # Picking the light theme draws it again in the light theme's colours.
    page.evaluate("document.documentElement.setAttribute('data-theme', 'light')")
    wait_until(lambda: page.evaluate(
        f"document.querySelector('#{article} .code-block.diagram').relayDiagramKey"
        ".startsWith('light')") and drawn(page, article), what="the diagram drawn again")
    light = page.evaluate(FILLS_JS, article)
    print(f"\nnode fills: dark {dark}, light {light}")
    assert dark != light
    page.evaluate("document.documentElement.setAttribute('data-theme', 'dark')")
    wait_until(lambda: page.evaluate(FILLS_JS, article) == dark, what="the dark drawing back")


def gzip_size(path) -> int:
    return len(gzip.compress(path.read_bytes(), 9))


def test_the_diagram_renderer_loads_only_on_pages_that_show_a_diagram(context, model):
    page = context.new_page()
    new_thread(page)
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    article = send_prompt(page, model.script("Only $x^2$ here, no diagram."))
    wait_for_reply(page, article, ("complete",))
    page.reload()
    page.wait_for_load_state("networkidle")
    assert page.locator(f"#{article} math").count() == 1
    assert not any("mermaid" in url or "/diagrams/frame" in url for url in seen), seen

    article = send_prompt(page, model.script(f"```mermaid\n{DIAGRAM}\n```\n"))
    wait_for_reply(page, article, ("complete",))
    wait_until(lambda: drawn(page, article), what="the diagram drawn")
    assert any(url.endswith("/static/vendor/mermaid/mermaid.min.js") for url in seen)

    static = ROOT / "static"
    every_page = {"js/diagrams.js": gzip_size(static / "js/diagrams.js")}
    diagram_pages = {name: gzip_size(static / name)
                     for name in ("vendor/mermaid/mermaid.min.js", "js/diagram-frame.js")}
    frame = api_get(page, "/diagrams/frame").body()
    diagram_pages["/diagrams/frame"] = len(gzip.compress(frame, 9))
    print(f"\nadded to every page (gzip): {every_page}; "
          f"added to pages with a diagram (gzip): {diagram_pages}, "
          f"total {sum(diagram_pages.values())} B")
