"""Stop: a click on Stop is never lost, whatever the moment, and the tab shows the end.

The page is slowed down (Chromium's CPU throttling) so that the clicks land while the
stream's text, its renderings and its end are being swapped in, as on a loaded phone.
"""

from __future__ import annotations

import pytest

from .conftest import api_get, new_thread, reply_state, send_prompt, wait_live, wait_until

pytestmark = pytest.mark.browser

TERMINAL = ("complete", "error", "aborted", "interrupted")
CPU_SLOWDOWN = 6


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(1, n + 1))


def stored(page, reply: str) -> dict:
    answer = api_get(page, "/messages/" + reply.removeprefix("message-"),
                     headers={"Accept": "application/json"})
    assert answer.status == 200, answer.text()
    return answer.json()


STOP_BOX_JS = """(id) => {
  const button = document.querySelector(`#${id} button[data-action="cancel"]`);
  if (!button) return null;
  button.scrollIntoView({block: "center"});
  const r = button.getBoundingClientRect();
  if (window.__clickLog) window.__clickLog.push([Math.round(performance.now()), "stop-box",
    JSON.stringify([r.x, r.y, r.width, r.height]), String(scrollY)]);
  return {x: r.x, y: r.y, width: r.width, height: r.height};
}"""


def click_stop_when(page, reply: str, shown_words: int) -> bool:
    """Click Stop where it is once the tab shows `shown_words` words of the reply, as a
    person does: a mouse click at the button's place, whatever is there by then. False
    when the reply ended before that."""
    def ready():
        state = reply_state(page, reply)
        if state is None:
            return None
        if state["status"] in TERMINAL:
            return "ended"
        return "ready" if len(state["text"].split()) >= shown_words and state["cancel"] \
            else None
    if wait_until(ready, 30, what=f"{shown_words} words of {reply}") == "ended":
        return False
    for _ in range(5):
        box = page.evaluate(STOP_BOX_JS, reply)
        if box is None:  # swapped for the ended reply meanwhile
            return False
        clicks = page.evaluate("(window.__clickLog || []).length")
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        # Stop sits below the growing text: a line added between finding the button and
        # the click moves it from under the pointer, and a person clicks again. What this
        # guards is that a click that reached the button is never lost.
        pressed = page.evaluate(PRESSED_JS, clicks)
        if pressed is None or pressed.startswith("button[cancel]"):
            return True
    raise AssertionError(f"five clicks missed {reply}'s Stop\n{click_log(page)}")


# What the pointer went down on, of the clicks logged after the first `n` entries.
PRESSED_JS = """(n) => {
  const down = (window.__clickLog || []).slice(n).find((entry) => entry[1] === "pointerdown");
  return down ? down[2] : null;
}"""


DEVICES = {
    "desktop": {"viewport": {"width": 1366, "height": 900}},
    "phone": {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True},
}


# What a click hit, and what left the page around it: printed when a Stop is lost.
CLICK_LOG_JS = """(() => {
  const log = window.__clickLog = [];
  const name = (el) => !el || !el.tagName ? String(el) :
    el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
    (el.getAttribute("data-action") ? "[" + el.getAttribute("data-action") + "]" : "") +
    (el.isConnected ? "" : "(detached)");
  const at = () => Math.round(performance.now());
  for (const type of ["pointerdown", "mousedown", "mouseup", "click", "submit"]) {
    document.addEventListener(type, (e) => log.push([at(), type, name(e.target),
      e.target && e.target.closest ? name(e.target.closest("article")) : ""]), true);
  }
  for (const type of ["htmx:beforeRequest", "htmx:afterRequest", "htmx:oobBeforeSwap",
                      "htmx:beforeSwap", "htmx:load"]) {
    document.addEventListener(type, (e) => log.push([at(), type, name(e.detail && e.detail.elt),
      name(e.detail && e.detail.target), e.detail && e.detail.pathInfo ?
      e.detail.pathInfo.requestPath : ""]), true);
  }
  new MutationObserver((records) => records.forEach((r) => r.removedNodes.forEach((n) => {
    if (n.nodeType === 1 && (n.matches("article, button, form") ||
        n.querySelector("button[data-action=cancel]")))
      log.push([at(), "removed", name(n), name(r.target)]);
  }))).observe(document, {childList: true, subtree: true});
})()"""


def click_log(page) -> str:
    return "\n".join(" ".join(map(str, entry))
                     for entry in page.evaluate("window.__clickLog || []"))


def slowed_page(new_context, device: str):
    context = new_context(**DEVICES[device])
    context.add_init_script(CLICK_LOG_JS)
    page = context.new_page()
    context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate",
                                       {"rate": CPU_SLOWDOWN})
    return page


