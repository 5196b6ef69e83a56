// Organised threads in the sidebar: drag a thread onto a folder (or out of one), folders
// that remember being collapsed, and select mode (tick several threads, then archive or
// delete them at once). Every action also works without dragging: each entry's menu has
// "Move to folder", and the forms post without JavaScript.
(function () {
  "use strict";
  // The page's language (ui.js reads the catalog the server put in the page).
  function t(message, values) { return window.relayText ? window.relayText(message, values) : message; }

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // -- drag and drop --------------------------------------------------------------------------
  var dragged = null;
  document.addEventListener("dragstart", function (evt) {
    var item = evt.target.closest && evt.target.closest(".thread-item[draggable]");
    if (!item) return;
    dragged = item;
    item.classList.add("is-dragging");
    evt.dataTransfer.effectAllowed = "move";
    evt.dataTransfer.setData("text/plain", item.getAttribute("data-thread-id"));
  });
  document.addEventListener("dragend", function () {
    if (dragged) dragged.classList.remove("is-dragging");
    dragged = null;
    document.querySelectorAll(".is-drop-target").forEach(function (el) { el.classList.remove("is-drop-target"); });
  });
  function dropZone(evt) {
    var zone = evt.target.closest && evt.target.closest("[data-drop-folder]");
    if (!zone && evt.target.closest) {
      var folder = evt.target.closest("details.folder");
      zone = folder && folder.querySelector("[data-drop-folder]");
    }
    return dragged && zone ? zone : null;
  }
  document.addEventListener("dragover", function (evt) {
    var zone = dropZone(evt);
    if (!zone) return;
    evt.preventDefault();
    evt.dataTransfer.dropEffect = "move";
    document.querySelectorAll(".is-drop-target").forEach(function (el) {
      if (el !== zone) el.classList.remove("is-drop-target");
    });
    zone.classList.add("is-drop-target");
  });
  document.addEventListener("drop", function (evt) {
    var zone = dropZone(evt);
    if (!zone) return;
    evt.preventDefault();
    var id = dragged.getAttribute("data-thread-id");
    var folder = zone.getAttribute("data-drop-folder");
    if ((dragged.getAttribute("data-folder") || "") === folder) return;
    htmx.ajax("POST", "/threads/" + id + "/organise", {
      target: "#thread-list", swap: "outerHTML",
      values: { folder: folder }, headers: { "X-CSRF-Token": csrf() }
    });
  });

  // -- folders remember being collapsed -------------------------------------------------------
  var KEY = "relay-collapsed-folders";
  function collapsed() {
    try { return JSON.parse(window.localStorage.getItem(KEY) || "[]"); } catch (err) { return []; }
  }
  function applyCollapsed(scope) {
    var names = collapsed();
    scope.querySelectorAll("details.folder[data-folder]").forEach(function (folder) {
      if (names.indexOf(folder.getAttribute("data-folder")) !== -1) folder.open = false;
    });
  }
  document.addEventListener("toggle", function (evt) {
    var folder = evt.target;
    if (!folder.matches || !folder.matches("details.folder[data-folder]")) return;
    var names = collapsed().filter(function (n) { return n !== folder.getAttribute("data-folder"); });
    if (!folder.open) names.push(folder.getAttribute("data-folder"));
    try { window.localStorage.setItem(KEY, JSON.stringify(names)); } catch (err) { /* not kept */ }
  }, true);

  // -- select mode ----------------------------------------------------------------------------
  function sidebar() { return document.getElementById("sidebar"); }
  function bulkForm() { return document.getElementById("bulk-form"); }
  function selecting() { return !!sidebar() && sidebar().classList.contains("is-selecting"); }
  function setSelecting(on) {
    var bar = sidebar();
    var form = bulkForm();
    if (!bar || !form) return;
    bar.classList.toggle("is-selecting", on);
    form.hidden = !on;
    document.querySelectorAll("[data-action=select-mode]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(on));
    });
    if (!on) {
      document.querySelectorAll("input.thread-select").forEach(function (box) { box.checked = false; });
    } else {
      var first = document.querySelector("#thread-list input.thread-select");
      if (first) first.focus();
    }
    countSelected();
  }
  function countSelected() {
    var form = bulkForm();
    if (!form) return;
    var n = document.querySelectorAll("input.thread-select:checked").length;
    var label = document.getElementById("bulk-count");
    if (label) {
      label.textContent = n === 0 ? t("None selected")
        : window.relayPlural("%(num)d selected", "%(num)d selected", n);
    }
    form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = n === 0; });
  }
  document.addEventListener("change", function (evt) {
    if (evt.target.matches && evt.target.matches("input.thread-select")) countSelected();
  });
  document.addEventListener("click", function (evt) {
    var el = evt.target.closest && evt.target.closest("[data-action]");
    if (!el) return;
    var action = el.getAttribute("data-action");
    if (action === "select-mode") setSelecting(!selecting());
    else if (action === "select-done") setSelecting(false);
    else if (action === "bulk-delete" || action === "bulk-archive") bulkForm().relaySubmitter = action;
  });
  // Deleting several asks first; archiving does not (it is one click back).
  document.addEventListener("htmx:confirm", function (evt) {
    var form = bulkForm();
    if (!form || evt.detail.elt !== form || form.relaySubmitter !== "bulk-delete") return;
    evt.preventDefault();
    var n = document.querySelectorAll("input.thread-select:checked").length;
    if (window.confirm(window.relayPlural(
      "Delete %(num)d thread and all its messages? This cannot be undone.",
      "Delete %(num)d threads and all their messages? This cannot be undone.", n))) {
      evt.detail.issueRequest(true);
    }
  });
  document.addEventListener("htmx:afterRequest", function (evt) {
    if (evt.detail.elt === bulkForm() && evt.detail.successful) setSelecting(false);
  });

  // A new sidebar (after an action) keeps the collapsed folders and the select mode.
  document.addEventListener("htmx:load", function (evt) {
    var el = evt.detail.elt;
    if (!el || !el.querySelectorAll) return;
    applyCollapsed(el);
    if (el.id === "thread-list") countSelected();
  });

  function start() {
    applyCollapsed(document);
    countSelected();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
