"""Model output is text: nothing in it runs, in the asking tab, a follower, or a fresh load."""

from __future__ import annotations

import pytest

from bench.fake_upstream import Reply

from .conftest import (
    new_thread,
    norm,
    open_followers,
    reply_state,
    send_prompt,
    wait_for_reply,
)

pytestmark = pytest.mark.browser

HOSTILE = ("Here is some text. <script>window.__pwned=1</script> And an image "
           '<img src=x onerror="window.__pwned=1"> and a link [click](javascript:window.__pwned=1) '
           "and that is all.")

# Before any page script runs: record CSP violations, and whether the canary was ever set.
WATCH_JS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
});
"""

PAGE_STATE_JS = """(id) => {
  const body = document.querySelector(`#${id} .message-body`);
  const link = [...body.querySelectorAll('a')].find((a) => a.textContent.includes('click'));
  return {pwned: typeof window.__pwned !== 'undefined', csp: window.__csp || null,
          active: body.querySelectorAll('script, img, iframe, object, embed, [onerror], '
                                        + '[onload], [onclick]').length,
          link: link ? {href: link.getAttribute('href')} : null};
}"""


def assert_harmless(page, article_id: str) -> None:
    state = page.evaluate(PAGE_STATE_JS, article_id)
    assert state["csp"] == [], f"CSP violations: {state['csp']}"
    assert state["active"] == 0, "model output became live markup"
    if state["link"] is not None:
        href = state["link"]["href"] or ""
        assert not href.strip().lower().startswith("javascript:"), href
        if not href:  # a link with nowhere to go: clicking it must do nothing either
            page.locator(f"#{article_id} .message-body a", has_text="click").click()
    assert page.evaluate("typeof window.__pwned") == "undefined", "model output ran script"


def test_hostile_model_output_runs_nothing_anywhere(context, upstream, console):
    context.add_init_script(WATCH_JS)
    prompt = upstream.script(Reply.words(HOSTILE, token_delay_s=0.03))
    asker = context.new_page()
    thread = new_thread(asker)
    live, poller = open_followers(context, thread)

    reply = send_prompt(asker, prompt)
    for tab in (asker, live, poller):
        done = wait_for_reply(tab, reply, ("complete",))
        # Shown as the text the model wrote, markup and all.
        assert norm(done["text"]) == norm(HOSTILE)
        assert_harmless(tab, reply)
    fresh = context.new_page()
    fresh.goto(thread)
    assert norm(reply_state(fresh, reply)["text"]) == norm(HOSTILE)
    assert_harmless(fresh, reply)
    # No console error at all is checked for every test; CSP reports are named explicitly.
    assert not [p for p in console.problems if "Content Security Policy" in p]
