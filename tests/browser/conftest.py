"""Browser fixtures: Chromium through Playwright, Relay under gunicorn, clean-console checks.

Every test gets a fresh browser context (its own cookies, so its own Relay owner). Console
errors and uncaught page errors of every page in that context fail the test; a screenshot of
every page still open is saved to the artifacts directory when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHROMIUM = "/usr/bin/chromium"  # Debian's chromium package
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
REQUIRE_BROWSER = os.environ.get("REQUIRE_BROWSER") == "1"

# Relay as users run it, tuned so tests are quick: no-JS replies start soon, polling is brisk.
RELAY_ENV = {
    "DRIVER_GRACE_MS": "1000",
    "POLL_INTERVAL_MS": "250",
    "SSE_RETRY_MS": "500",
    "RATE_LIMIT": "1000/minute",
}

ACTIVE = ("pending", "streaming")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Relay in a real browser (Chromium)")


# -- the browser -------------------------------------------------------------------------------
def _no_browser(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"a browser is required (REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(f"browser tests need Chromium: {reason}")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CHROMIUM_PATH") or DEFAULT_CHROMIUM
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        _no_browser(f"no Chromium executable at {path} (install Debian's `chromium` "
                    "or set CHROMIUM_PATH)")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the `playwright` package is not installed (requirements-dev.txt)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# -- Relay -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def relay(server_factory):
    """One Relay (gunicorn + gevent, fake model) per test module."""
    return server_factory(**RELAY_ENV)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(os.environ.get("ARTIFACTS_DIR") or ROOT / "test-artifacts" / "browser")
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- a context per test, watched for errors ----------------------------------------------------
@dataclass
class ConsoleWatch:
    """Console errors and uncaught exceptions of the pages of one context."""

    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Tolerate console errors matching `pattern` (a test that cuts the network expects
        the browser to report failed requests)."""
        self.allowed.append(re.compile(pattern))

    def attach(self, page) -> None:
        def on_console(msg) -> None:
            if msg.type == "error":
                self.problems.append(f"console error on {page.url}: {msg.text}")

        def on_page_error(err) -> None:
            self.problems.append(f"uncaught error on {page.url}: {err}")

        page.on("console", on_console)
        page.on("pageerror", on_page_error)

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]


def _slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1]).strip("_")[:120]


@pytest.fixture
def console() -> ConsoleWatch:
    return ConsoleWatch()


@pytest.fixture
def new_context(browser, relay, console, artifacts_dir, request) -> Iterator[Callable]:
    """Make browser contexts on Relay's base URL, watched by `console`; closed after the test."""
    contexts = []

    def make(**options):
        options.setdefault("base_url", relay.base_url)
        context = browser.new_context(**options)
        context.set_default_timeout(15_000)
        context.on("page", console.attach)
        contexts.append(context)
        return context

    yield make
    slug = _slug(request.node.nodeid)
    for c, context in enumerate(contexts):
        for p, page in enumerate(context.pages):
            suffix = f"-{c}.{p}" if (c, p) != (0, 0) else ""
            # A screenshot is a courtesy: it never hides the test's own result.
            with contextlib.suppress(Exception):
                page.screenshot(path=str(artifacts_dir / f"{slug}{suffix}.png"), full_page=True)
        context.close()


@pytest.fixture
def context(new_context):
    return new_context()


@pytest.fixture
def page(context):
    return context.new_page()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """After the test body: any console error or uncaught page error fails the test.

    Checked here rather than in a fixture's teardown so that it counts as the test's own
    failure (an xfail can name it), not as an error of the teardown."""
    result = yield
    watch = getattr(item, "funcargs", {}).get("console")
    if watch is not None and (problems := watch.unexpected()):
        pytest.fail("the page reported errors:\n" + "\n".join(problems), pytrace=False)
    return result


# -- helpers the tests share -------------------------------------------------------------------
def norm(text: str) -> str:
    return " ".join(text.split())


def wait_until(predicate: Callable, timeout: float = 20.0, interval: float = 0.05,
               what: str = "the condition", page=None):
    """Poll `predicate` until it returns something truthy; fail with `what` at the deadline.

    Playwright runs a page's event listeners (`page.on(...)`) only while this thread is in
    one of its calls: a predicate that reads what a listener collects passes `page`, and the
    wait between polls goes through it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        if page is not None:
            page.wait_for_timeout(interval * 1000)
        else:
            time.sleep(interval)


REPLY_STATE_JS = """(id) => {
  const all = document.querySelectorAll('article.message[data-role="assistant"]');
  const el = id ? document.getElementById(id) : all[all.length - 1];
  if (!el) return null;
  const body = el.querySelector('.message-body');
  const error = el.querySelector('.message-error');
  const label = el.querySelector('.message-status');
  const action = (name) => !!el.querySelector(`button[data-action="${name}"]`);
  return {id: el.id, status: el.getAttribute('data-status'), count: all.length,
          text: body ? body.textContent : '',
          plain: !!(body && body.classList.contains('is-plain')),
          error: error ? error.textContent.trim() : null,
          label: label ? label.textContent.trim() : null,
          cancel: action('cancel'), retry: action('retry'), continue: action('continue')};
}"""


def api_get(page, path: str, **kw):
    """GET `path` with the page's cookies, as its own request. A pooled connection the server
    closed as idle (keep-alive) just as it was reused is tried once more, as a browser does
    for a GET."""
    try:
        return page.request.get(path, **kw)
    except Exception as err:
        if "ECONNRESET" not in str(err) and "socket hang up" not in str(err):
            raise
        return page.request.get(path, **kw)


def reply_state(page, article_id: str | None = None) -> dict | None:
    """An assistant message as the page shows it: `article_id`'s, or the newest one (None
    while there is none, or while the page is navigating)."""
    try:
        return page.evaluate(REPLY_STATE_JS, article_id)
    except Exception as err:  # the page is navigating (reload, meta refresh): ask again
        if "Execution context was destroyed" in str(err) or "navigat" in str(err):
            return None
        raise


def wait_for_reply(page, article_id: str, statuses: tuple[str, ...], timeout: float = 30.0,
                   check: Callable | None = None) -> dict:
    """Poll the message until its status is one of `statuses`; `check(state)` every time."""
    def reached():
        state = reply_state(page, article_id)
        if state and check:
            check(state)
        return state if state and state["status"] in statuses else None
    return wait_until(reached, timeout, what=f"{article_id} to be {'/'.join(statuses)}")


def new_thread(page) -> str:
    """Open a new, empty thread (created as an API client does: the home page's composer
    only makes a thread together with its first prompt); returns the thread's path."""
    page.goto("/")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    answer = page.request.post("/threads", headers={"X-CSRF-Token": token,
                                                    "Accept": "application/json"})
    assert answer.status == 201, answer.text()
    path = answer.json()["thread"]["url"]
    page.goto(path)
    return path


