// ```mermaid diagrams in replies. The server marks a complete mermaid fence as
// `.code-block.diagram` (views/markdown.py); this script, on every page but doing nothing
// on pages without one, draws them with Mermaid in a sandboxed frame (views/diagrams.py)
// that it creates only when the first diagram appears, from the page, a swap, the websocket
// or the streaming tab's own renderings. The drawing is shown as an image (nothing in it
// runs); the source stays one click away; a diagram that does not parse shows the error.
(function () {
  "use strict";
  function t(message, values) { return window.relayText ? window.relayText(message, values) : message; }

  var FRAME_URL = (document.currentScript && document.currentScript.getAttribute("data-frame")) ||
    "/diagrams/frame";
  var SELECTOR = ".code-block.diagram";
  var frame = null;
  var frameReady = false;
  var outbox = []; // requests made before the frame could take them
  var results = new Map(); // theme + source -> {svg} or {error}: a re-rendered reply redraws at once
  var asked = new Map(); // request id -> key
  var lastId = 0;
  var sourceIds = 0;

  function theme() {
    var chosen = document.documentElement.getAttribute("data-theme");
    if (chosen === "dark" || chosen === "light") return chosen;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function ensureFrame() {
    if (frame) return;
    frame = document.createElement("iframe");
    frame.className = "diagram-renderer";
    frame.setAttribute("sandbox", "allow-scripts");
    frame.setAttribute("aria-hidden", "true");
    frame.setAttribute("tabindex", "-1");
    frame.setAttribute("title", t("Diagram"));
    frame.src = FRAME_URL;
    document.body.appendChild(frame);
  }

  function send(job) {
    if (!frameReady) { outbox.push(job); ensureFrame(); return; }
    frame.contentWindow.postMessage(job, "*"); // the sandboxed frame's origin is opaque
  }

  function request(key, source, shade) {
    for (var entry of asked) if (entry[1] === key) return; // already on its way
    var id = ++lastId;
    asked.set(id, key);
    send({ type: "relay-diagram", id: id, source: source, theme: shade });
  }

  window.addEventListener("message", function (event) {
    if (!frame || event.source !== frame.contentWindow) return;
    var data = event.data || {};
    if (data.type === "relay-diagram-ready") {
      frameReady = true;
      var waiting = outbox;
      outbox = [];
      waiting.forEach(send);
      return;
    }
    if (data.type !== "relay-diagram" || !asked.has(data.id)) return;
    var key = asked.get(data.id);
    asked.delete(data.id);
    var result = typeof data.svg === "string"
      ? { svg: data.svg, width: data.width | 0, height: data.height | 0 }
      : { error: String(data.error || "") };
    results.set(key, result);
    document.querySelectorAll(SELECTOR + '[data-diagram-state="drawing"]').forEach(function (block) {
      if (block.relayDiagramKey === key) show(block, result);
    });
  });

  function sourceOf(block) {
    var code = block.querySelector("pre code");
    return code ? code.textContent : "";
  }

  function toggleButton(block, pre) {
    if (!pre.id) pre.id = "diagram-source-" + (++sourceIds);
    var button = document.createElement("button");
    button.type = "button";
    button.className = "button copy-button diagram-toggle";
    button.setAttribute("data-action", "diagram-source");
    button.setAttribute("aria-controls", pre.id);
    button.setAttribute("aria-expanded", "false");
    button.textContent = t("Show source");
    var head = block.querySelector(".code-head");
    if (head) head.appendChild(button);
    return button;
  }

  function show(block, result) {
    var pre = block.querySelector("pre");
    if (!pre) return;
    if (result.svg) {
      var view = document.createElement("div");
      view.className = "diagram-view";
      var image = document.createElement("img");
      image.alt = t("Diagram");
      if (result.width && result.height) { image.width = result.width; image.height = result.height; }
      image.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(result.svg);
      view.appendChild(image);
      pre.after(view);
      pre.hidden = true;
      toggleButton(block, pre);
      block.setAttribute("data-diagram-state", "drawn");
    } else {
      var error = document.createElement("div");
      error.className = "diagram-error";
      error.setAttribute("role", "alert");
      var title = document.createElement("strong");
      title.textContent = t("Diagram error");
      var detail = document.createElement("pre");
      detail.className = "diagram-error-text";
      detail.textContent = result.error;
      error.append(title, detail);
      pre.after(error);
      block.setAttribute("data-diagram-state", "error");
    }
  }

  function draw(block) {
    var source = sourceOf(block);
    var shade = theme();
    var key = shade + "\n" + source;
    block.relayDiagramKey = key;
    if (results.has(key)) { show(block, results.get(key)); return; }
    block.setAttribute("data-diagram-state", "drawing");
    request(key, source, shade);
  }

  function scan() {
    document.querySelectorAll(SELECTOR + ":not([data-diagram-state])").forEach(draw);
  }

  // A new theme: every diagram is drawn again in its colours.
  function redrawAll() {
    document.querySelectorAll(SELECTOR + "[data-diagram-state]").forEach(function (block) {
      block.querySelectorAll(".diagram-view, .diagram-error, .diagram-toggle").forEach(function (el) { el.remove(); });
      var pre = block.querySelector("pre");
      if (pre) pre.hidden = false;
      block.removeAttribute("data-diagram-state");
    });
    scan();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-action=diagram-source]");
    if (!button) return;
    var pre = document.getElementById(button.getAttribute("aria-controls"));
    if (!pre) return;
    var open = pre.hidden;
    pre.hidden = !open;
    button.setAttribute("aria-expanded", open ? "true" : "false");
    button.textContent = open ? t("Hide source") : t("Show source");
  });

  function start() {
    scan();
    // Renderings arrive by htmx swaps, websocket frames and the streaming tab's own updates:
    // watching the document catches them all (the scan is one selector query).
    new MutationObserver(scan).observe(document.body, { childList: true, subtree: true });
    new MutationObserver(redrawAll).observe(document.documentElement,
                                            { attributes: true, attributeFilter: ["data-theme"] });
    if (window.matchMedia) {
      var dark = window.matchMedia("(prefers-color-scheme: dark)");
      if (dark.addEventListener) dark.addEventListener("change", redrawAll);
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
}());