def watch_until_ended(page, reply: str) -> tuple[dict, list]:
    """The reply's state once the tab shows it ended, and the statuses it went through."""
    seen: list = []

    def ended():
        state = reply_state(page, reply)
        status = state and state["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        return state if status in TERMINAL else None
    try:
        return wait_until(ended, 30, what=f"{reply} to end"), seen
    except AssertionError as err:
        raise AssertionError(f"{err}; the tab showed {seen}; the server has "
                             f"{stored(page, reply)['status']}") from None


@pytest.mark.parametrize("device", DEVICES)
def test_stop_mid_reply_always_stops_it(new_context, model, device):
    page = slowed_page(new_context, device)
    for at in (1, 4, 12, 30):
        new_thread(page)
        reply = send_prompt(page, model.script(words(400), token_delay_s=0.06))
        assert click_stop_when(page, reply, at)
        state, seen = watch_until_ended(page, reply)
        message = stored(page, reply)
        assert message["status"] == state["status"] == "aborted", \
            f"{(at, seen, state, message)}\n{click_log(page)}"
        assert not state["cancel"] and state["continue"], state
        kept = message["content"].split()
        wait_until(lambda r=reply, k=kept: reply_state(page, r)["text"].split() == k,
                   what=f"{reply} to show the kept text")


@pytest.mark.parametrize("device", DEVICES)
def test_stop_as_the_reply_ends_shows_how_it_ended(new_context, model, device):
    page = slowed_page(new_context, device)
    total = 30
    for at in (20, 26, 28, 29, 30):
        new_thread(page)
        reply = send_prompt(page, model.script(words(total), token_delay_s=0.03))
        click_stop_when(page, reply, at)
        state, seen = watch_until_ended(page, reply)
        message = stored(page, reply)
        assert message["status"] in ("aborted", "complete"), message
        assert state["status"] == message["status"], (at, seen, state, message)
        assert not state["cancel"], state  # no Stop left on an ended reply


def press_stop(page, reply: str, hold_s: float) -> None:
    """A person's click on Stop: the pointer goes down on the button, stays there while the
    reply goes on arriving (frames swap the reply's parts meanwhile), then comes up."""
    box = page.evaluate(STOP_BOX_JS, reply)
    assert box is not None, f"{reply} shows no Stop"
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.wait_for_timeout(hold_s * 1000)
    page.mouse.up()


@pytest.mark.parametrize("tab", ["streaming", "websocket", "poll"])
def test_a_slow_press_on_stop_stops_the_reply_in_every_kind_of_tab(new_context, model, tab):
    """A press held while several updates of the reply arrive still stops it: the button
    under the pointer is the same element from the press to the release."""
    context = new_context(viewport={"width": 1366, "height": 900})
    context.add_init_script(CLICK_LOG_JS)
    page = context.new_page()
    thread = new_thread(page)
    if tab == "streaming":
        clicker = page
    else:
        clicker = context.new_page()
        clicker.goto(thread + ("?follow=poll" if tab == "poll" else ""))
        if tab == "websocket":
            wait_live(clicker, "the follower's websocket")
    reply = send_prompt(page, model.script(words(400), token_delay_s=0.03))
    wait_until(lambda: (s := reply_state(clicker, reply)) and len(s["text"].split()) >= 5
               and s["cancel"], what=f"{reply} streaming in the {tab} tab")
    press_stop(clicker, reply, hold_s=1.0)  # 33 tokens: a line or more, frames and polls
    state, seen = watch_until_ended(clicker, reply)
    message = stored(clicker, reply)
    assert message["status"] == state["status"] == "aborted", \
        f"{(tab, seen, message['status'])}\n{click_log(clicker)}"


# A press and release on Stop that the browser does not turn into a click, as Chromium now
# and then does when frames moved the button into new copies of the reply while it was held.
PRESS_WITHOUT_CLICK_JS = """(reply) => {
  const button = document.querySelector(`#${reply} button[data-action="cancel"]`);
  const box = button.getBoundingClientRect();
  const at = {bubbles: true, composed: true, isPrimary: true, pointerId: 1, button: 0,
              clientX: box.x + box.width / 2, clientY: box.y + box.height / 2};
  button.dispatchEvent(new PointerEvent("pointerdown", at));
  button.dispatchEvent(new PointerEvent("pointerup", at));
}"""


def test_a_release_on_stop_that_the_browser_does_not_click_still_stops_the_reply(
        new_context, model):
    context = new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    new_thread(page)
    follower = context.new_page()
    follower.goto(page.url)
    wait_live(follower, "the follower's websocket")
    reply = send_prompt(page, model.script(words(400), token_delay_s=0.03))
    wait_until(lambda: (s := reply_state(follower, reply)) and s["cancel"],
               what=f"{reply} streaming in the follower")
    follower.evaluate(PRESS_WITHOUT_CLICK_JS, reply)
    state, _ = watch_until_ended(follower, reply)
    assert state["status"] == stored(follower, reply)["status"] == "aborted"


def test_a_focused_stop_keeps_the_focus_while_the_reply_streams(new_context, model):
    """A keyboard user who tabs to Stop in a following tab can press Enter seconds later:
    the updates of the reply do not take the focus away."""
    context = new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    thread = new_thread(page)
    follower = context.new_page()
    follower.goto(thread)
    wait_live(follower, "the follower's websocket")
    reply = send_prompt(page, model.script(words(400), token_delay_s=0.03))
    wait_until(lambda: (s := reply_state(follower, reply)) and s["cancel"],
               what=f"{reply} streaming in the follower")
    follower.bring_to_front()
    follower.focus(f"#{reply} button[data-action=cancel]")
    shown = len(reply_state(follower, reply)["text"].split())
    wait_until(lambda: len(reply_state(follower, reply)["text"].split()) >= shown + 20,
               what="more of the reply")
    focused = follower.evaluate("document.activeElement && document.activeElement.matches("
                                "'button[data-action=cancel]')")
    assert focused, "the update of the reply took the focus off Stop"
    follower.keyboard.press("Enter")
    state, _ = watch_until_ended(follower, reply)
    assert state["status"] == stored(follower, reply)["status"] == "aborted"
