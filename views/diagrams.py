"""GET /diagrams/frame: the sandboxed page that draws ```mermaid diagrams for the page around it.

Diagram source is model output, so Mermaid runs away from the page: in an iframe sandboxed
to scripts only (an opaque origin: no cookies, no storage, no access to the page), with a
policy that lets it load nothing but Relay's own scripts. The page posts it a diagram's
source and gets back the SVG, which it shows as an image (inert), or the error.
"""

from __future__ import annotations

from flask import Blueprint, make_response, render_template

bp = Blueprint("diagrams", __name__)

# Mermaid writes <style> into its SVGs and measures text in this document, hence inline styles;
# it needs nothing else. `sandbox` keeps the frame sandboxed even when opened on its own.
FRAME_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src data:",
    "font-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'self'",
    "sandbox allow-scripts",
])


@bp.get("/diagrams/frame")
def diagram_frame():
    """The diagram renderer, to be framed by Relay's own pages only."""
    response = make_response(render_template("diagram_frame.html"))
    response.headers["Content-Security-Policy"] = FRAME_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response
