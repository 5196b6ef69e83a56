// The composer's Compare control: the model already picked cannot be ticked again, at most
// `data-max` others can be, and the summary says how many will answer.
(function () {
  "use strict";
  // The page's language (ui.js reads the catalog the server put in the page).
  function t(message, values) { return window.relayText ? window.relayText(message, values) : message; }

  function update(form) {
    var box = form && form.querySelector(".composer-compare");
    if (!box) return;
    var picker = form.querySelector("select[name=model]");
    var fieldset = box.querySelector("fieldset");
    var max = parseInt(fieldset.getAttribute("data-max"), 10) || 3;
    var boxes = box.querySelectorAll("input[name=compare]");
    var ticked = 0;
    boxes.forEach(function (input) {
      if (picker && input.value === picker.value) input.checked = false;
      if (input.checked) ticked += 1;
    });
    boxes.forEach(function (input) {
      input.disabled = (picker && input.value === picker.value) ||
                       (!input.checked && ticked >= max);
    });
    var summary = box.querySelector("summary");
    summary.textContent = ticked
      ? window.relayPlural("Compare: %(num)d model", "Compare: %(num)d models", ticked + 1)
      : t("Compare");
    box.setAttribute("data-models", String(ticked ? ticked + 1 : 1));
  }

  document.addEventListener("change", function (evt) {
    var form = evt.target.closest && evt.target.closest("form#composer");
    if (form && evt.target.matches("select[name=model], input[name=compare]")) update(form);
  });
  // A sent comparison is over: the form was reset, so is the control (and it closes).
  document.addEventListener("reset", function (evt) {
    var form = evt.target;
    if (!form || form.id !== "composer") return;
    setTimeout(function () {
      update(form);
      var box = form.querySelector(".composer-compare");
      if (box) box.open = false;
    }, 0);
  });
  update(document.getElementById("composer"));
})();
