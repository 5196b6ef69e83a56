"""The tab that sent the prompt renders markdown while the reply streams, as every tab does,
and the finished reply takes its place without a jump."""

from __future__ import annotations

import pytest

from bench.fake_upstream import Reply

from .conftest import new_thread, sampler_js, send_prompt, wait_for_reply, wait_live, wait_until

pytestmark = pytest.mark.browser

MARKDOWN = """## Capitals of **Europe**

Here is a short table of capitals, with a few words between the parts so the reply takes a \
moment to stream.

| Country | Capital | Algorithm |
|---|---|---|
| France | Paris | Dijkstra |
| Spain | Madrid | Quicksort |

- first point with `inline code`
- second point with *emphasis*

```python
def capital(country):
    return CAPITALS[country]
```

The end of the reply, with one last sentence that wraps onto a second line on a phone \
screen and maybe on a desktop one too.
"""

# Each frame: the reply's status, height and place, and what its body holds.
SAMPLER_JS = sampler_js("""
  status: el.getAttribute('data-status'),
  height: body.getBoundingClientRect().height,
  top: el.getBoundingClientRect().top + window.scrollY,
  heading: !!body.querySelector('h2'),
  table: !!body.querySelector('table'),
  code: !!body.querySelector('pre code'),
  strong: !!body.querySelector('strong'),
  text: body.textContent,
  line: parseFloat(getComputedStyle(body).lineHeight) || 24,""")


VIEWPORTS = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("viewport", VIEWPORTS.values(), ids=VIEWPORTS.keys())
def test_the_sender_sees_markdown_live_and_no_jump_at_the_end(new_context, upstream, viewport):
    page = new_context(viewport=viewport).new_page()
    new_thread(page)
    wait_live(page, "the thread's websocket")
    prompt = upstream.script(Reply.words(MARKDOWN, token_delay_s=0.03))
    article = send_prompt(page, prompt)
    page.evaluate(SAMPLER_JS, article)
    wait_for_reply(page, article, ("complete",), timeout=60)
    wait_until(lambda: page.evaluate("window.__samples.filter(s => s.status === 'complete')"
                                     ".length") >= 5, what="frames after the end")
    samples = page.evaluate("window.__samples")
    streaming = [s for s in samples if s["status"] == "streaming"]
    assert len(streaming) > 20, "the reply was not seen streaming"

    # Live markdown: while streaming, the heading, the bold text, the table and the code were
    # rendered (a marker the text has not closed yet may show until it is: as in every tab).
    assert any(s["heading"] and s["strong"] for s in streaming)
    assert any(s["table"] for s in streaming)
    assert any(s["code"] for s in streaming)
    assert not any("## " in s["text"] for s in streaming if s["heading"])
    assert not any("|---|" in s["text"] for s in streaming if s["table"])
    assert "**" not in streaming[-1]["text"] and "```" not in streaming[-1]["text"]

    # No jump at the end: the body's height changes by at most one line when the finished
    # reply replaces the streaming one, and the article does not move.
    last = streaming[-1]
    first_done = next(s for s in samples if s["status"] == "complete")
    print(f"\n{viewport['width']}px: body {last['height']:.0f} -> {first_done['height']:.0f} px "
          f"at completion (line {last['line']:.0f} px)")
    assert abs(first_done["height"] - last["height"]) <= last["line"] + 1, (last, first_done)
    assert abs(first_done["top"] - last["top"]) <= 1
    final = page.locator(f"#{article} .message-body")
    assert final.locator("h2").count() == 1 and final.locator("table").count() == 1


def test_screen_readers_hear_a_finished_reply_once_not_every_word(new_context, upstream):
    page = new_context().new_page()
    new_thread(page)
    text = "Short answer with a few words for the screen reader to announce."
    # Every change of the announcer's text, from the page's side.
    page.evaluate("""() => {
      window.__announced = [];
      const target = document.getElementById('reply-announcer');
      new MutationObserver(() => window.__announced.push(target.textContent))
        .observe(target, {childList: true, characterData: true, subtree: true});
    }""")
    assert page.locator("#messages").get_attribute("aria-live") is None
    article = send_prompt(page, upstream.script(Reply.words(text, token_delay_s=0.05)))
    wait_until(lambda: page.locator(f"#{article}").get_attribute("data-status") == "streaming",
               what="the reply streaming")
    assert page.locator(f"#{article}").get_attribute("aria-busy") == "true"
    wait_for_reply(page, article, ("complete",))
    assert page.locator(f"#{article}").get_attribute("aria-busy") is None
    wait_until(lambda: page.evaluate("window.__announced.length") > 0, what="an announcement")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__announced") == [f"Reply finished. {text}"]
    assert page.locator("#reply-announcer").get_attribute("role") == "status"
