// Relay's page behaviour: small, no framework; htmx does the requests and swaps.
(function () {
  "use strict";

  // Keep each stream's cursor in its sse-connect URL: the sse extension re-reads that
  // attribute when it reconnects by itself, and a fresh EventSource sends no Last-Event-ID.
  function rememberCursor(source, lastEventId) {
    if (!source || !/^\d+$/.test(lastEventId || "")) return;
    var url = new URL(source.getAttribute("sse-connect"), window.location.href);
    url.searchParams.set("after", lastEventId);
    source.setAttribute("sse-connect", url.pathname + url.search);
  }

  function nearBottom() {
    var doc = document.scrollingElement || document.documentElement;
    return doc.scrollHeight - doc.scrollTop - doc.clientHeight < 120;
  }

  var stickToBottom = true;
  window.addEventListener("scroll", function () { stickToBottom = nearBottom(); }, { passive: true });

  function followScroll() {
    if (stickToBottom) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  document.addEventListener("htmx:sseMessage", function (evt) {
    var message = evt.detail;
    var article = evt.target.closest("article.message");
    if (message && message.type === "delta" && article) {
      article.setAttribute("data-status", "streaming");
      rememberCursor(article.closest("[sse-connect]"), message.lastEventId);
    }
    followScroll();
  });

  document.addEventListener("htmx:afterSwap", followScroll);

  function composer() { return document.getElementById("composer"); }

  document.addEventListener("keydown", function (evt) {
    var form = composer();
    if (!form || evt.target !== form.querySelector("textarea")) return;
    if (evt.key === "Enter" && !evt.shiftKey && !evt.isComposing) {
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
      form.reset();
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
    box.textContent = text || ("Request failed (HTTP " + evt.detail.xhr.status + ").");
    var anchor = composer() || document.querySelector("main");
    anchor.parentNode.insertBefore(box, anchor);
  });

  document.addEventListener("DOMContentLoaded", function () { window.scrollTo(0, document.documentElement.scrollHeight); });
})();
