// Runs in <head>, before the first paint: marks the page as scripted and applies the theme
// the reader picked (no flash of the other theme). Everything else waits for ui.js.
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("js");
  try {
    var theme = window.localStorage.getItem("relay-theme");
    if (theme === "dark" || theme === "light") root.setAttribute("data-theme", theme);
  } catch (err) { /* storage blocked: follow the system */ }
})();
