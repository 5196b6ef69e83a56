// Relay's attachments: files pasted, dropped or picked in the composer are uploaded at once
// (POST /uploads) and shown as chips (name, size, remove); each chip holds a hidden
// `attachments` field, so the composer sends them with the prompt. Before sending, the
// composer says how much of the model's context they use, and whether the model can read
// images at all: the server would refuse the same things, after.
(function () {
  "use strict";
  function t(message, values) { return window.relayText ? window.relayText(message, values) : message; }
  function number(n) { return window.relayNumber ? window.relayNumber(n) : n.toLocaleString("en-US"); }

  var CHARS_PER_TOKEN = 4; // as the server estimates (llm.usage)

  function composer() { return document.getElementById("composer"); }
  function chips() { return document.getElementById("composer-attachments"); }
  function textarea() { var form = composer(); return form && form.querySelector("textarea[name=content]"); }
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function fileSize(bytes) {
    if (bytes >= 1024 * 1024) return t("%(size)s MB", { size: (bytes / 1048576).toFixed(1) });
    return t("%(size)s KB", { size: number(Math.max(1, Math.round(bytes / 1024))) });
  }

  // The model the prompt goes to: the picker's option, else the form's own.
  function model() {
    var form = composer();
    var picker = form.querySelector("select[name=model]");
    var source = picker && picker.selectedOptions[0] ? picker.selectedOptions[0] : form;
    return {
      vision: source.getAttribute("data-vision") !== "false",
      context: parseInt(source.getAttribute("data-context") || form.getAttribute("data-context"), 10) || 128000,
      label: picker && picker.selectedOptions[0] ? picker.selectedOptions[0].textContent.trim()
        : form.getAttribute("data-model-label") || ""
    };
  }

  function note(text) {
    var el = document.getElementById("composer-note");
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  // -- the chips -----------------------------------------------------------------------------
  function allChips() { var list = chips(); return list ? Array.prototype.slice.call(list.children) : []; }

  function addChip(file) {
    var li = document.createElement("li");
    li.className = "attachment-chip";
    li.setAttribute("data-state", "uploading");
    var name = document.createElement("span");
    name.className = "chip-name";
    name.textContent = file.name || "file";
    name.title = file.name || "";
    var size = document.createElement("span");
    size.className = "chip-size";
    size.textContent = t("Uploading…");
    var remove = document.createElement("button");
    remove.type = "button";
    remove.setAttribute("data-action", "remove-attachment");
    remove.setAttribute("aria-label", t("Remove %(name)s", { name: file.name || "file" }));
    remove.textContent = "×";
    li.appendChild(name);
    li.appendChild(size);
    li.appendChild(remove);
    chips().appendChild(li);
    chips().hidden = false;
    return li;
  }

  function uploaded(li, body) {
    li.setAttribute("data-state", "ready");
    li.setAttribute("data-upload-id", body.id);
    li.setAttribute("data-type", body.type);
    li.setAttribute("data-tokens", body.tokens || 0);
    li.querySelector(".chip-name").textContent = body.name;
    li.querySelector(".chip-size").textContent = fileSize(body.size);
    if (body.type.indexOf("image/") === 0) {
      var img = document.createElement("img");
      img.src = "/uploads/" + body.id + "?preview=1"; // same origin (the page's policy); a large image's copy
      img.alt = "";
      li.insertBefore(img, li.firstChild);
    }
    var field = document.createElement("input");
    field.type = "hidden";
    field.name = "attachments";
    field.value = body.id;
    li.appendChild(field);
  }

  function removeChip(li) {
    li.remove();
    if (!allChips().length) chips().hidden = true;
    update();
  }

  function clearChips() {
    allChips().forEach(function (li) { li.remove(); });
    if (chips()) chips().hidden = true;
    update();
  }

  // -- uploading -----------------------------------------------------------------------------
  function addFiles(files) {
    var form = composer();
    if (!form || !chips() || !files || !files.length) return;
    var max = parseInt(form.getAttribute("data-max-files"), 10) || 10;
    Array.prototype.forEach.call(files, function (file) {
      if (allChips().length >= max) {
        note(t("A message can carry at most %(count)s files.", { count: number(max) }));
        return;
      }
      upload(file, addChip(file));
    });
    update();
  }

  function upload(file, li) {
    var data = new FormData();
    data.append("file", file, file.name || "pasted");
    fetch("/uploads", { method: "POST", body: data, credentials: "same-origin",
                        headers: { "X-CSRF-Token": csrf(), Accept: "application/json" } })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          if (response.status !== 201) {
            throw new Error(body.shown || body.message ||
                            t("Could not upload %(name)s.", { name: file.name || "file" }));
          }
          return body;
        });
      })
      .then(function (body) {
        if (!li.isConnected) return; // removed while it was uploading
        uploaded(li, body);
        update();
      })
      .catch(function (err) {
        li.remove();
        if (!allChips().length && chips()) chips().hidden = true;
        note(err.message || t("Could not upload %(name)s.", { name: file.name || "file" }));
        update(true);
      });
  }

  // -- the budget and the model's eyes -------------------------------------------------------
  var problem = null; // why the composer must not send now (null: it may)

  function update(keepNote) {
    var form = composer();
    var budget = document.getElementById("composer-budget");
    if (!form || !budget) return;
    var list = allChips();
    problem = null;
    if (!list.length) {
      budget.hidden = true;
      if (!keepNote) note("");
      return;
    }
    var which = model();
    var box = textarea();
    var used = Math.ceil((box ? box.value.length : 0) / CHARS_PER_TOKEN);
    var images = false;
    var waiting = false;
    list.forEach(function (li) {
      used += parseInt(li.getAttribute("data-tokens") || "0", 10);
      if ((li.getAttribute("data-type") || "").indexOf("image/") === 0) images = true;
      if (li.getAttribute("data-state") === "uploading") waiting = true;
    });
    budget.hidden = false;
    budget.textContent = t("Uses ~%(used)s of %(context)s tokens",
                           { used: number(used), context: number(which.context) });
    budget.setAttribute("data-state", used > which.context ? "over" : "ok");
    if (used > which.context) {
      problem = t("Too much for the model: ~%(used)s of %(context)s tokens. Remove a file or shorten the message.",
                  { used: number(used), context: number(which.context) });
    } else if (images && !which.vision) {
      problem = t("%(model)s cannot read images; pick a model that can, or remove the images.",
                  { model: which.label });
    } else if (waiting) {
      problem = null; // said only if someone sends now
    }
    if (problem) note(problem); else if (!keepNote) note("");
    form.setAttribute("data-uploading", waiting ? "true" : "false");
  }

  // -- paste, drop, pick ---------------------------------------------------------------------
  document.addEventListener("paste", function (evt) {
    var form = composer();
    if (!form || !form.contains(evt.target) || !evt.clipboardData) return;
    var files = evt.clipboardData.files;
    if (!files || !files.length) return; // plain text pastes as usual
    evt.preventDefault();
    addFiles(files);
  });

  function dragHasFiles(evt) {
    var types = evt.dataTransfer && evt.dataTransfer.types;
    return !!types && Array.prototype.indexOf.call(types, "Files") !== -1;
  }
  document.addEventListener("dragover", function (evt) {
    var form = composer();
    if (!form || !dragHasFiles(evt)) return;
    evt.preventDefault(); // dropping anywhere on the page attaches, never navigates away
    form.classList.add("is-dropping");
  });
  document.addEventListener("dragleave", function (evt) {
    var form = composer();
    if (form && (evt.target === document.documentElement || !evt.relatedTarget)) form.classList.remove("is-dropping");
  });
  document.addEventListener("drop", function (evt) {
    var form = composer();
    if (!form || !evt.dataTransfer || !evt.dataTransfer.files.length) return;
    evt.preventDefault();
    form.classList.remove("is-dropping");
    addFiles(evt.dataTransfer.files);
  });

  document.addEventListener("click", function (evt) {
    var target = evt.target.closest ? evt.target : evt.target.parentElement;
    if (!target) return;
    if (target.closest('#composer [data-action="attach"]')) {
      evt.preventDefault();
      var input = document.getElementById("composer-files");
      if (input) input.click();
      return;
    }
    var remove = target.closest('#composer-attachments [data-action="remove-attachment"]');
    if (remove) {
      evt.preventDefault();
      removeChip(remove.closest("li"));
      var box = textarea();
      if (box) box.focus();
    }
  });

  document.addEventListener("change", function (evt) {
    if (evt.target.id === "composer-files") {
      addFiles(evt.target.files);
      evt.target.value = ""; // the same file may be picked again
    } else if (evt.target.matches && evt.target.matches("#composer select[name=model]")) {
      update();
    }
  });
  document.addEventListener("input", function (evt) {
    if (evt.target === textarea() && allChips().length) update(true);
  });

  // -- sending -------------------------------------------------------------------------------
  document.addEventListener("htmx:confirm", function (evt) {
    var form = composer();
    if (evt.target !== form || !allChips().length) return;
    update();
    if (form.getAttribute("data-uploading") === "true") {
      evt.preventDefault();
      note(t("Wait for the files to finish uploading, then send."));
    } else if (problem) {
      evt.preventDefault();
      note(problem);
    }
  });
  document.addEventListener("htmx:afterRequest", function (evt) {
    if (evt.target === composer() && evt.detail.successful) clearChips();
  });
})();
