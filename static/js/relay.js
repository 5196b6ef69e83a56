// Relay's page behaviour: small, no framework; htmx does the requests and swaps.
(function () {
  "use strict";
  // The page's language (ui.js reads the catalog the server put in the page).
  function t(message, values) { return window.relayText ? window.relayText(message, values) : message; }

  var ACTIVE = '[data-status="pending"], [data-status="streaming"]';
  var TERMINAL = ["complete", "error", "aborted", "interrupted"];
  var DRAIN_FRAMES = 6; // each frame shows a sixth of the backlog: speed follows the stream
  var MAX_TRAIL_MS = 250; // ...and text never waits longer than this to be shown

  // -- scrolling: follow the newest text until the reader scrolls up ------------------------
  var stickToBottom = true;
  function nearBottom() {
    var doc = document.scrollingElement || document.documentElement;
    return doc.scrollHeight - doc.scrollTop - doc.clientHeight < 120;
  }
  window.addEventListener("scroll", function () { stickToBottom = nearBottom(); }, { passive: true });
  function followScroll() {
    if (stickToBottom) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  // -- frames for what this tab does not show --------------------------------------------------
  // A change to a message rendered just before this tab switched to another version (or
  // deleted it) can arrive after the switch: htmx would drop it as an error. Drop it quietly.
  function missingOobTarget(el) {
    var how = el.getAttribute && el.getAttribute("hx-swap-oob");
    return how !== null && how.indexOf(":") < 0 && el.id && !document.getElementById(el.id);
  }
  htmx.defineExtension("relay-frames", {
    transformResponse: function (text) {
      var ids = text.match(/\bid="message-\d+"/g);
      if (!ids || ids.every(function (id) { return document.getElementById(id.slice(4, -1)); })) {
        return text;
      }
      var template = document.createElement("template");
      template.innerHTML = text;
      var stale = Array.prototype.filter.call(template.content.children, missingOobTarget);
      if (!stale.length) return text;
      stale.forEach(function (el) { el.remove(); });
      return template.innerHTML;
    }
  });

  // -- the driver's stream: exact cursor, smooth text ---------------------------------------
  // A stream's terminal `event: error` shares its name with the EventSource's own error
  // event, which htmx treats as a broken connection. Re-dispatch the server's event under
  // a name of our own (the page listens for `reply-error`), and keep connection errors the
  // browser retries by itself (with Last-Event-ID) away from htmx.
  htmx.createEventSource = function (url) {
    var source = new EventSource(url, { withCredentials: true });
    source.addEventListener("error", function (evt) {
      if (evt instanceof MessageEvent) {
        evt.stopImmediatePropagation();
        source.dispatchEvent(new MessageEvent("reply-error", {
          data: evt.data, lastEventId: evt.lastEventId }));
      } else if (source.readyState === EventSource.CONNECTING) {
        evt.stopImmediatePropagation();
      }
    });
    return source;
  };

  // Keep each stream's cursor in its sse-connect URL: the sse extension re-reads that
  // attribute when it reconnects by itself, and a fresh EventSource sends no Last-Event-ID.
  function rememberCursor(source, lastEventId) {
    if (!source || !/^\d+(\.\d+\.\d+)?$/.test(lastEventId || "")) return; // T or T.R.S
    var url = new URL(source.getAttribute("sse-connect"), window.location.href);
    url.searchParams.set("after", lastEventId);
    source.setAttribute("sse-connect", url.pathname + url.search);
  }

  var decoder = document.createElement("textarea");
  function decodeText(data) { // the event's data is HTML text; a textarea decodes, never runs
    decoder.innerHTML = data;
    return decoder.value;
  }

  // -- live markdown in the streaming tab ----------------------------------------------------
  // A reply's body holds the server's rendering of its first `base` code points (the same
  // renderer and sanitiser as the finished reply), then the text received after it, shown
  // as plain text inside the rendering's last block. Each newer rendering the websocket
  // brings replaces both once the text shown has reached it, so markdown appears live and
  // the finished reply's swap changes at most the last few words.
  var BLOCKS = /^(P|H[1-6]|LI|UL|OL|BLOCKQUOTE|PRE|CODE|TABLE|THEAD|TBODY|TR|TD|TH|DIV)$/;

  function codePoints(text) { // the server counts offsets in code points, not UTF-16 units
    var n = 0;
    for (var i = 0; i < text.length; i++) {
      var code = text.charCodeAt(i);
      if (code < 0xdc00 || code > 0xdfff) n++;
    }
    return n;
  }
  function afterCodePoints(text, count) { // `text` without its first `count` code points
    var i = 0;
    while (count > 0 && i < text.length) {
      var code = text.charCodeAt(i);
      i += code >= 0xd800 && code <= 0xdbff ? 2 : 1;
      count--;
    }
    return text.slice(i);
  }
  // Where text that follows a rendering goes: into its last block, after the whitespace
  // the rendering swallowed (data-trail), or into a new paragraph after a blank line or
  // after a closed code block (never into the code, or into a diagram's source).
  function startTail(body) {
    var trail = body.getAttribute("data-trail");
    if (trail === "code-end") {
      var after = document.createElement("p");
      var text = document.createTextNode("");
      after.appendChild(text);
      body.appendChild(after);
      return text;
    }
    var el = body;
    while (el.lastElementChild && BLOCKS.test(el.lastElementChild.tagName)) el = el.lastElementChild;
    var code = el.closest("pre");
    var node = document.createTextNode(trail === "space" && !code ? " " : "");
    if (trail === "block" && !code && el !== body) {
      var para = document.createElement("p");
      body.appendChild(para);
      el = para;
    }
    el.appendChild(node);
    return node;
  }

  // .message-body -> its live state: base (code points rendered), shown (text after base
  // on screen), tail (the text node showing it), queued (received, not yet shown), since
  // (when the queue began waiting), frame (a newer rendering waiting for the text to reach it)
  var bodies = new Map();
  function liveBody(body) {
    var st = bodies.get(body);
    if (!st) {
      st = { base: parseInt(body.getAttribute("data-end") || "0", 10) || 0, shown: "",
             tail: null, queued: "", since: 0, frame: null };
      bodies.set(body, st);
    }
    return st;
  }
  function showTail(body, st, text) {
    if (!st.tail || !st.tail.isConnected) st.tail = startTail(body);
    st.tail.appendData(text);
    st.shown += text;
  }
  function applyFrame(body, st) {
    var frame = st.frame;
    if (!frame || frame.end - st.base > codePoints(st.shown)) return; // text not there yet
    st.frame = null;
    var rest = afterCodePoints(st.shown, frame.end - st.base);
    body.innerHTML = frame.html; // the server's sanitised rendering of this very text
    if (frame.trail) body.setAttribute("data-trail", frame.trail);
    else body.removeAttribute("data-trail");
    st.base = frame.end;
    st.shown = "";
    st.tail = null;
    if (rest) showTail(body, st, rest);
  }

  var animating = false;
  function reveal() {
    animating = false;
    var now = performance.now();
    bodies.forEach(function (st, body) {
      if (!body.isConnected) { bodies.delete(body); return; }
      if (!st.queued && st.drained) { // its text has been on screen for a frame: the end
        var drained = st.drained;
        st.drained = null;
        drained();
        return;
      }
      var pending = st.queued;
      if (pending) {
        // Smooth while keeping up; all at once when frames are late (hidden or busy tab).
        var late = document.hidden || now - st.since > MAX_TRAIL_MS;
        var cut = late ? pending.length : Math.max(1, Math.ceil(pending.length / DRAIN_FRAMES));
        var code = pending.charCodeAt(cut - 1); // never split a surrogate pair
        if (code >= 0xd800 && code <= 0xdbff) cut += 1;
        st.queued = pending.slice(cut);
        showTail(body, st, pending.slice(0, cut));
      }
      applyFrame(body, st);
    });
    followScroll();
    var waiting = false;
    // (A rendering that waits for text is applied when that text arrives.)
    bodies.forEach(function (st) { if (st.queued || st.drained) waiting = true; });
    if (waiting) schedule();
  }
  function schedule() {
    if (animating) return;
    animating = true;
    var ran = false;
    var once = function () { if (!ran) { ran = true; reveal(); } };
    window.requestAnimationFrame(once);
    setTimeout(once, MAX_TRAIL_MS / 2); // animation frames can stall; text must not
  }

  // A newer rendering of a reply this tab streams itself (from the websocket): keep it
  // until the text shown reaches it.
  function offerFrame(body, incomingBody) {
    var end = parseInt(incomingBody.getAttribute("data-end") || "", 10);
    if (isNaN(end)) return;
    var st = liveBody(body);
    if (end <= (st.frame ? st.frame.end : st.base)) return; // not newer than what we have
    st.frame = { html: incomingBody.innerHTML, end: end,
                 trail: incomingBody.getAttribute("data-trail") };
    schedule();
  }

  // The reply's stage, from what its stream brings: thinking, calling a tool, writing.
  function setStage(article, stage) {
    article.setAttribute("data-status", "streaming");
    var label = article.querySelector(".message-status");
    if (label && label.textContent !== stage) {
      label.className = "message-status status--streaming";
      label.textContent = stage;
    }
  }
  function markStreaming(article) {
    var label = article.querySelector(".message-status");
    if (article.getAttribute("data-status") === "streaming" &&
        (!label || label.textContent === t("writing"))) return;
    setStage(article, t("writing"));
    var panel = article.querySelector(".message-reasoning");
    if (panel && panel.open && !panel.hasAttribute("data-answered")) {
      // The answer begins: the thinking folds away (a click opens it again).
      panel.setAttribute("data-answered", "");
      panel.open = false;
      var since = parseFloat(panel.getAttribute("data-since") || "");
      var summary = panel.querySelector("summary");
      if (summary && !isNaN(since)) {
        summary.textContent = t("Thought for %(seconds)s s", {
          seconds: window.relayNumber ? window.relayNumber((performance.now() - since) / 1000, 1)
                                      : ((performance.now() - since) / 1000).toFixed(1) });
      }
    }
  }

  // -- the reply's other parts: reasoning (the Thinking panel) and tool steps ---------------
  function addReasoning(article, text) {
    var panel = article.querySelector(".message-reasoning");
    var body = panel && panel.querySelector(".reasoning-body");
    if (!body) return;
    if (panel.hidden) {
      panel.hidden = false;
      panel.open = true;
      panel.setAttribute("data-since", String(performance.now()));
    }
    body.appendChild(document.createTextNode(text));
    setStage(article, t("thinking"));
  }
  var STEP_RESULTS = { error: "failed", aborted: "stopped" };
  function showStep(article, step) {
    var list = article.querySelector(".message-steps");
    if (!list || typeof step.index !== "number") return;
    list.hidden = false;
    var item = list.querySelector('[data-step-index="' + step.index + '"]');
    if (!item) {
      item = document.createElement("li");
      item.setAttribute("data-step-index", String(step.index));
      ["step-name", "step-arguments"].forEach(function (name) {
        var el = document.createElement(name === "step-arguments" ? "code" : "span");
        el.className = name;
        item.appendChild(el);
      });
      list.appendChild(item);
    }
    var running = step.status === "running";
    item.className = "message-step step--" + step.status;
    item.setAttribute("data-status", step.status);
    item.querySelector(".step-name").textContent = running ? t("calling %(name)s…", { name: step.name }) : step.name;
    item.querySelector(".step-arguments").textContent = step.arguments || "";
    var result = item.querySelector(".step-result");
    if (!running) {
      if (!result) {
        result = document.createElement("span");
        result.className = "step-result";
        item.appendChild(result);
      }
      result.textContent = step.result != null ? step.result
        : (STEP_RESULTS[step.status] ? t(STEP_RESULTS[step.status]) : step.status);
    }
    setStage(article, running ? t("calling %(name)s…", { name: step.name }) : t("thinking")); // the model again
  }

  // The reply's end waits until the text received before it has been shown (at most
  // MAX_TRAIL_MS): the last words appear as the others did, then the finished reply.
  function holdEndUntilShown(evt, message) {
    if (message.relayShown) return;
    var article = evt.target.closest && evt.target.closest("article.message");
    var body = article && article.querySelector(".message-body");
    var st = body && bodies.get(body);
    if (!st || !st.queued || !message.target) return;
    evt.preventDefault();
    st.drained = function () {
      var again = new MessageEvent(message.type, { data: message.data,
                                                   lastEventId: message.lastEventId });
      again.relayShown = true;
      message.target.dispatchEvent(again); // the stream's own listener swaps it in now
    };
    schedule();
  }

  document.addEventListener("htmx:sseBeforeMessage", function (evt) {
    var message = evt.detail;
    if (!(message instanceof MessageEvent) || typeof message.data !== "string") {
      evt.preventDefault(); // a connection event, not server data: nothing to swap
      return;
    }
    if (message.type === "reasoning" || message.type === "step") {
      evt.preventDefault(); // shown here: text appended, steps added or brought up to date
      var owner = evt.target.closest("article.message");
      if (!owner) return;
      rememberCursor(owner.closest("[sse-connect]"), message.lastEventId);
      if (message.type === "reasoning") {
        addReasoning(owner, decodeText(message.data));
      } else {
        try { showStep(owner, JSON.parse(message.data)); } catch (err) { /* not a step */ }
      }
      return;
    }
    if (message.type !== "delta") {
      holdEndUntilShown(evt, message);
      return;
    }
    var body = evt.target.closest(".message-body");
    var article = evt.target.closest("article.message");
    if (!body || !article) return;
    evt.preventDefault(); // we append the text ourselves, at a pace the eye can follow
    markStreaming(article);
    rememberCursor(article.closest("[sse-connect]"), message.lastEventId);
    var st = liveBody(body);
    if (!st.queued) st.since = performance.now();
    st.queued += decodeText(message.data);
    schedule();
  });

  // -- followers: the websocket, and polling when it cannot connect -------------------------
  function setLiveStatus(state, label) {
    var el = document.getElementById("live-status");
    if (el) { el.setAttribute("data-state", state); el.textContent = label; }
  }

  function pollActiveFollowers() {
    document.querySelectorAll("article.message").forEach(function (article) {
      if (!article.matches(ACTIVE) || article.hasAttribute("sse-connect") ||
          article.hasAttribute("hx-get")) return;
      article.setAttribute("hx-get", "/messages/" + article.getAttribute("data-message-id"));
      article.setAttribute("hx-trigger", "load delay:1s, relay:resume");
      article.setAttribute("hx-target", "this");
      article.setAttribute("hx-swap", "outerHTML");
      htmx.process(article);
    });
  }

  // ...and ask for messages posted from elsewhere, as a page in polling mode does.
  function pollNewerMessages() {
    var list = document.getElementById("messages");
    var thread = document.querySelector("[data-thread-id]");
    if (!list || !thread || document.getElementById("poll-newer")) return;
    var articles = list.querySelectorAll("article.message");
    var last = articles.length ? articles[articles.length - 1].getAttribute("data-message-id") : "0";
    var poller = document.createElement("div");
    poller.id = "poll-newer";
    poller.className = "poll-newer";
    poller.setAttribute("aria-hidden", "true");
    poller.setAttribute("hx-get", "/threads/" + thread.getAttribute("data-thread-id") +
                        "/messages?after=" + last + "&follow=poll");
    poller.setAttribute("hx-trigger", "load delay:1s, relay:resume");
    poller.setAttribute("hx-target", "this");
    poller.setAttribute("hx-swap", "outerHTML");
    list.appendChild(poller);
    htmx.process(poller);
  }

  // Offline, a poll can only fail: hold it, and poll again as soon as the network is back.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var trigger = evt.detail.elt && evt.detail.elt.getAttribute("hx-trigger");
    if (!navigator.onLine && trigger && trigger.indexOf("relay:resume") >= 0) {
      evt.preventDefault();
    }
  });
  // A poll that could not reach the server (a network that flapped without the browser
  // noticing) tries again shortly instead of stopping for good.
  document.addEventListener("htmx:sendError", function (evt) {
    var el = evt.detail.elt;
    var trigger = el && el.getAttribute("hx-trigger");
    if (!trigger || trigger.indexOf("relay:resume") < 0) return;
    setTimeout(function () { if (el.isConnected) htmx.trigger(el, "relay:resume"); }, 1000);
  });
  window.addEventListener("online", function () {
    document.querySelectorAll('[hx-trigger*="relay:resume"]').forEach(function (el) {
      htmx.trigger(el, "relay:resume");
    });
  });

  // Each (re)connection says what the page has: its first frame brings every message of the
  // thread since then, so a turn asked and answered while the page loaded, or while its
  // socket was closed, is not missed. A reply shown running counts as not had yet.
  function pageHas() {
    var had = 0, running = Infinity;
    document.querySelectorAll("#messages article.message[data-message-id]").forEach(function (a) {
      var id = parseInt(a.getAttribute("data-message-id"), 10);
      if (!(id > 0)) return;
      had = Math.max(had, id);
      if (a.matches(ACTIVE)) running = Math.min(running, id - 1);
    });
    return Math.min(had, running);
  }
  var openSocket = htmx.createWebSocket;
  if (openSocket) {
    htmx.createWebSocket = function (url) {
      var target = new URL(url, location.href);
      if (/\/threads\/\d+\/ws$/.test(target.pathname)) {
        target.searchParams.set("after", String(pageHas()));
      }
      return openSocket(target.toString());
    };
  }

  document.addEventListener("htmx:wsOpen", function () { setLiveStatus("live", t("Live")); });
  ["htmx:wsClose", "htmx:wsError"].forEach(function (name) {
    document.addEventListener(name, function () {
      setLiveStatus("polling", t("Polling"));
      pollActiveFollowers();
      pollNewerMessages();
    });
  });

  function incomingArticle(fragment) {
    if (!fragment) return null;
    if (fragment.matches && fragment.matches("article.message")) return fragment;
    return fragment.querySelector ? fragment.querySelector("article.message") : null;
  }

  // Replace a message with a newer copy as htmx does, keeping its [hx-preserve] parts (the
  // reply's Stop): the same element moves into the copy, with its focus and any press on it.
  function replaceKeeping(shown, incoming) {
    shown.before(incoming);
    incoming.querySelectorAll("[hx-preserve][id]").forEach(function (slot) {
      var kept = shown.querySelector("#" + CSS.escape(slot.id));
      if (!kept) return;
      if (slot.parentNode.moveBefore) slot.parentNode.moveBefore(kept, slot);
      else slot.parentNode.insertBefore(kept, slot);
      slot.remove();
    });
    shown.remove();
  }

  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var target = evt.detail.target;
    var fragment = evt.detail.fragment;
    if (target && target.id === "messages" && fragment && fragment.querySelectorAll &&
        !fragment.querySelector("[data-active-path]")) { // a whole path: versions.js
      // Messages from the websocket, appended unless this tab already shows them: then its
      // copy is brought up to date, except the reply it streams itself.
      fragment.querySelectorAll("article.message").forEach(function (article) {
        var shown = document.getElementById(article.id);
        if (!shown) return;
        article.remove();
        if (shown.hasAttribute("sse-connect") || shown.outerHTML === article.outerHTML) return;
        replaceKeeping(shown, article);
        htmx.process(article);
        htmx.trigger(article, "htmx:load", { elt: article }); // as a swap announces it
      });
      return;
    }
    // This tab streams that reply itself, token by token: only its end may replace it;
    // a rendering on the way shows its markdown.
    var incoming = incomingArticle(fragment);
    if (!target || !target.hasAttribute("sse-connect") || !incoming) return;
    if (TERMINAL.indexOf(incoming.getAttribute("data-status")) >= 0) {
      // Its end: unless the stream has not yet brought or shown all of its text; then the
      // stream's own end (right behind that text) swaps it in once the text is shown.
      var shown = target.querySelector(".message-body");
      var st = shown && bodies.get(shown);
      var end = parseInt((incoming.querySelector(".message-body") || incoming)
        .getAttribute("data-end") || "0", 10);
      if (st && (st.queued || end > st.base + codePoints(st.shown))) {
        evt.detail.shouldSwap = false;
      }
    } else {
      evt.detail.shouldSwap = false;
      var body = target.querySelector(".message-body.is-markdown");
      var incomingBody = incoming.querySelector(".message-body.is-markdown");
      if (body && incomingBody) offerFrame(body, incomingBody);
    }
  });

  // A reply can reach this tab twice (its own POST answer and the websocket): keep one,
  // preferring the copy that streams.
  document.addEventListener("htmx:load", function (evt) {
    var el = evt.detail.elt;
    if (!el || !el.matches || !el.matches("article.message")) return;
    var copies = document.querySelectorAll('[id="' + el.id + '"]');
    if (copies.length < 2) return;
    var keep = Array.prototype.find.call(copies, function (c) { return c.hasAttribute("sse-connect"); }) || el;
    copies.forEach(function (c) { if (c !== keep) c.remove(); });
  });

  // -- screen readers: a reply is announced once, when it ends --------------------------------
  var ANNOUNCED_CHARS = 600;
  var seenActive = new Set();
  function noteActive(root) {
    (root.querySelectorAll ? root : document).querySelectorAll(
      'article.message[data-role="assistant"]').forEach(function (article) {
      if (article.matches(ACTIVE)) seenActive.add(article.id);
    });
  }
  function announceEnd(article) {
    if (!seenActive.has(article.id)) return; // ended before this tab saw it run: no news
    var status = article.getAttribute("data-status");
    if (TERMINAL.indexOf(status) < 0) return;
    seenActive.delete(article.id);
    var announcer = document.getElementById("reply-announcer");
    if (!announcer) return;
    var body = article.querySelector(".message-body");
    var error = article.querySelector(".message-error");
    var text = (body ? body.textContent : "").replace(/\s+/g, " ").trim();
    if (text.length > ANNOUNCED_CHARS) text = text.slice(0, ANNOUNCED_CHARS) + "…";
    var heads = { complete: "Reply finished.", aborted: "Reply stopped.",
                  error: "Reply failed.", interrupted: "Reply interrupted." };
    announcer.textContent = t(heads[status]) + " " + (status === "complete" ? text :
      (error ? error.textContent.trim() : ""));
  }
  document.addEventListener("htmx:load", function (evt) {
    var el = evt.detail.elt;
    if (!el || !el.matches) return;
    if (el.matches('article.message[data-role="assistant"]')) {
      if (el.matches(ACTIVE)) seenActive.add(el.id);
      else announceEnd(el);
    } else {
      noteActive(el);
    }
  });

  document.addEventListener("htmx:afterSwap", followScroll);
  document.addEventListener("htmx:sseMessage", followScroll);

  // -- Stop: a press is never lost to the reply growing under it -----------------------------
  // A streaming reply's text pushes its Stop down a line at a time, so a press can begin on
  // the button and end, with the pointer still, on the text that took its place; the browser
  // then clicks nothing. A press that began on Stop and ended where it began stops the reply;
  // one dragged away is cancelled, as on any button.
  var STILL_PX = 10;
  var stopPress = null;
  document.addEventListener("pointerdown", function (evt) {
    var button = evt.isPrimary && evt.button === 0 && evt.target.closest &&
      evt.target.closest('button[data-action="cancel"]');
    var article = button && button.closest("article.message");
    stopPress = article ? { button: button, article: article.id, pointer: evt.pointerId,
                            x: evt.clientX, y: evt.clientY } : null;
  }, true);
  document.addEventListener("pointercancel", function () { stopPress = null; }, true);
  document.addEventListener("pointerup", function (evt) {
    var press = stopPress;
    stopPress = null;
    if (!press || evt.pointerId !== press.pointer) return;
    if (Math.abs(evt.clientX - press.x) > STILL_PX || Math.abs(evt.clientY - press.y) > STILL_PX) return;
    var under = evt.target.closest && evt.target.closest('button[data-action="cancel"]');
    if (under === press.button) {
      // Still under the pointer: the browser clicks it now. Not always, though, when frames
      // moved it into new copies of the reply while it was held: then this release does.
      var clicked = false;
      var saw = function (e) {
        if (e.target.closest && e.target.closest('button[data-action="cancel"]') === under) {
          clicked = true;
        }
      };
      document.addEventListener("click", saw, true);
      setTimeout(function () {
        document.removeEventListener("click", saw, true);
        if (!clicked && under.isConnected && !under.disabled) under.click();
      }, 0);
      return;
    }
    var article = document.getElementById(press.article);
    var button = article && article.querySelector('button[data-action="cancel"]');
    if (button && !button.disabled) button.click();
  }, true);

  // -- composer: Enter sends, Shift+Enter adds a line; disabled only while sending ----------
  function composer() { return document.getElementById("composer"); }

  document.addEventListener("keydown", function (evt) {
    var form = composer();
    if (!form || evt.target !== form.querySelector("textarea")) return;
    // On touch keyboards Enter is the newline key: there the Send button sends.
    if (evt.key === "Enter" && !evt.shiftKey && !evt.isComposing &&
        !window.matchMedia("(pointer: coarse)").matches) {
      evt.preventDefault();
      if (evt.target.value.trim()) form.requestSubmit();
    }
  });

  document.addEventListener("htmx:beforeRequest", function (evt) {
    if (evt.target === composer()) {
      evt.target.querySelector("button[type=submit]").disabled = true;
      clearFlash();
    }
  });

  document.addEventListener("htmx:afterRequest", function (evt) {
    var form = composer();
    if (evt.target !== form) return;
    form.querySelector("button[type=submit]").disabled = false;
    if (evt.detail.successful) {
      // The model picked stays picked: the thread now remembers it as its own.
      var picker = form.querySelector("select[name=model]");
      var picked = picker && picker.value;
      form.reset();
      if (picker) picker.value = picked;
      stickToBottom = true;
      followScroll();
    }
    form.querySelector("textarea").focus();
  });

  function clearFlash() {
    var flash = document.getElementById("flash");
    if (flash) flash.remove();
  }

  // htmx does not swap 4xx/5xx answers: show their message next to the composer instead.
  document.addEventListener("htmx:responseError", function (evt) {
    clearFlash();
    var box = document.createElement("div");
    box.id = "flash";
    box.className = "flash";
    box.setAttribute("role", "alert");
    var parsed = new DOMParser().parseFromString(evt.detail.xhr.responseText || "", "text/html");
    var text = parsed.body ? parsed.body.textContent.trim() : "";
    box.textContent = text || t("Request failed (HTTP %(status)s).", { status: evt.detail.xhr.status });
    var anchor = composer() || document.querySelector("main");
    anchor.parentNode.insertBefore(box, anchor);
  });

  document.addEventListener("DOMContentLoaded", function () {
    window.scrollTo(0, document.documentElement.scrollHeight);
  });
})();
