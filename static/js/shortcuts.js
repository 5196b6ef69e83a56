// Keyboard shortcuts, with ⌘ on macOS and Ctrl elsewhere. Every one but `?` holds a
// modifier (or is Shift+Esc), so none fires while typing text; `?` (a single key, which
// WCAG 2.1.4 wants switchable) only when no text field has focus, and it can be turned off
// in the dialog that lists the keys.
(function () {
  "use strict";
  // The page's language (ui.js reads the catalog the server put in the page).
  function t(message, values) { return window.relayText ? window.relayText(message, values) : message; }

  var platform = (navigator.userAgentData && navigator.userAgentData.platform) || navigator.platform || "";
  var MAC = /mac|iphone|ipad|ipod/i.test(platform);
  var SINGLE_KEY = "relay-single-key-shortcuts";

  function singleKeyOn() {
    try { return window.localStorage.getItem(SINGLE_KEY) !== "off"; } catch (err) { return true; }
  }

  // -- what each shortcut does ----------------------------------------------------------------
  function say(text) { window.relayAnnounce(text); }  // ui.js's one live region
  function visible(el) { return !!el && el.getClientRects().length > 0; }
  function narrow() { return window.matchMedia("(max-width: 720px)").matches; }
  function drawerOpen() {
    var bar = document.getElementById("sidebar");
    return !!bar && bar.classList.contains("is-open");
  }

  function newChat() {
    var link = document.querySelector("[data-action=new-thread]");
    window.location.href = link ? link.href : "/";
  }
  function focusComposer() {
    var box = document.querySelector("form#composer textarea[name=content]");
    if (!box) { say(t("There is no message box on this page")); return; }
    if (narrow() && drawerOpen()) document.querySelector("[data-action=menu]").click();
    box.focus();
  }
  function stopReply() {
    var buttons = document.querySelectorAll("article.message button[data-action=cancel]");
    var button = buttons.length ? buttons[buttons.length - 1] : null;
    if (!button) { say(t("No reply is being written")); return; }
    button.click();
  }
  function copyLastReply() {
    var replies = document.querySelectorAll('article.message[data-role="assistant"]');
    var last = replies.length ? replies[replies.length - 1] : null;
    var button = last && last.querySelector("button[data-action=copy]");
    if (!button) { say(t("There is no reply to copy yet")); return; }
    button.click(); // ui.js copies the reply's text and says "Copied"
  }
  function showSidebar(show) {
    if (narrow()) {
      if (drawerOpen() !== show) document.querySelector("[data-action=menu]").click();
      return;
    }
    document.documentElement.classList.toggle("sidebar-hidden", !show);
  }
  function sidebarShown() {
    return narrow() ? drawerOpen() : !document.documentElement.classList.contains("sidebar-hidden");
  }
  function toggleSidebar() {
    var show = !sidebarShown();
    showSidebar(show);
    if (!narrow()) say(show ? t("Sidebar shown") : t("Sidebar hidden"));
  }
  function search() {
    var box = document.getElementById("search-q");
    if (!box) { say(t("Search is not available on this page")); return; }
    if (!sidebarShown()) showSidebar(true);
    box.focus();
    box.select();
  }

  // -- the dialog that lists them -------------------------------------------------------------
  var opener = null;
  function dialog() { return document.getElementById("shortcuts-dialog"); }
  function openHelp() {
    var box = dialog();
    if (!box || box.open) return;
    opener = document.activeElement;
    box.showModal(); // modal: focus stays inside, Escape closes it
    var close = box.querySelector("[data-action=close-shortcuts]");
    if (close) close.focus();
  }
  function closeHelp() {
    var box = dialog();
    if (box && box.open) box.close();
  }

  var ACTIONS = {
    "new-chat": newChat, "focus-composer": focusComposer, "stop": stopReply,
    "copy-last": copyLastReply, "search": search, "sidebar": toggleSidebar, "help": openHelp
  };

  // -- which keys -----------------------------------------------------------------------------
  function typing(target) {
    if (!target || !target.closest) return false;
    return !!target.closest("input, textarea, select, [contenteditable]:not([contenteditable=false])");
  }
  function shortcutFor(evt) {
    var mod = MAC ? evt.metaKey && !evt.ctrlKey : evt.ctrlKey && !evt.metaKey;
    if (evt.altKey) return null;
    if (mod && evt.shiftKey) {
      switch (evt.code) {
        case "KeyO": return "new-chat";
        case "Period": return "stop";
        case "KeyC": return "copy-last";
        case "KeyS": return "sidebar";
      }
      return null;
    }
    if (mod && !evt.shiftKey) {
      if (evt.code === "KeyK") return "search";
      if (evt.code === "Slash") return "help";
      return null;
    }
    if (evt.ctrlKey || evt.metaKey) return null;
    if (evt.shiftKey && evt.key === "Escape") return "focus-composer";
    if (evt.key === "?" && singleKeyOn() && !typing(evt.target)) return "help";
    return null;
  }

  // Tab and Shift+Tab go round the dialog's controls, never out to the page or the browser.
  function trapFocus(box, evt) {
    var controls = Array.prototype.filter.call(
      box.querySelectorAll("button, input, a[href], [tabindex]:not([tabindex='-1'])"), visible);
    if (!controls.length) return;
    var first = controls[0], last = controls[controls.length - 1];
    if (evt.shiftKey && (document.activeElement === first || !box.contains(document.activeElement))) {
      evt.preventDefault();
      last.focus();
    } else if (!evt.shiftKey && (document.activeElement === last || !box.contains(document.activeElement))) {
      evt.preventDefault();
      first.focus();
    }
  }

  document.addEventListener("keydown", function (evt) {
    if (evt.defaultPrevented || evt.isComposing) return;
    var box = dialog();
    if (box && box.open) {
      if (evt.key === "Tab") trapFocus(box, evt);
      else if (shortcutFor(evt) === "help") { evt.preventDefault(); closeHelp(); }
      return;
    }
    var name = shortcutFor(evt);
    if (!name) return;
    evt.preventDefault();
    ACTIONS[name]();
  });

  // -- the dialog's own controls --------------------------------------------------------------
  function setUp() {
    var box = dialog();
    if (!box) return;
    if (MAC) {
      box.querySelectorAll("kbd[data-mod]").forEach(function (kbd) {
        kbd.textContent = "⌘";
        kbd.setAttribute("title", t("Command"));
      });
    }
    box.addEventListener("close", function () {
      if (opener && document.body.contains(opener) && opener.focus) opener.focus();
      opener = null;
    });
    // A click on the backdrop (outside the dialog's box) closes it.
    box.addEventListener("click", function (evt) {
      if (evt.target === box) closeHelp();
    });
    var single = box.querySelector("[data-action=single-key-shortcuts]");
    if (single) {
      single.checked = singleKeyOn();
      single.addEventListener("change", function () {
        try { window.localStorage.setItem(SINGLE_KEY, single.checked ? "on" : "off"); } catch (err) { /* not kept */ }
      });
    }
  }
  document.addEventListener("click", function (evt) {
    var el = evt.target.closest && evt.target.closest("[data-action=shortcuts]");
    if (el) openHelp();
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUp);
  } else {
    setUp();
  }
})();
