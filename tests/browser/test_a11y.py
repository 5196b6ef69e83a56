"""Accessibility: axe-core finds nothing serious on any page state; contrast; skip link.

axe-core is vendored for the tests only (tests/browser/vendor/axe-core) and evaluated in the
page through the DevTools protocol, so the page keeps its real Content-Security-Policy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.fake_upstream import Reply

from .conftest import ACTIVE, new_thread, reply_state, send_prompt, wait_for_reply, wait_until

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
DEVICES = {
    "desktop": {"viewport": {"width": 1366, "height": 900}},
    "phone": {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True},
}
THEMES = ("light", "dark")
BLOCKING = ("serious", "critical")

MARKDOWN = """## A short answer

Here is a table:

| Algorithm | Complexity | Notes |
|---|---|---|
| Quicksort | O(n log n) | average case, in place |
| Mergesort | O(n log n) | stable, needs extra memory |

And some code:

```python
def greet(name: str) -> str:
    # say hello
    return f"Hello, {name}!"
```

That is `all`, with a [link](https://example.com), a formula $e^{i\\pi} + 1 = 0$, another

$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$

and a diagram:

```mermaid
graph LR
  A[Prompt] --> B[Reply]
```
"""
LONG = " ".join(f"word{i}" for i in range(1, 400))

RUN_AXE = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => n.target.join(' ') + ' :: ' + n.failureSummary).slice(0, 5)}));
}"""


def axe_violations(page) -> list[dict]:
    """axe-core's violations for the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    return page.evaluate(RUN_AXE)


def context_for(new_context, device: str, theme: str):
    return new_context(color_scheme=theme, **DEVICES[device])


def audit_every_state(page, model) -> dict[str, list[dict]]:
    """Visit each page state a person meets and run axe on it."""
    found: dict[str, list[dict]] = {}
    page.goto("/")
    found["home"] = axe_violations(page)

    new_thread(page)
    reply = send_prompt(page, model.script(MARKDOWN))
    wait_for_reply(page, reply, ("complete",))
    page.reload()  # the finished reply as a page renders it, and as the sender's tab shows it
    wait_for_reply(page, reply, ("complete",))
    wait_until(lambda: page.locator(f"#{reply} .code-block.diagram").get_attribute(
        "data-diagram-state") == "drawn", what="the diagram drawn")
    found["thread-finished"] = axe_violations(page)

    # The fake model answers the first scripted prompt of a thread: one thread per reply.
    new_thread(page)
    # Slow enough to be still running when Stop is pressed, however long the audit takes
    # on a loaded machine (a reply that ended first would rightly show `complete`).
    streaming = send_prompt(page, model.script(LONG, token_delay_s=0.15))
    wait_until(lambda: (s := reply_state(page, streaming))["status"] in ACTIVE
               and len(s["text"].split()) >= 5, what="a reply streaming")
    found["thread-streaming"] = axe_violations(page)
    page.locator(f"#{streaming} button[data-action=cancel]").click()
    stopped = wait_for_reply(page, streaming, ("aborted", "complete", "error", "interrupted"))
    assert stopped["status"] == "aborted", stopped

    thread = new_thread(page)
    failing = send_prompt(page, model.script("never", failure=Reply(tokens=[], status=500)))
    wait_for_reply(page, failing, ("error",))
    found["error-reply"] = axe_violations(page)

    page.locator("#share button[type=submit]").click()
    link = page.locator("#share-link")
    link.wait_for()
    share_url = link.input_value()
    page.goto(share_url)
    wait_for_reply(page, failing, ("error",))
    found["share"] = axe_violations(page)

    page.goto(thread + "0000000")
    found["not-found"] = axe_violations(page)
    return found


def blocking(violations: list[dict]) -> list[dict]:
    return [v for v in violations if v["impact"] in BLOCKING]


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("device", DEVICES)
def test_axe_finds_no_serious_or_critical_violation_on_any_page_state(
        new_context, model, console, artifacts_dir, device, theme):
    console.allow(r"status of 404")  # the not-found page is one of the states audited
    page = context_for(new_context, device, theme).new_page()
    found = audit_every_state(page, model)

    summary = {state: {"all": len(v), "serious+critical": len(blocking(v)),
                       "ids": sorted({f"{x['id']}({x['impact']})" for x in v})}
               for state, v in found.items()}
    (artifacts_dir / f"axe-{device}-{theme}.json").write_text(
        json.dumps({"summary": summary, "violations": found}, indent=2), encoding="utf-8")
    problems = {state: blocking(v) for state, v in found.items() if blocking(v)}
    assert not problems, json.dumps(problems, indent=2)


def test_axe_reports_a_violation_it_is_shown(new_context):
    """The audit can fail: an unlabelled field is reported as a critical violation."""
    page = new_context().new_page()
    page.goto("/")
    page.evaluate("""() => {
      document.querySelector('main').appendChild(document.createElement('input'));
    }""")
    ids = {v["id"] for v in blocking(axe_violations(page))}
    assert "label" in ids


# -- contrast ----------------------------------------------------------------------------------
def _rgb(css: str) -> tuple[float, float, float]:
    parts = [float(x) for x in re.findall(r"[\d.]+", css)[:3]]
    assert len(parts) == 3, css
    return parts[0], parts[1], parts[2]


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(_rgb(a)), _luminance(_rgb(b))), reverse=True)
    return (la + 0.05) / (lb + 0.05)


COLORS_JS = """() => {
  const css = (el, prop) => getComputedStyle(el).getPropertyValue(prop);
  const box = document.querySelector('form#composer textarea[name=content]');
  const page = getComputedStyle(document.body).backgroundColor;
  return {page, box_border: css(box, 'border-top-color'), box_bg: css(box, 'background-color'),
          box_text: css(box, 'color'), body_text: css(document.body, 'color')};
}"""


def test_contrast_ratio_formula_matches_known_values():
    assert contrast("rgb(0, 0, 0)", "rgb(255, 255, 255)") == pytest.approx(21.0)
    assert contrast("rgb(227, 227, 224)", "rgb(255, 255, 255)") < 1.3  # the old border


@pytest.mark.parametrize("theme", THEMES)
def test_text_and_the_composer_border_have_enough_contrast(new_context, model, theme):
    page = new_context(color_scheme=theme).new_page()
    new_thread(page)
    colors = page.evaluate(COLORS_JS)
    assert contrast(colors["body_text"], colors["page"]) >= 4.5, colors
    assert contrast(colors["box_text"], colors["box_bg"]) >= 4.5, colors
    assert contrast(colors["box_border"], colors["box_bg"]) >= 3, colors
    assert contrast(colors["box_border"], colors["page"]) >= 3, colors
