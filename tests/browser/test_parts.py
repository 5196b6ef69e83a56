"""A reply's reasoning and tool steps in the browser: the Thinking panel streams and folds
away when the answer starts; steps appear live in the asking tab and in every follower."""

from __future__ import annotations

import time

import pytest

from bench.fake_upstream import Reply

from .conftest import RELAY_ENV, new_thread, norm, open_followers, send_prompt, wait_for_reply

pytestmark = pytest.mark.browser

REASONING = " ".join(f"thinking{i}" for i in range(40))
ANSWER = " ".join(f"answer{i}" for i in range(40))

PARTS_JS = """(id) => {
  const el = id ? document.getElementById(id)
                : [...document.querySelectorAll('article.message[data-role="assistant"]')].pop();
  if (!el) return null;
  const panel = el.querySelector('.message-reasoning');
  const steps = [...el.querySelectorAll('.message-steps .message-step')].map((li) => ({
    status: li.getAttribute('data-status'),
    name: (li.querySelector('.step-name') || {}).textContent,
    result: li.querySelector('.step-result') ? li.querySelector('.step-result').textContent : null,
  }));
  const label = el.querySelector('.message-status');
  return {status: el.getAttribute('data-status'),
          label: label ? label.textContent.trim() : null,
          text: (el.querySelector('.message-body') || {}).textContent || '',
          panel: panel ? {hidden: panel.hidden, open: panel.open,
                          summary: panel.querySelector('summary').textContent.trim(),
                          text: panel.querySelector('.reasoning-body').textContent} : null,
          steps: steps};
}"""


@pytest.fixture(scope="module")
def relay(server_factory):
    """Relay with a slow tool, so a step is seen while it runs."""
    return server_factory(**RELAY_ENV, TOOL_MODULES="tests.slow_tools", TOOLS="calculator,wait")


def parts(page, article_id=None):
    try:
        return page.evaluate(PARTS_JS, article_id)
    except Exception as err:
        if "Execution context was destroyed" in str(err):
            return None
        raise


def sample(page, article_id, until, timeout=30.0):
    """Every distinct state of the reply's parts until `until(state)` holds."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        state = parts(page, article_id)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if state and until(state):
            return seen
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {seen[-3:]}"
        time.sleep(0.02)


def test_thinking_panel_streams_then_folds_away_when_the_answer_starts(page, upstream):
    prompt = upstream.script(Reply.thinking(REASONING, ANSWER, token_delay_s=0.03))
    new_thread(page)
    reply = send_prompt(page, prompt)

    seen = sample(page, reply, lambda s: s["status"] == "complete")

    # While the model thinks (the answer not begun), the panel is open and grows.
    thinking = [s for s in seen if s["panel"] and not s["panel"]["hidden"]
                and s["label"] == "thinking"]
    lengths = sorted({len(s["panel"]["text"]) for s in thinking})
    assert len(lengths) >= 3, f"the thinking did not stream: {lengths}"
    assert all(s["panel"]["open"] and not s["text"] for s in thinking)
    writing = [s for s in seen if s["text"] and s["status"] == "streaming"]
    assert writing and not writing[-1]["panel"]["open"]  # folded once the answer came
    assert any(s["label"] == "writing" for s in writing)
    final = seen[-1]
    assert norm(final["panel"]["text"]) == norm(REASONING)
    assert norm(final["text"]) == norm(ANSWER)
    assert final["panel"]["open"] is False and final["panel"]["summary"].startswith("Thought for")
    # A click opens it again.
    page.locator(f"#{reply} .message-reasoning summary").click()
    assert parts(page, reply)["panel"]["open"] is True


def test_tool_steps_appear_live_in_the_asking_tab_and_in_followers(context, upstream):
    prompt = upstream.script(
        Reply.calling([("calculator", '{"expression": "6*7"}')], reasoning="Compute first.",
                      token_delay_s=0.02),
        Reply.calling([("wait", '{"seconds": 2}')], token_delay_s=0.02),
        Reply.words(ANSWER, token_delay_s=0.02))
    asker = context.new_page()
    thread = new_thread(asker)
    follower, poller = open_followers(context, thread)
    reply = send_prompt(asker, prompt)

    def running_wait(state):
        return any(s["status"] == "running" and "calling wait" in s["name"]
                   for s in state["steps"])

    # While the slow tool runs, every tab shows it running, with the stage in the asker.
    for tab in (asker, follower, poller):
        seen = sample(tab, reply, running_wait)
        assert seen[-1]["steps"][0]["result"] == "42"
    assert any(s["label"] == "calling wait…" for s in sample(asker, reply, running_wait))

    finals = {name: wait_for_reply(tab, reply, ("complete",)) and parts(tab, reply)
              for name, tab in {"asker": asker, "follower": follower, "poller": poller}.items()}
    for name, state in finals.items():
        assert [(s["status"], s["result"]) for s in state["steps"]] == [
            ("ok", "42"), ("ok", "waited 2 s")], name
        assert norm(state["text"]) == norm(ANSWER), name
    # A reload shows exactly the same steps.
    asker.reload()
    assert parts(asker, reply)["steps"] == finals["asker"]["steps"]
