// Inside the sandboxed diagram frame (views/diagrams.py): draws the Mermaid source the page
// posts and posts back the SVG, sized to its drawing so the page can show it as an image,
// or the parser's error. One diagram at a time: Mermaid's renderer is not reentrant.
(function () {
  "use strict";
  var parentOrigin = new URL(window.location.href).origin; // the page that frames us
  var queue = Promise.resolve();
  var count = 0;

  function configure(theme) {
    window.mermaid.initialize({
      startOnLoad: false,
      securityLevel: "strict",
      theme: theme === "dark" ? "dark" : "default",
      suppressErrorRendering: true,
      htmlLabels: false, // plain SVG text: an <img> draws it exactly as measured here
      flowchart: { htmlLabels: false }
    });
  }

  // Mermaid's SVG is 100% wide with a max-width style; an image needs its own size (which
  // the page also gives the <img>, so its box is right before the image is decoded).
  function sized(svg) {
    var doc = new DOMParser().parseFromString(svg, "image/svg+xml");
    var root = doc.documentElement;
    var box = (root.getAttribute("viewBox") || "").split(/[\s,]+/).map(Number);
    var size = { svg: svg, width: 0, height: 0 };
    if (box.length === 4 && box[2] > 0 && box[3] > 0) {
      size.width = Math.ceil(box[2]);
      size.height = Math.ceil(box[3]);
      root.setAttribute("width", String(size.width));
      root.setAttribute("height", String(size.height));
      root.style.removeProperty("max-width");
      size.svg = new XMLSerializer().serializeToString(root);
    }
    return size;
  }

  function answer(id, payload) {
    payload.type = "relay-diagram";
    payload.id = id;
    window.parent.postMessage(payload, parentOrigin);
  }

  function draw(job) {
    var name = "relay-diagram-" + (++count);
    configure(job.theme);
    return window.mermaid.parse(job.source).then(function () {
      return window.mermaid.render(name, job.source);
    }).then(function (result) {
      answer(job.id, sized(result.svg));
    }, function (error) {
      var message = error && error.message ? error.message : String(error);
      answer(job.id, { error: message.slice(0, 2000) });
    }).then(function () {
      // Whatever a failed render left behind goes, so the next one starts clean.
      ["d" + name, name].forEach(function (id) {
        var left = document.getElementById(id);
        if (left) left.remove();
      });
    });
  }

  window.addEventListener("message", function (event) {
    if (event.source !== window.parent || event.origin !== parentOrigin) return;
    var job = event.data;
    if (!job || job.type !== "relay-diagram" || typeof job.source !== "string") return;
    queue = queue.then(function () { return draw(job); });
  });
  window.parent.postMessage({ type: "relay-diagram-ready" }, parentOrigin);
}());
