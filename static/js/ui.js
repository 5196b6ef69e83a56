// Relay's page chrome: theme, phone drawer, copy buttons, jump to latest, reply status,
// relative times. Small and framework-free; relay.js owns streaming and the composer.
(function () {
  "use strict";

  var root = document.documentElement;

  // -- the page's language: the strings the server translated for the scripts (#i18n) -------
  var catalog = (function () {
    var el = document.getElementById("i18n");
    try { return el ? JSON.parse(el.textContent) : {}; } catch (err) { return {}; }
  })();
  var lang = catalog.lang || root.getAttribute("lang") || "en";
  var pluralRules = null;
  function fill(text, values) {
    return values ? text.replace(/%\((\w+)\)[sd]/g, function (all, name) {
      return Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : all;
    }) : text;
  }
  // relayText("Copy link"), relayText("calling %(name)s…", {name: "calculator"})
  function t(message, values) {
    var strings = catalog.strings || {};
    return fill(Object.prototype.hasOwnProperty.call(strings, message) ? strings[message] : message,
                values);
  }
  // relayPlural("%(num)d selected", "%(num)d selected", 3): the language's form for 3
  function plural(singular, pluralText, n, values) {
    var forms = (catalog.plurals || {})[singular];
    var chosen = n === 1 ? singular : pluralText;
    if (forms) {
      if (!pluralRules && window.Intl && Intl.PluralRules) pluralRules = new Intl.PluralRules(lang);
      chosen = forms[pluralRules ? pluralRules.select(n) : "other"] || forms.other || chosen;
    }
    var all = { num: n };
    for (var key in values || {}) all[key] = values[key];
    return fill(chosen, all);
  }
  // Counts with the language's separators (Latin digits, as the server writes them).
  function number(n, digits) {
    var options = { minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0 };
    try { return n.toLocaleString(lang + "-u-nu-latn", options); } catch (err) { return String(n); }
  }
  window.relayText = t;
  window.relayPlural = plural;
  window.relayNumber = number;
  window.relayLanguage = lang;

  // -- polite announcements (one live region for the whole page) ----------------------------
  var announcer = null;
  function announce(text) {
    if (!announcer) {
      announcer = document.createElement("div");
      announcer.className = "visually-hidden";
      announcer.setAttribute("role", "status");
      document.body.appendChild(announcer);
    }
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 50);
  }
  window.relayAnnounce = announce;  // the other page scripts speak through the same region

  // -- theme: the system's, until the reader picks one (remembered; head.js applies it) -----
  var darkQuery = window.matchMedia("(prefers-color-scheme: dark)");
  function theme() {
    return root.getAttribute("data-theme") || (darkQuery.matches ? "dark" : "light");
  }
  function showTheme() {
    document.querySelectorAll("[data-action=theme]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(theme() === "dark"));
    });
  }
  function toggleTheme() {
    var next = theme() === "dark" ? "light" : "dark";
    root.setAttribute("data-theme", next);
    try { window.localStorage.setItem("relay-theme", next); } catch (err) { /* not kept */ }
    showTheme();
  }
  darkQuery.addEventListener("change", showTheme);

  // -- phone: the sidebar is a drawer -------------------------------------------------------
  var backdrop = null;
  function drawerParts() {
    return { sidebar: document.getElementById("sidebar"),
             toggle: document.querySelector("[data-action=menu]"),
             main: document.getElementById("main") };
  }
  function drawerOpen() {
    var sidebar = document.getElementById("sidebar");
    return !!sidebar && sidebar.classList.contains("is-open");
  }
  function setDrawer(open, restoreFocus) {
    var parts = drawerParts();
    if (!parts.sidebar || !parts.toggle) return;
    if (!backdrop) {
      backdrop = document.createElement("div");
      backdrop.className = "drawer-backdrop";
      backdrop.setAttribute("data-action", "close-drawer");
      document.body.appendChild(backdrop);
    }
    parts.sidebar.classList.toggle("is-open", open);
    parts.toggle.setAttribute("aria-expanded", String(open));
    backdrop.hidden = !open;
    if (parts.main) parts.main.inert = open; // the page behind the drawer is out of reach
    if (open) {
      var first = parts.sidebar.querySelector("a[href], button:not([disabled]), input, select, textarea");
      if (first) first.focus();
    } else if (restoreFocus) {
      parts.toggle.focus();
    }
  }
  // Back to a wide screen: the sidebar is a column again, nothing may stay inert.
  window.matchMedia("(max-width: 720px)").addEventListener("change", function (evt) {
    if (!evt.matches && drawerOpen()) setDrawer(false, false);
  });

  // -- copy ---------------------------------------------------------------------------------
  function messageText(article) {
    var source = article.querySelector("template.message-source");
    if (source) return source.content.textContent; // the reply's markdown, as written
    var body = article.querySelector(".message-body");
    return body ? body.textContent : "";
  }
  function writeClipboard(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) { // plain-http hosts have no Clipboard API
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      var ok = document.execCommand("copy");
      area.remove();
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }
  function copy(button, text) {
    writeClipboard(text).then(function () {
      button.textContent = t("Copied");
      announce(t("Copied"));
      window.clearTimeout(button.relayCopyTimer);
      button.relayCopyTimer = window.setTimeout(function () { button.textContent = t("Copy"); }, 2000);
    }, function () {
      announce(t("Could not copy"));
    });
  }

  // Code blocks come from the server with a head showing their language; the button that
  // copies them is the script's, so it exists only where it works.
  function addCodeButtons(scope) {
    scope.querySelectorAll(".code-block > .code-head").forEach(function (head) {
      if (head.querySelector("[data-action=copy-code]")) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "button copy-button";
      button.setAttribute("data-action", "copy-code");
      var language = head.parentNode.getAttribute("data-language");
      button.setAttribute("aria-label", language ? t("Copy %(language)s code", { language: language })
                                                 : t("Copy code"));
      button.textContent = t("Copy");
      head.appendChild(button);
    });
  }

  // -- times: relative ("5 min ago"), exact on hover, kept current --------------------------
  var DATE = { day: "numeric", month: "short", year: "numeric" };
  function ago(when, now) {
    var seconds = Math.round((now - when) / 1000);
    if (seconds < 45) return t("just now");
    if (seconds < 3600) return plural("%(num)d min ago", "%(num)d min ago", Math.round(seconds / 60));
    if (seconds < 86400) return plural("%(num)d h ago", "%(num)d h ago", Math.round(seconds / 3600));
    if (seconds < 7 * 86400) {
      var days = Math.round(seconds / 86400);
      return days === 1 ? t("yesterday") : plural("%(num)d day ago", "%(num)d days ago", days);
    }
    return when.toLocaleDateString(lang === "en" ? "en-GB" : lang + "-u-nu-latn", DATE);
  }
  function refreshTimes(scope) {
    var now = Date.now();
    scope.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.textContent = ago(when, now);
      el.title = when.toLocaleString(lang === "en" ? undefined : lang + "-u-nu-latn",
                                     { dateStyle: "medium", timeStyle: "short" });
    });
  }

  // -- one status per reply: connecting until its stream opens, then thinking ---------------
  document.addEventListener("htmx:sseOpen", function (evt) {
    var article = evt.target.closest && evt.target.closest("article.message");
    var label = article && article.querySelector(".message-status");
    if (label && article.getAttribute("data-status") === "pending" &&
        label.textContent.trim() === t("connecting")) {
      label.textContent = t("thinking");
    }
  });

  // -- jump to latest -----------------------------------------------------------------------
  var jump = null;
  function awayFromLatest() {
    var doc = document.scrollingElement || document.documentElement;
    return doc.scrollHeight - doc.scrollTop - doc.clientHeight >= 120; // relay.js follows below
  }
  function showJump() {
    if (!jump) return;
    var away = awayFromLatest();
    if (jump.hidden === away) jump.hidden = !away;
  }
  function setUpJump() {
    var list = document.getElementById("messages");
    if (!list) return;
    jump = document.createElement("button");
    jump.type = "button";
    jump.className = "button jump-latest";
    jump.setAttribute("data-action", "jump-latest");
    jump.textContent = t("Jump to latest ↓");
    jump.hidden = true;
    list.parentNode.insertBefore(jump, list.nextSibling);
    window.addEventListener("scroll", showJump, { passive: true });
    window.addEventListener("resize", showJump);
    if (window.ResizeObserver) new ResizeObserver(showJump).observe(list); // text arriving
  }
  function jumpToLatest() {
    // Reaching the bottom is what makes relay.js follow the stream again.
    window.scrollTo(0, document.documentElement.scrollHeight);
    showJump();
    var box = document.querySelector("form#composer textarea");
    if (box && !window.matchMedia("(pointer: coarse)").matches) {
      box.focus({ preventScroll: true });
    } else {
      document.getElementById("main").focus({ preventScroll: true });
    }
  }

  // -- one click handler for every control above --------------------------------------------
  document.addEventListener("click", function (evt) {
    var el = evt.target.closest && evt.target.closest("[data-action]");
    if (!el) return;
    switch (el.getAttribute("data-action")) {
      case "theme": toggleTheme(); break;
      case "menu": setDrawer(!drawerOpen(), true); break;
      case "close-drawer": setDrawer(false, true); break;
      case "jump-latest": jumpToLatest(); break;
      case "copy": {
        var article = el.closest("article.message");
        if (article) copy(el, messageText(article));
        break;
      }
      case "copy-code": {
        var code = el.closest(".code-block").querySelector("pre code");
        if (code) copy(el, code.textContent);
        break;
      }
    }
  });

  document.addEventListener("keydown", function (evt) {
    if (evt.key === "Escape" && drawerOpen()) {
      evt.preventDefault();
      setDrawer(false, true);
    }
  });
  // Tabbing out of the open drawer closes it.
  document.addEventListener("focusin", function (evt) {
    var parts = drawerParts();
    if (drawerOpen() && !parts.sidebar.contains(evt.target) && evt.target !== parts.toggle) {
      setDrawer(false, false);
    }
  });

  // -- the language switcher: a choice applies at once (the page comes back in it) -----------
  document.addEventListener("change", function (evt) {
    var select = evt.target;
    if (select.matches && select.matches("select[data-action=language]") && select.form) {
      select.form.submit();
    }
  });

  // New fragments (swaps, websocket frames) get their buttons and current times.
  document.addEventListener("htmx:load", function (evt) {
    var el = evt.detail.elt;
    if (!el || !el.querySelectorAll) return;
    addCodeButtons(el);
    refreshTimes(el);
  });

  function start() {
    showTheme();
    addCodeButtons(document);
    refreshTimes(document);
    setUpJump();
    showJump();
    window.setInterval(function () { refreshTimes(document); }, 60000);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