def wait_live(page, what: str = "the websocket") -> None:
    """Wait until the page's websocket is connected (a follower has something to follow)."""
    wait_until(lambda: page.locator("#live-status").get_attribute("data-state") == "live",
               what=what)


def open_followers(context, thread: str):
    """Two more tabs on `thread`: one on the websocket (connected), one polling."""
    live = context.new_page()
    live.goto(thread)
    poller = context.new_page()
    poller.goto(thread + "?follow=poll")
    # A follower must be connected before the prompt goes, or it has nothing to follow.
    wait_live(live, "the follower's websocket")
    return live, poller


def send_prompt(page, prompt: str) -> str:
    """Type the prompt in the composer and press Enter (on a touch screen, where Enter is a
    newline, tap Send), as a user does; returns the id of the reply's article."""
    box = page.locator("form#composer textarea[name=content]")
    before = page.locator('article.message[data-role="assistant"]').count()
    box.fill(prompt)
    if page.evaluate("matchMedia('(pointer: coarse)').matches"):
        page.locator("form#composer button[type=submit]").click()
    else:
        box.press("Enter")
    wait_until(lambda: page.locator('article.message[data-role="assistant"]').count() > before,
               what="the new reply to appear")
    return page.locator('article.message[data-role="assistant"]').last.get_attribute("id")


# -- the model ---------------------------------------------------------------------------------
class Model:
    """The fake model, scripted per prompt, that can fail on purpose and can continue a
    stopped or failed reply exactly where it stopped (asked to go on, it answers the rest of
    the prompt's text after the partial reply it is shown). Other prompts go to `upstream`."""

    def __init__(self, upstream) -> None:
        self.fallback = upstream.default_reply
        self.texts: dict[str, tuple[str, float]] = {}
        self.failures: dict[str, object] = {}

    def script(self, text: str, *, token_delay_s: float = 0.015, failure=None,
               ask: str = "Please write test reply") -> str:
        """A prompt (`ask` and a unique number) the model answers with `text`; with `failure`
        (a Reply) it answers that instead until recover()."""
        prompt = f"{ask} {uuid.uuid4().int % 10**12:012d}"
        self.texts[prompt] = (text, token_delay_s)
        if failure is not None:
            self.failures[prompt] = failure
        return prompt

    def recover(self, prompt: str) -> None:
        self.failures.pop(prompt, None)

    def __call__(self, body: dict):
        from bench.fake_upstream import Reply

        messages = body.get("messages") or []
        # The latest scripted prompt: a thread may hold several turns.
        at = next((i for i in reversed(range(len(messages)))
                   if messages[i].get("role") == "user"
                   and messages[i].get("content") in self.texts), None)
        if at is None:
            return self.fallback(body)
        prompt = messages[at]["content"]
        if prompt in self.failures:
            return self.failures[prompt]
        text, delay = self.texts[prompt]
        partial = "".join(m.get("content") or "" for m in messages[at + 1:]
                          if m.get("role") == "assistant")
        if partial and text.startswith(partial):
            return Reply.words(text[len(partial):], token_delay_s=delay)
        return Reply.words(text, token_delay_s=delay)


@pytest.fixture
def model(upstream, monkeypatch) -> Model:
    model = Model(upstream)
    monkeypatch.setattr(upstream, "default_reply", model)
    return model


def sampler_js(fields: str) -> str:
    """A script for `page.evaluate(script, article_id)` that samples the reply's article
    every animation frame into `window.__samples`, until five frames after it completes (or
    once it ends otherwise): the frame before and the frame after the finished reply is
    swapped in. `fields`: the properties of a sample, a JS object body that may use `el`
    (the article) and `body` (its .message-body)."""
    return """(id) => {
  window.__samples = [];
  const sample = () => {
    const el = document.getElementById(id);
    if (el) {
      const body = el.querySelector('.message-body');
      window.__samples.push({FIELDS});
    }
    const ended = el && ['complete', 'error', 'aborted', 'interrupted']
      .includes(el.getAttribute('data-status'));
    if (!ended || window.__samples.filter(s => s.status === 'complete').length < 5) {
      requestAnimationFrame(sample);
    }
  };
  requestAnimationFrame(sample);
}""".replace("FIELDS", fields)
