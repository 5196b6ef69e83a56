"""The interface's languages: picked from the browser or the switcher, complete catalogs,
localised times and numbers; the API's JSON stays as it was."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from flask_babel import force_locale, ngettext

from tests.conftest import JSON, csrf_of, new_thread, send
from views.i18n import JS_PLURALS, JS_STRINGS, LANGUAGES
from views.timefmt import long_date, number, time_ago
from views.usage import usd

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [code for code in LANGUAGES if code != "en"]
# The same keywords as `make messages`.
KEYWORDS = ["-k", "_l", "-k", "Nn_:1,2"]


def html_tag(page: str) -> str:
    return re.search(r"<html[^>]*>", page).group(0)


def catalog_of(page: str) -> dict:
    raw = re.search(r'<script type="application/json" id="i18n">(.*?)</script>', page, re.S)
    return json.loads(raw.group(1))


@pytest.mark.parametrize("header", [None, "en-US,en;q=0.9", "de-DE,de;q=0.9", "xx", "*"])
def test_the_interface_is_english_when_the_browser_asks_for_english_or_nothing_we_have(
        client, header):
    page = client.get("/", headers={"Accept-Language": header} if header else {}).text
    assert 'lang="en"' in html_tag(page) and 'dir="ltr"' in html_tag(page)
    assert "New thread" in page and ">Send<" in page


def test_pages_tell_caches_they_vary_by_language(client):
    response = client.get("/")
    assert {"Accept-Language", "Cookie"} <= set(response.vary)


@pytest.mark.parametrize("header, lang, direction, words", [
    ("fr-FR,fr;q=0.9,en;q=0.5", "fr", "ltr", "Nouveau fil"),
    ("ar-EG", "ar", "rtl", "محادثة جديدة"),
    ("de;q=0.9, ar;q=0.8, en;q=0.1", "ar", "rtl", "إرسال"),
])
def test_the_language_follows_the_browsers_accept_language(client, header, lang, direction,
                                                           words):
    page = client.get("/", headers={"Accept-Language": header}).text
    assert f'lang="{lang}"' in html_tag(page) and f'dir="{direction}"' in html_tag(page)
    assert words in page
    assert "New thread" not in page and "Demo model (offline)" not in page


def test_the_switcher_remembers_a_language_over_the_browsers(client):
    token = csrf_of(client)
    response = client.post("/language", data={"lang": "ar", "next": "/search?q=x",
                                               "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"] == "/search?q=x"
    cookie = response.headers["Set-Cookie"]
    assert "relay_lang=ar" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/", headers={"Accept-Language": "fr"}).text
    assert 'dir="rtl"' in html_tag(page)
    assert '<option value="ar" lang="ar" selected>العربية</option>' in page
    # And back to English, whatever the browser says.
    client.post("/language", data={"lang": "en", "csrf_token": token})
    assert 'lang="en"' in html_tag(client.get("/", headers={"Accept-Language": "ar"}).text)


def test_the_switcher_works_without_javascript_and_never_leaves_the_site(client):
    page = client.get("/").text
    form = re.search(r'<form class="language-form".*?</form>', page, re.S).group(0)
    assert 'method="post" action="/language"' in form and 'name="csrf_token"' in form
    assert 'type="submit"' in form  # shown when there is no script to apply the choice
    token = csrf_of(client)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "", "x"):
        response = client.post("/language", data={"lang": "fr", "next": target,
                                                   "csrf_token": token})
        assert response.status_code == 303 and response.headers["Location"] == "/"


def test_the_switcher_refuses_an_unknown_language_or_a_missing_token(client):
    token = csrf_of(client)
    response = client.post("/language", data={"lang": "xx", "csrf_token": token})
    assert response.status_code == 400 and "Pick one of the languages" in response.text
    assert "relay_lang" not in response.headers.get("Set-Cookie", "")
    assert client.post("/language", data={"lang": "fr"}).status_code == 403


def test_a_language_cookie_we_do_not_have_falls_back_to_the_browser(client):
    client.set_cookie("relay_lang", "<script>")
    page = client.get("/", headers={"Accept-Language": "fr"}).text
    assert 'lang="fr"' in html_tag(page)


def test_the_api_json_is_unchanged_whatever_the_language(client):
    token = csrf_of(client)
    thread_id = new_thread(client, token)
    response = client.post(f"/threads/{thread_id}/messages", json={"content": ""},
                           headers={"X-CSRF-Token": token, "Accept-Language": "fr", **JSON})
    assert response.status_code == 400
    assert response.json["message"] == "Write a message first: 'content' is empty."
    body = send(client, token, thread_id)
    shown = client.get(f"/messages/{body['assistant_message']['id']}",
                       headers={"Accept-Language": "ar", **JSON}).json
    assert shown["role"] == "assistant" and shown["status"] in (
        "pending", "streaming", "complete")


def test_error_pages_and_fragments_speak_the_readers_language(client):
    page = client.get("/threads/999999", headers={"Accept-Language": "fr"})
    assert page.status_code == 404 and "Page introuvable" in page.text
    token = csrf_of(client)
    thread_id = new_thread(client, token)
    fragment = client.post(f"/threads/{thread_id}/messages", data={"content": " "},
                           headers={"X-CSRF-Token": token, "HX-Request": "true",
                                    "Accept-Language": "fr"})
    assert fragment.status_code == 400
    assert "Écrivez d’abord un message" in fragment.text


def test_the_page_carries_its_scripts_strings_in_its_language(client):
    english = catalog_of(client.get("/").text)
    assert english["lang"] == "en" and english["strings"]["Stop"] == "Stop"
    arabic = catalog_of(client.get("/", headers={"Accept-Language": "ar"}).text)
    assert arabic["lang"] == "ar"
    assert set(arabic["strings"]) == set(JS_STRINGS)
    assert all(arabic["strings"][text] != text for text in ("Stop", "Copy", "Send"))
    # Every CLDR category of Arabic, each with its own form, for what the page counts.
    minutes = arabic["plurals"]["%(num)d min ago"]
    assert set(minutes) == {"zero", "one", "two", "few", "many", "other"}
    assert minutes["two"] == "منذ دقيقتين" and minutes["few"] == "منذ %(num)d دقائق"
    assert set(arabic["plurals"]) == {singular for singular, _ in JS_PLURALS}


def test_the_scripts_catalog_cannot_end_its_script_element(app):
    from views.i18n import js_catalog

    with app.test_request_context("/", headers={"Accept-Language": "fr"}):
        text = str(js_catalog())
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["strings"]["Jump to latest ↓"] == "Aller au plus récent ↓"


def test_relative_times_are_said_in_the_readers_language(app):
    now = dt.datetime(2026, 5, 10, 12, 0, 0)
    with app.test_request_context("/"):
        with force_locale("fr"):
            assert time_ago(now - dt.timedelta(seconds=10), now) == "à l’instant"
            assert time_ago(now - dt.timedelta(minutes=5), now) == "il y a 5 min"
            assert time_ago(now - dt.timedelta(days=1), now) == "hier"
            assert time_ago(now - dt.timedelta(days=4), now) == "il y a 4 jours"
            assert time_ago(now - dt.timedelta(days=40), now) == "31 mars 2026"
        with force_locale("ar"):
            assert time_ago(now - dt.timedelta(hours=1), now) == "منذ ساعة"
            assert time_ago(now - dt.timedelta(days=2), now) == "منذ يومين"
            assert time_ago(now - dt.timedelta(days=5), now) == "منذ 5 أيام"
            assert time_ago(now - dt.timedelta(minutes=11), now) == "منذ 11 دقيقة"
            assert long_date(now) == "10 مايو 2026"
        with force_locale("en"):
            assert time_ago(now - dt.timedelta(minutes=5), now) == "5 min ago"
            assert long_date(now) == "10 May 2026"


def test_numbers_and_costs_use_the_readers_separators(app):
    with app.test_request_context("/"):
        with force_locale("en"):
            assert number(1234567) == "1,234,567" and number(1.25, 1) == "1.2"
            assert usd(1234.5) == "$1,234.50"
        with force_locale("fr"):
            assert number(1234567) == "1\u202f234\u202f567" and number(1.5, 1) == "1,5"
            assert usd(1234.5) == "1\u202f234,50\u00a0$US"
            assert usd(0.0061234) == "0,00612\u00a0$US"
            # French says "1 jeton", "2 jetons", but "1 000 000 de jetons".
            assert [ngettext("%(num)s token", "%(num)s tokens", n) for n in (1, 2, 10**6)] == [
                "1 jeton", "2 jetons", "1000000 de jetons"]
        with force_locale("ar"):
            assert number(1234567) == "1,234,567"


def test_the_thread_cost_and_usage_tables_use_the_readers_numbers(client):
    token = csrf_of(client)
    thread_id = new_thread(client, token)
    body = send(client, token, thread_id)
    client.get(body["stream_url"]).get_data()  # the whole reply, to its end
    page = client.get("/usage", headers={"Accept-Language": "fr"}).text
    assert "Jetons en entrée" in page and "<h1>Consommation</h1>" in page
    thread = client.get(f"/threads/{thread_id}", headers={"Accept-Language": "fr"}).text
    assert re.search(r"Fil\u00a0: ~?\d+ jetons", thread)
    assert re.search(r"\d+ jetons", thread) and "Régénérer" in thread


def _extracted(tmp_path) -> list:
    pot = tmp_path / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "-q", "extract",
                    "-F", "babel.cfg", *KEYWORDS, "-o", str(pot), "."], cwd=ROOT, check=True)
    with pot.open("rb") as f:
        return [m for m in read_po(f) if m.id]


@pytest.mark.parametrize("lang", SHIPPED)
def test_every_string_of_the_interface_is_translated_in_each_shipped_language(tmp_path, lang):
    """Fails when a template or view gains a string the catalog lacks, or a translation is
    empty, fuzzy or breaks its placeholders (run `make messages`, then translate)."""
    messages = _extracted(tmp_path)
    assert len(messages) > 200  # the extraction really read the templates
    with (ROOT / "translations" / lang / "LC_MESSAGES" / "messages.po").open("rb") as f:
        catalog = read_po(f, locale=lang)
    problems = []
    for message in messages:
        entry = catalog.get(message.id)
        strings = [] if entry is None else \
            list(entry.string) if isinstance(entry.string, tuple) else [entry.string]
        if entry is None or not all(strings):
            problems.append(f"untranslated: {message.id!r}")
        elif entry.fuzzy:
            problems.append(f"fuzzy: {message.id!r}")
        elif isinstance(message.id, tuple) and len(strings) != catalog.num_plurals:
            problems.append(f"{len(strings)} plural forms of {catalog.num_plurals}: "
                            f"{message.id!r}")
    for entry, errors in catalog.check():
        problems += [f"{entry.id!r}: {error}" for error in errors]
    assert not problems, "\n".join(problems)


def test_the_sources_language_has_no_catalog_and_each_catalog_compiles(tmp_path):
    assert not (ROOT / "translations" / "en").exists()  # English is the source text itself
    for lang in SHIPPED:
        out = tmp_path / f"{lang}.mo"
        subprocess.run([sys.executable, "-m", "babel.messages.frontend", "-q", "compile",
                        "-i", str(ROOT / "translations" / lang / "LC_MESSAGES" / "messages.po"),
                        "-o", str(out)], check=True)
        assert out.stat().st_size > 1000


def test_websocket_frames_are_rendered_once_per_language_and_each_follower_gets_its_own(app):
    import gevent

    from streaming.hub import InProcessHub
    from views.feeds import FollowerFeeds
    from views.fragments import STATUS_LABELS

    hub = InProcessHub()
    renders = []

    def render(thread_id, events, readonly):
        renders.append(readonly)
        return str(STATUS_LABELS["complete"])

    feeds = FollowerFeeds(app, hub, render, queue_frames=4)
    environ = {"wsgi.url_scheme": "http", "HTTP_HOST": "relay.test"}
    with feeds.follow(1, False, environ, "ar") as arabic, \
            feeds.follow(1, False, environ, "ar") as arabic_too, \
            feeds.follow(1, False, environ, "fr") as french, \
            feeds.follow(1, False, environ) as english:
        hub.publish("thread:1", {"type": "persisted", "message": 1, "end": 3})
        frames = {}
        for _ in range(200):
            gevent.sleep(0.01)
            for name, follower in (("ar", arabic), ("ar2", arabic_too), ("fr", french),
                                   ("en", english)):
                frame = follower.next_frame(0)
                if frame is not None:
                    frames[name] = frame
            if len(frames) == 4:
                break
    assert frames == {"ar": "اكتمل", "ar2": "اكتمل", "fr": "terminé", "en": "done"}
    assert len(renders) == 3  # once per language, not once per follower


def test_a_threads_default_title_is_shown_in_the_readers_language_but_stored_as_is(client):
    token = csrf_of(client)
    thread_id = new_thread(client, token)
    page = client.get(f"/threads/{thread_id}", headers={"Accept-Language": "fr"}).text
    assert '<h1 id="thread-title">Nouveau fil</h1>' in page
    assert "<title>Nouveau fil · Relay</title>" in page
    stored = client.get(f"/threads/{thread_id}", headers=JSON).json
    assert stored["thread"]["title"] == "New thread"


def test_werkzeugs_own_error_texts_are_the_ones_the_catalog_translates():
    from werkzeug.exceptions import MethodNotAllowed, NotFound

    from views import WERKZEUG_DESCRIPTIONS

    assert set(WERKZEUG_DESCRIPTIONS) == {NotFound.description, MethodNotAllowed.description}
