"""Attachments under gunicorn + gevent, sent to real model APIs' fakes by the real `openai`
and `anthropic` clients: images as each API's image parts, documents as text before the
prompt, and the fakes refuse parts that are not well formed."""

from __future__ import annotations

import base64
import http.client
import io
import json

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reply
from tests.conftest import ANTHROPIC_KEY, ScriptedUpstream

from .files import pdf, png

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(server_factory, claude):
    return server_factory(
        CHAT_MODELS="openai:gpt-4o;vision,anthropic:claude-fake=Claude Fake,"
                    "openai:text-only;no-vision;context=2000",
        ANTHROPIC_BASE_URL=claude.url, ANTHROPIC_API_KEY=ANTHROPIC_KEY)


@pytest.fixture
def browser(server) -> RelayClient:
    return RelayClient(server.base_url).open()


def uploaded(browser: RelayClient, name: str, data: bytes) -> dict:
    answer = browser.upload(name, data)
    assert answer.status == 201, answer.text
    return answer.json()


def ask(browser: RelayClient, prompt: str, files: list[dict], model: str) -> dict:
    thread = browser.new_thread()
    answer = browser.post_json(f"/threads/{thread}/messages", {
        "content": prompt, "model": model, "attachments": [f["id"] for f in files]})
    assert answer.status == 201, answer.text
    return answer.json()


def finished(browser: RelayClient, turn: dict) -> str:
    text, event, _ = read_reply(browser.stream(turn["stream_url"]))
    assert event == "done", event
    return text


def the_request(fake: ScriptedUpstream, prompt: str) -> dict:
    [record] = fake.records_for(prompt)
    assert record.status == 200, record.problem
    return record.body


def test_openai_gets_an_image_url_part_and_the_documents_text_before_the_prompt(
        browser, upstream):
    image = png(64, 48)
    files = [uploaded(browser, "chart.png", image),
             uploaded(browser, "minutes.pdf", pdf("Budget approved for 2027"))]
    prompt = upstream.script(Reply.words("A chart and minutes."))
    turn = ask(browser, prompt, files, "gpt-4o")
    assert finished(browser, turn) == "A chart and minutes."
    body = the_request(upstream, prompt)
    user = body["messages"][-1]
    assert user["role"] == "user"
    [picture, document, text] = user["content"]
    assert text == {"type": "text", "text": prompt}
    assert document["type"] == "text"
    assert document["text"].startswith("File: minutes.pdf\n\n")
    assert "Budget approved for 2027" in document["text"]
    assert picture["type"] == "image_url"
    url = picture["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = base64.b64decode(url.split(",", 1)[1])
    assert sent == browser.request("GET", f"/uploads/{files[0]['id']}").body
    from PIL import Image

    assert Image.open(io.BytesIO(sent)).size == (64, 48)


def test_anthropic_gets_an_image_block_with_a_base64_source(browser, claude):
    files = [uploaded(browser, "notes.txt", b"Line one\nLine two\n"),
             uploaded(browser, "photo.webp", _webp())]
    prompt = claude.script(Reply.words("Seen."))
    turn = ask(browser, prompt, files, "claude-fake")
    assert finished(browser, turn) == "Seen."
    body = the_request(claude, prompt)
    user = body["messages"][-1]
    [document, picture, text] = user["content"]
    assert document == {"type": "text", "text": "File: notes.txt\n\nLine one\nLine two\n"}
    assert picture["type"] == "image"
    assert picture["source"]["type"] == "base64"
    assert picture["source"]["media_type"] == "image/webp"
    assert base64.b64decode(picture["source"]["data"])[8:12] == b"WEBP"
    assert text == {"type": "text", "text": prompt}


def test_a_later_turn_and_a_regeneration_still_send_the_files(browser, upstream):
    files = [uploaded(browser, "a.png", png(5, 5, color=(0, 0, 255)))]
    first = upstream.script(Reply.words("Blue."))
    turn = ask(browser, first, files, "gpt-4o")
    finished(browser, turn)
    thread = turn["user_message"]["thread_id"]
    again = browser.post_json(f"/messages/{turn['assistant_message']['id']}/regenerate")
    assert again.status == 201, again.text
    finished(browser, again.json())
    regenerated = upstream.records_for(first)[-1].body["messages"][-1]["content"]
    assert [p["type"] for p in regenerated] == ["image_url", "text"]
    follow_up = upstream.script(Reply.words("Still blue."))
    answer = browser.post_json(f"/threads/{thread}/messages", {"content": follow_up})
    finished(browser, answer.json())
    history = the_request(upstream, follow_up)["messages"]
    earlier = next(m for m in history if m["role"] == "user" and isinstance(m["content"], list))
    assert earlier["content"][0]["type"] == "image_url"


def test_a_model_without_vision_is_refused_images_before_anything_is_sent(browser, upstream):
    before = len(upstream.requests)
    thread = browser.new_thread()
    image = uploaded(browser, "x.png", png())
    answer = browser.post_json(f"/threads/{thread}/messages", {
        "content": "look", "model": "text-only", "attachments": [image["id"]]})
    assert answer.status == 400 and "cannot read images" in answer.json()["message"]
    big = uploaded(browser, "big.txt", b"word " * 2000)
    answer = browser.post_json(f"/threads/{thread}/messages", {
        "content": "read", "model": "text-only", "attachments": [big["id"]]})
    assert answer.status == 413 and "2,000" in answer.json()["message"]
    assert len(upstream.requests) == before


def test_the_fakes_refuse_malformed_parts(upstream, claude):
    import anthropic
    import openai

    bad_openai = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz4="}}]}]
    client = openai.OpenAI(base_url=upstream.url, api_key="sk-test", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="image data URL"):
        client.chat.completions.create(model="m", messages=bad_openai)
    bad_claude = [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "not base64!"}}]}]
    client = anthropic.Anthropic(base_url=claude.url, api_key=ANTHROPIC_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="base64"):
        client.messages.create(model="m", max_tokens=10, messages=bad_claude)


