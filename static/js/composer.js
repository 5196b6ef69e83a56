// Relay's composer: Send becomes Stop while a reply is written, a prompt written meanwhile
// waits its turn, a counter near the length limit, the model's health, the thread's title
// kept in sync, and the share link's copy button. Small, no framework; htmx does requests.
(function () {
  "use strict";
  // The page's language (ui.js reads the catalog the server put in the page).
  function t(message, values) { return window.relayText ? window.relayText(message, values) : message; }

  var ACTIVE = 'article.message[data-role="assistant"][data-status="pending"], ' +
               'article.message[data-role="assistant"][data-status="streaming"]';
  var NEAR_LIMIT = 0.8; // the counter shows from this share of MAX_PROMPT_CHARS on
  var RETRY_MS = 1000; // a queued prompt the server still refuses (409) is tried again
  var MAX_RETRIES = 10;

  function composer() { return document.getElementById("composer"); }
  function textarea() { var form = composer(); return form && form.querySelector("textarea[name=content]"); }
  function sendButton() { var form = composer(); return form && form.querySelector('button[data-action="send"]'); }
  function activeReply() {
    var list = document.getElementById("messages");
    return list && list.querySelector(ACTIVE);
  }
  function focusComposer() { var box = textarea(); if (box) box.focus(); }
  function number(n) { return window.relayNumber ? window.relayNumber(n) : n.toLocaleString("en-US"); }

  // -- the wording of a page with JavaScript (the server renders the no-JS truth) ------------
  (function () {
    var status = document.getElementById("live-status");
    if (status && status.getAttribute("data-state") === "static") {
      var state = status.getAttribute("data-js-state") === "polling" ? "polling" : "connecting";
      status.setAttribute("data-state", state);
      status.textContent = state === "polling" ? t("Polling") : t("Connecting…");
    }
    var box = textarea();
    if (box && box.hasAttribute("data-js-placeholder")) {
      box.setAttribute("placeholder", touchScreen()
        ? t("Ask anything. Enter adds a line; the Send button sends.")
        : box.getAttribute("data-js-placeholder"));
    }
  })();

  // -- messages that people read, next to the composer ---------------------------------------
  function showFlash(text) {
    var old = document.getElementById("flash");
    if (old) old.remove();
    var box = document.createElement("div");
    box.id = "flash";
    box.className = "flash";
    box.setAttribute("role", "alert");
    box.textContent = text;
    var anchor = composer() || document.querySelector("main");
    anchor.parentNode.insertBefore(box, anchor);
  }

  // -- the character counter -----------------------------------------------------------------
  function charCount(text) { // code points, as the server counts them
    var pairs = text.match(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g);
    return text.length - (pairs ? pairs.length : 0);
  }
  function limit() {
    var form = composer();
    var max = form ? parseInt(form.getAttribute("data-max-chars"), 10) : NaN;
    return max > 0 ? max : null;
  }
  function overLimit(text) {
    var max = limit();
    return max !== null && charCount(text) > max ? max : null;
  }
  function updateCounter() {
    var counter = document.getElementById("composer-counter");
    var box = textarea();
    var max = limit();
    if (!counter || !box || max === null) return;
    var n = charCount(box.value);
    counter.hidden = n < max * NEAR_LIMIT;
    counter.setAttribute("data-state", n > max ? "over" : "near");
    counter.textContent = n > max
      ? t("%(count)s characters over the limit of %(max)s", { count: number(n - max), max: number(max) })
      : t("%(count)s / %(max)s characters", { count: number(n), max: number(max) });
    if (n > max) box.setAttribute("aria-invalid", "true"); else box.removeAttribute("aria-invalid");
  }
  document.addEventListener("input", function (evt) {
    if (evt.target === textarea()) { updateCounter(); scheduleUpdate(); }
  });

  // -- Send becomes Stop while a reply of this thread is active ------------------------------
  var queued = null; // the prompt waiting for the active reply to end
  var inFlight = null; // {text, draft} while a queued prompt is being sent
  var retries = 0;
  var failedSeen = new Set(); // replies seen failed: each new failure checks the model again
  var pageReady = false;

  // On a touch screen Enter adds a line, so while a reply runs the button queues what is
  // typed (and stops the reply when nothing is); elsewhere Enter queues and it stops.
  var MODES = { send: ["Send", "Send"], stop: ["Stop", "Stop the reply (Escape)"],
                queue: ["Queue", "Send when the reply ends"] }; // translated as shown
  function touchScreen() { return window.matchMedia("(pointer: coarse)").matches; }
  function updateComposer() {
    var button = sendButton();
    if (!button) return;
    var active = !!activeReply();
    var typed = touchScreen() && textarea().value.trim() !== "";
    var mode = !active ? "send" : typed ? "queue" : "stop";
    if (button.getAttribute("data-mode") !== mode) {
      button.setAttribute("data-mode", mode);
      button.textContent = t(MODES[mode][0]);
      button.setAttribute("aria-label", t(MODES[mode][1]));
    }
    if (!active && queued !== null && inFlight === null) sendQueued();
    // A reply that failed may mean the model went away: look again.
    var fresh = false;
    document.querySelectorAll('#messages article.message[data-status="error"]').forEach(
      function (article) {
        if (failedSeen.has(article.id)) return;
        failedSeen.add(article.id);
        fresh = true;
      });
    if (fresh && pageReady) checkHealth(); // the failures the page came with are old news
    pageReady = true;
  }

  var scheduled = false;
  function scheduleUpdate() {
    if (scheduled) return;
    scheduled = true;
    setTimeout(function () { scheduled = false; updateComposer(); }, 0);
  }

  function stopActive() {
    var reply = activeReply();
    if (!reply) return;
    var cancel = reply.querySelector('button[data-action="cancel"]');
    if (cancel) {
      cancel.click(); // the reply's own Stop: POST /messages/<id>/cancel, swapped in stopped
    } else {
      htmx.ajax("POST", "/messages/" + reply.getAttribute("data-message-id") + "/cancel",
                { target: reply, swap: "outerHTML" });
    }
    focusComposer();
  }

  // -- the queued prompt ---------------------------------------------------------------------
  function renderQueue() {
    var box = document.getElementById("composer-queued");
    if (!box) return;
    box.hidden = queued === null;
    box.querySelector(".composer-queued-text").textContent = queued || "";
  }
  function enqueue(text) {
    queued = queued === null ? text : queued + "\n\n" + text;
    renderQueue();
  }
  function cancelQueued() {
    if (queued === null) return;
    var box = textarea();
    box.value = box.value.trim() ? queued + "\n\n" + box.value : queued;
    queued = null;
    renderQueue();
    updateCounter();
    box.focus();
  }
  function sendQueued() {
    var form = composer();
    var box = textarea();
    if (!form || !box) return;
    inFlight = { text: queued, draft: box.value };
    queued = null;
    renderQueue();
    box.value = inFlight.text;
    form.requestSubmit();
  }

  // Before htmx sends the composer: refuse what is too long, queue what would run in parallel.
  document.addEventListener("htmx:confirm", function (evt) {
    var form = composer();
    if (evt.target !== form) return;
    var text = textarea().value;
    var max = overLimit(text);
    if (max !== null) {
      evt.preventDefault();
      if (inFlight) { queued = inFlight.text; textarea().value = inFlight.draft; inFlight = null; renderQueue(); }
      showFlash(t("The message is %(count)s characters long; the limit is %(max)s. Shorten it and send again.",
                  { count: number(charCount(text)), max: number(max) }));
      return;
    }
    if (inFlight || !activeReply()) return;
    evt.preventDefault();
    if (text.trim()) enqueue(text);
    textarea().value = "";
    updateCounter();
    scheduleUpdate();
  });

  document.addEventListener("htmx:afterRequest", function (evt) {
    var elt = evt.detail.elt;
    if (elt && elt.matches && elt.matches('button[data-action="cancel"]')) focusComposer();
    if (evt.target !== composer()) return;
    if (!inFlight) { updateCounter(); return; }
    var sent = inFlight;
    inFlight = null;
    var box = textarea();
    if (evt.detail.successful) {
      retries = 0;
      box.value = sent.draft; // what was being typed meanwhile stays
    } else if (evt.detail.xhr && evt.detail.xhr.status === 409 && retries < MAX_RETRIES) {
      retries += 1; // the server still sees the last reply running: wait a moment
      queued = queued === null ? sent.text : sent.text + "\n\n" + queued;
      box.value = sent.draft;
      renderQueue();
      setTimeout(scheduleUpdate, RETRY_MS);
    } else {
      retries = 0; // refused: the text goes back where it can be fixed and sent again
      box.value = sent.draft.trim() ? sent.text + "\n\n" + sent.draft : sent.text;
    }
    updateCounter();
  });

  // A queued prompt refused while the last reply finishes saving is retried, not shown.
  document.addEventListener("htmx:responseError", function (evt) {
    if (inFlight && evt.target === composer() && evt.detail.xhr.status === 409 &&
        retries < MAX_RETRIES) {
      evt.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("click", function (evt) {
    var target = evt.target.closest ? evt.target : evt.target.parentElement;
    if (!target) return;
    var send = target.closest('#composer button[data-action="send"]');
    if (send && send.getAttribute("data-mode") === "stop") {
      evt.preventDefault();
      stopActive();
      return;
    }
    if (target.closest('[data-action="cancel-queued"]')) {
      evt.preventDefault();
      cancelQueued();
      return;
    }
    var copy = target.closest('[data-action="copy-link"]');
    if (copy) {
      evt.preventDefault();
      copyLink(copy);
    }
  });

  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "Escape" || evt.isComposing || !composer() || !activeReply()) return;
    evt.preventDefault();
    stopActive();
  });

  // -- the model's health, shown before a prompt is sent -------------------------------------
  function checkHealth() {
    var el = document.getElementById("model-health");
    if (!el) return;
    // The model picked in the composer, if there is a choice; the default model otherwise.
    var picker = document.querySelector("#composer select[name=model]");
    var url = "/models/health" + (picker ? "?model=" + encodeURIComponent(picker.value) : "");
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (health) {
        el.setAttribute("data-state", health.ok ? "ok" : "down");
        el.textContent = health.ok ? t("Model ready")
          : t("Model unavailable: %(reason)s", { reason: health.message });
        el.title = health.label || "";
        el.hidden = false;
      })
      .catch(function () {
        el.setAttribute("data-state", "unknown");
        el.textContent = t("Model status unknown");
        el.hidden = false;
      });
  }

  // -- the title: heading, sidebar entry and document.title ----------------------------------
  function syncTitle() {
    var heading = document.getElementById("thread-title");
    if (!heading) return;
    var title = heading.textContent.trim() + " · Relay";
    if (document.title !== title) document.title = title;
  }

  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var target = evt.detail.target;
    var fragment = evt.detail.fragment;
    if (!target || !target.closest || !target.closest("#thread-list") || !fragment || !fragment.querySelectorAll) return;
    // A thread's entry comes back to the top of the list: drop the one it replaces.
    fragment.querySelectorAll(".thread-item[id]:not([data-in-place])").forEach(function (item) {
      var old = document.getElementById(item.id);
      if (old) old.remove();
    });
  });
  document.addEventListener("htmx:oobAfterSwap", syncTitle);
  document.addEventListener("htmx:afterSettle", syncTitle);

  // -- the share link ------------------------------------------------------------------------
  function copyLink(button) {
    var source = document.querySelector(button.getAttribute("data-copy-from"));
    if (!source) return;
    var copied = function () {
      button.textContent = t("Copied");
      setTimeout(function () { button.textContent = t("Copy link"); }, 2000);
    };
    var fallback = function () {
      source.select();
      if (document.execCommand("copy")) copied();
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(source.value).then(copied, fallback);
    } else {
      fallback();
    }
  }
  function revealScripted(root) { // controls that only work with JavaScript
    root.querySelectorAll('[data-action="copy-link"][hidden]').forEach(function (el) {
      el.hidden = false;
    });
  }

  document.addEventListener("htmx:load", function (evt) {
    if (evt.detail.elt && evt.detail.elt.querySelectorAll) revealScripted(evt.detail.elt);
  });

  var list = document.getElementById("messages");
  if (list) {
    new MutationObserver(scheduleUpdate).observe(list, {
      childList: true, subtree: true, attributes: true, attributeFilter: ["data-status"] });
  }
  revealScripted(document);
  updateComposer();
  updateCounter();
  syncTitle();
  checkHealth();
  // Another model picked: say whether that one is ready.
  document.addEventListener("change", function (evt) {
    if (evt.target.matches && evt.target.matches("#composer select[name=model]")) checkHealth();
  });
})();
