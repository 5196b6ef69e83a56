"""The diagram frame and how pages offer diagrams: a sandboxed renderer that only Relay's
pages may frame, loaded by pages only when they show a diagram."""

from __future__ import annotations

import datetime as dt

import pytest

from models import ABORTED, COMPLETE, INTERRUPTED, STREAMING, Message, StreamDelta, db, utcnow
from views.diagrams import FRAME_POLICY

HTMX = {"HX-Request": "true"}
FENCE = "Here:\n\n```mermaid\ngraph TD\n  A --> B\n"
DIAGRAM = '<div class="code-block diagram" data-language="mermaid">'


def directives(response) -> dict[str, str]:
    csp = response.headers.get("Content-Security-Policy", "")
    return {part.strip().split(" ", 1)[0]: part.strip() for part in csp.split(";")}


def add_reply(app, thread_id: int, status: str, text: str) -> int:
    """A reply in `status`: a finished one keeps its content, a streaming one its deltas."""
    with app.app_context():
        user = Message(thread_id=thread_id, role="user", content="Draw", status=COMPLETE)
        done = status == COMPLETE
        reply = Message(thread_id=thread_id, role="assistant", content=text if done else "",
                        status=status, model="demo",
                        heartbeat_at=None if done else utcnow() + dt.timedelta(hours=1))
        db.session.add_all([user, reply])
        db.session.flush()
        if not done:
            db.session.add(StreamDelta(message_id=reply.id, start=0, end=len(text), text=text))
        db.session.commit()
        return reply.id


def test_the_frame_is_sandboxed_framed_only_by_relay_and_loads_only_mermaid(client):
    answer = client.get("/diagrams/frame")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    policy = directives(answer)
    assert answer.headers["Content-Security-Policy"] == FRAME_POLICY
    assert policy["sandbox"] == "sandbox allow-scripts"
    assert policy["frame-ancestors"] == "frame-ancestors 'self'"
    assert policy["default-src"] == "default-src 'none'"
    assert policy["script-src"] == "script-src 'self'"
    assert "unsafe-eval" not in FRAME_POLICY and "connect-src" not in policy
    assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
    page = answer.get_data(as_text=True)
    assert '<script src="/static/vendor/mermaid/mermaid.min.js" defer></script>' in page
    assert '<script src="/static/js/diagram-frame.js" defer></script>' in page
    assert page.count("<script") == 2


def test_pages_carry_the_small_loader_and_never_mermaid_itself(client, thread_id):
    page = client.get(f"/threads/{thread_id}").get_data(as_text=True)
    assert '<script src="/static/js/diagrams.js" data-frame="/diagrams/frame" defer>' in page
    assert "mermaid.min.js" not in page and "<iframe" not in page


def test_a_streaming_reply_shows_an_open_mermaid_fence_as_code(app, client, thread_id):
    reply_id = add_reply(app, thread_id, STREAMING, FENCE)
    fragment = client.get(f"/messages/{reply_id}", headers=HTMX).get_data(as_text=True)
    assert '<div class="code-block" data-language="mermaid">' in fragment
    assert DIAGRAM not in fragment


def test_a_streaming_reply_whose_fence_closed_shows_the_diagram(app, client, thread_id):
    reply_id = add_reply(app, thread_id, STREAMING, FENCE + "```\n\nAnd then")
    fragment = client.get(f"/messages/{reply_id}", headers=HTMX).get_data(as_text=True)
    assert DIAGRAM in fragment


def test_a_finished_reply_shows_even_an_unclosed_fence_as_the_diagram(app, client, thread_id):
    reply_id = add_reply(app, thread_id, COMPLETE, FENCE)
    page = client.get(f"/threads/{thread_id}").get_data(as_text=True)
    assert f'id="message-{reply_id}"' in page and DIAGRAM in page


@pytest.mark.parametrize("status", [ABORTED, INTERRUPTED])
def test_a_reply_stopped_inside_its_diagram_shows_the_half_it_has_as_code(app, client,
                                                                          thread_id, status):
    add_reply(app, thread_id, COMPLETE, "first")  # the thread's earlier turn
    with app.app_context():
        reply = Message(thread_id=thread_id, role="assistant", content=FENCE, status=status,
                        model="demo")
        db.session.add(reply)
        db.session.commit()
    page = client.get(f"/threads/{thread_id}").get_data(as_text=True)
    assert '<div class="code-block" data-language="mermaid">' in page and DIAGRAM not in page


def test_formulas_are_mathml_in_the_page_and_in_the_french_title_of_an_error(app, client,
                                                                            thread_id):
    add_reply(app, thread_id, COMPLETE, "Area $x^2$ and broken $x^$.")
    page = client.get(f"/threads/{thread_id}", headers={"Accept-Language": "fr"})
    html = page.get_data(as_text=True)
    assert '<math display="inline"><mrow><msup><mi>x</mi><mn>2</mn></msup></mrow></math>' in html
    assert '<code class="math-error" title="Formule non affichée&nbsp;: ' in html