def test_upload_limits_over_http(browser):
    assert browser.upload("virus.png", b"MZ\x90\x00not an image").status == 415
    assert browser.upload("empty.txt", b"").status == 400
    answer = browser.upload("x.svg", b"<svg><script>alert(1)</script></svg>")
    assert answer.status == 415 and "SVG" in answer.json()["message"]
    # Over UPLOAD_MAX_MB (20 by default): refused on its Content-Length, before the body.
    connection = http.client.HTTPConnection(browser.base_url.split("//")[1], timeout=10)
    connection.putrequest("POST", "/uploads")
    for name, value in (("Content-Type", "multipart/form-data; boundary=x"),
                        ("Content-Length", str(21 * 1024 * 1024)),
                        ("Accept", "application/json"), ("X-CSRF-Token", browser.csrf),
                        ("Cookie", browser.cookie_header())):
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert "20 MB" in json.loads(response.read())["message"]
    connection.close()


def _webp() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (12, 9), (0, 200, 0)).save(out, "WEBP")
    return out.getvalue()


def test_on_postgresql_two_hosts_see_the_same_files_stored_once(server_factory, postgres_url):
    """Files live in the database: a second host (another Relay on the same PostgreSQL)
    serves them, and the same bytes sent twice, at once, are one blob."""
    import threading

    first = server_factory(postgres_url)
    second = server_factory(postgres_url)
    browser = RelayClient(first.base_url).open()
    data = png(33, 22, color=(5, 6, 7))
    answers: list = []
    racers = [threading.Thread(target=lambda: answers.append(browser.upload("same.png", data)))
              for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert [a.status for a in answers] == [201] * 4, [a.text for a in answers]
    ids = [a.json()["id"] for a in answers]
    # The other host knows this browser by its session cookie.
    served = RelayClient(second.base_url).request(
        "GET", f"/uploads/{ids[0]}", headers={"Cookie": browser.cookie_header()})
    assert served.status == 200 and served.body == browser.request(
        "GET", f"/uploads/{ids[1]}").body
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM uploads").fetchone()[0] == 4
