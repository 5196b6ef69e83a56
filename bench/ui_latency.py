"""Enter (Send, on a phone) to the first visible character of the reply, in Chromium.

The fake model answers at once (no time to first token of its own), so the figure is what
Relay and the page add: the POST, the new message fragments, the stream's start and the
first text painted. Measured in the page: from the Enter keydown (the Send tap) to the first
animation frame in which the reply's body shows text.

    python -m bench.ui_latency [--prompts 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.fake_upstream import FakeUpstream, Reply
from bench.relay_server import RelayServer

CHROMIUM = "/usr/bin/chromium"
VIEWPORTS = {"desktop": {"width": 1366, "height": 900},
             "phone": {"width": 390, "height": 844, "is_mobile": True, "has_touch": True}}

# Arms a probe: the time of the next Enter in the composer, then the first frame in which a
# new assistant article's body holds text.
PROBE_JS = """() => { window.relayProbe = new Promise((resolve) => {
  const before = document.querySelectorAll('article.message[data-role="assistant"]').length;
  let pressed = null;
  const press = () => { if (pressed === null) pressed = performance.now(); };
  document.addEventListener('keydown', (e) => { if (e.key === 'Enter') press(); },
                            {capture: true});
  document.addEventListener('click', (e) => {
    if (e.target.closest('form#composer button[type=submit]')) press();
  }, {capture: true});
  const look = () => {
    const all = document.querySelectorAll('article.message[data-role="assistant"]');
    const body = all.length > before && all[all.length - 1].querySelector('.message-body');
    if (pressed !== null && body && body.textContent.trim()) {
      resolve(performance.now() - pressed);
    } else {
      requestAnimationFrame(look);
    }
  };
  requestAnimationFrame(look);
}); }"""


def measure(page, prompts: int) -> list[float]:
    times = []
    for i in range(prompts):
        page.goto("/")
        token = page.locator('meta[name="csrf-token"]').get_attribute("content")
        made = page.request.post("/threads", headers={"X-CSRF-Token": token,
                                                      "Accept": "application/json"})
        page.goto(made.json()["thread"]["url"])  # an empty thread, as an API client makes it
        box = page.locator("form#composer textarea[name=content]")
        box.fill(f"Say something short, please ({i})")
        page.evaluate(PROBE_JS)
        if page.evaluate("matchMedia('(pointer: coarse)').matches"):
            page.locator("form#composer button[type=submit]").tap()  # on a phone: the button
        else:
            box.press("Enter")
        times.append(page.evaluate("() => window.relayProbe"))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=15)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    model = FakeUpstream(default_reply=lambda body: Reply.words(
        "A short reply of a few words.", token_delay_s=0.02)).start()
    with tempfile.TemporaryDirectory() as tmp:
        server = RelayServer({"CHAT_PROVIDER": "openai", "OPENAI_API_KEY": "sk-bench",
                              "OPENAI_BASE_URL": model.url, "SECRET_KEY": "bench",
                              "RATE_LIMIT": "100000/minute",
                              "DATABASE_URL": f"sqlite:///{Path(tmp) / 'relay.sqlite3'}"},
                             Path(tmp)).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True,
                    args=["--headless", "--no-sandbox", "--disable-gpu"])
                for name, viewport in VIEWPORTS.items():
                    options = dict(viewport)
                    extra = {k: options.pop(k) for k in ("is_mobile", "has_touch") if k in options}
                    context = browser.new_context(base_url=server.base_url, viewport=options,
                                                  **extra)
                    page = context.new_page()
                    measure(page, 2)  # warm-up: first page loads, connections
                    times = measure(page, args.prompts)
                    print(f"{name:8} Enter to first visible character: median "
                          f"{statistics.median(times):.0f} ms, p90 "
                          f"{sorted(times)[int(len(times) * 0.9) - 1]:.0f} ms "
                          f"(n={len(times)})")
                    context.close()
                browser.close()
        finally:
            server.stop()
            model.stop()


if __name__ == "__main__":
    main()
