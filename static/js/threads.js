// Threads to manage: sidebar entries updated where they stand, the rename form closing
// once saved, the open thread's entry marked wherever it is listed.
(function () {
  "use strict";

  function openThreadId() {
    var section = document.querySelector("section.thread[data-thread-id]");
    return section ? section.getAttribute("data-thread-id") : null;
  }

  // This page deleting its own thread goes home when the answer comes: the websocket's
  // news of the deletion must not replace the form waiting for that answer.
  var deleting = false;
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail.elt;
    if (elt.matches && elt.matches("form") && elt.querySelector('[data-action="delete"]')) deleting = true;
  });
  document.addEventListener("htmx:afterRequest", function (evt) {
    var elt = evt.detail.elt;
    if (!evt.detail.successful && elt.matches && elt.querySelector && elt.querySelector('[data-action="delete"]')) deleting = false;
  });
  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var fragment = evt.detail.fragment;
    if (!deleting || !fragment) return;
    var gone = (fragment.matches && fragment.matches("section.thread--deleted")) ||
      (fragment.querySelector && fragment.querySelector("section.thread--deleted"));
    if (gone) evt.preventDefault();
  });

  // An entry sent with data-in-place replaces the listed one, or is dropped when the list
  // does not show that thread (a later page, or never sent a prompt); data-gone removes it.
  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var target = evt.detail.target;
    var fragment = evt.detail.fragment;
    if (!target || target.id !== "thread-list" || !fragment || !fragment.querySelectorAll) return;
    fragment.querySelectorAll(".thread-item[data-in-place]").forEach(function (item) {
      var shown = document.getElementById(item.id);
      item.remove();
      if (!shown) return;
      if (item.hasAttribute("data-gone")) {
        shown.remove();
        return;
      }
      item.removeAttribute("data-in-place");
      markCurrent(item);
      shown.replaceWith(item);
      htmx.process(item);
      htmx.trigger(item, "htmx:load", { elt: item });
    });
  });

  function markCurrent(scope) {
    var current = openThreadId();
    var items = scope.matches && scope.matches(".thread-item") ? [scope]
      : scope.querySelectorAll ? scope.querySelectorAll(".thread-item") : [];
    Array.prototype.forEach.call(items, function (item) {
      var link = item.querySelector(".thread-link");
      var on = current !== null && item.getAttribute("data-thread-id") === current;
      link.classList.toggle("is-current", on);
      if (on) { link.setAttribute("aria-current", "page"); } else { link.removeAttribute("aria-current"); }
    });
  }

  document.addEventListener("htmx:load", function (evt) {
    if (evt.detail.elt) markCurrent(evt.detail.elt);
  });

  // A rename saved: its form closes, showing the new title; another entry's menu closes.
  document.addEventListener("htmx:afterRequest", function (evt) {
    var form = evt.detail.elt;
    if (!evt.detail.successful || !form.matches || !form.matches("form[data-action=rename-thread]")) return;
    var details = form.closest("details");
    if (details && document.body.contains(details)) details.open = false;
  });

  // Opening one menu closes the others; Escape closes the one open.
  document.addEventListener("toggle", function (evt) {
    var opened = evt.target;
    if (!opened.matches || !opened.matches("details.thread-menu, details.thread-rename") || !opened.open) return;
    document.querySelectorAll("details.thread-menu[open], details.thread-rename[open]").forEach(function (other) {
      if (other !== opened) other.open = false;
    });
    var input = opened.querySelector("input[name=title]");
    if (input) { input.focus(); input.select(); }
  }, true);
  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "Escape") return;
    var open = evt.target.closest && evt.target.closest("details.thread-menu[open], details.thread-rename[open]");
    if (!open) return;
    open.open = false;
    var summary = open.querySelector("summary");
    if (summary) summary.focus();
  });
})();
