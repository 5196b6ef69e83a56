// Versions of a turn: the inline prompt editor, and a thread's path sent by the websocket.
(function () {
  "use strict";
  // The page's language (ui.js reads the catalog the server put in the page).
  function t(message, values) { return window.relayText ? window.relayText(message, values) : message; }

  // -- edit a prompt in place: Save posts a new version, Cancel (or Escape) puts it back ------
  function closeEditor(form) {
    var article = form.closest("article.message");
    var body = article && article.querySelector(".message-body");
    if (body) body.hidden = false;
    var button = article && article.querySelector('button[data-action="edit"]');
    form.remove();
    if (button) button.focus();
  }

  function openEditor(article, url) {
    var open = article.querySelector("form.message-editor");
    if (open) { open.querySelector("textarea").focus(); return; }
    var body = article.querySelector(".message-body");
    var form = document.createElement("form");
    form.className = "message-editor";
    form.method = "post";
    form.action = url;
    form.setAttribute("hx-post", url);
    form.setAttribute("hx-target", "#messages");
    form.setAttribute("hx-swap", "innerHTML");
    var area = document.createElement("textarea");
    area.name = "content";
    area.required = true;
    area.rows = Math.min(12, Math.max(2, body.textContent.split("\n").length));
    area.value = body.textContent;
    area.setAttribute("aria-label", t("Edit your prompt"));
    var actions = document.createElement("div");
    actions.className = "message-editor-actions";
    var save = document.createElement("button");
    save.type = "submit";
    save.className = "button button--small button--primary";
    save.setAttribute("data-action", "save-edit");
    save.textContent = t("Save");
    var cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "button button--small";
    cancel.setAttribute("data-action", "cancel-edit");
    cancel.textContent = t("Cancel");
    actions.append(save, cancel);
    form.append(area, actions);
    body.hidden = true;
    body.after(form);
    htmx.process(form);
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  document.addEventListener("click", function (evt) {
    var button = evt.target.closest && evt.target.closest("button[data-action]");
    if (!button) return;
    var action = button.getAttribute("data-action");
    if (action === "edit") {
      openEditor(button.closest("article.message"), button.getAttribute("data-edit-url"));
    } else if (action === "cancel-edit") {
      closeEditor(button.closest("form.message-editor"));
    }
  });

  document.addEventListener("keydown", function (evt) {
    var form = evt.target.closest && evt.target.closest("form.message-editor");
    if (!form || evt.target.tagName !== "TEXTAREA") return;
    if (evt.key === "Escape") {
      evt.preventDefault();
      closeEditor(form);
    } else if (evt.key === "Enter" && !evt.shiftKey && !evt.isComposing &&
               !window.matchMedia("(pointer: coarse)").matches) {
      evt.preventDefault(); // as in the composer: Enter saves, Shift+Enter adds a line
      if (evt.target.value.trim()) form.requestSubmit();
    }
  });

  // htmx wires up swapped-in controls when the swap settles; a click on ‹ › or Regenerate
  // before that would submit its form without htmx (a page load): wire the control now.
  document.addEventListener("click", function (evt) {
    var control = evt.target.closest && evt.target.closest("#messages button[hx-post]");
    if (control) htmx.process(control);
  }, true);

  // -- the path from the websocket: replaces the list only when it shows another path --------
  function shownIds(list) {
    // In a comparison, which reply the thread goes on from is part of what is shown.
    return Array.prototype.map.call(list.querySelectorAll("article.message"), function (a) {
      var cell = a.closest(".comparison-cell");
      return a.id + (cell && cell.getAttribute("data-chosen") === "true" ? "*" : "");
    }).join(",");
  }

  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var target = evt.detail.target;
    var fragment = evt.detail.fragment;
    if (!target || target.id !== "messages" || !fragment || !fragment.querySelector) return;
    var incoming = fragment.querySelector("[data-active-path]");
    // This tab chose that path itself (and streams its active reply): keep its list.
    if (incoming && shownIds(incoming) === shownIds(target)) evt.detail.shouldSwap = false;
  });
})();
