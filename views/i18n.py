"""The interface's language: picked from a remembered choice (a cookie) or the browser's
Accept-Language, English otherwise; the catalog the page scripts read; the switcher."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from babel import Locale
from flask import Blueprint, Flask, abort, current_app, redirect, request, url_for
from flask_babel import Babel, get_locale, get_translations, gettext
from markupsafe import Markup

bp = Blueprint("i18n", __name__)

DEFAULT_LANGUAGE = "en"
# Code -> the language's own name, as the switcher offers it.
LANGUAGES = {"en": "English", "fr": "Français", "ar": "العربية"}
COOKIE = "relay_lang"
COOKIE_MAX_AGE_S = 365 * 86400
TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"

babel = Babel()


def init_i18n(app: Flask) -> None:
    """Bind Flask-Babel (catalogs in translations/) and give templates the language."""
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LANGUAGE)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    babel.init_app(app, locale_selector=select_language)
    # {% trans %} blocks may be wrapped over lines: their whitespace is collapsed.
    app.jinja_env.policies["ext.i18n.trimmed"] = True
    app.context_processor(lambda: {"language": language(), "text_direction": direction(),
                                   "languages": LANGUAGES, "js_catalog": js_catalog})
    app.add_template_filter(shown_title, "shown_title")
    app.add_template_filter(model_label, "model_label")
    app.after_request(_vary_by_language)
    app.register_blueprint(bp)


def _vary_by_language(response):
    """A page depends on the browser's languages and the remembered choice: caches must
    not hand one reader's language to another."""
    if response.mimetype == "text/html":
        response.vary.add("Accept-Language")
        response.vary.add("Cookie")
    return response


def N_(text: str) -> str:
    """Marks a string for the catalog (pybabel extract) that is translated later."""
    return text


def Nn_(singular: str, plural: str) -> tuple[str, str]:
    """Marks a plural message for the catalog that is translated later."""
    return singular, plural


# Model labels that are Relay's own words (other labels are names, shown as they are).
MODEL_LABELS = (N_("Demo model (offline)"),)


def model_label(label: str) -> str:
    """A model's label as the picker and the sidebar show it."""
    return gettext(label) if label in MODEL_LABELS else label


def shown_title(thread) -> str:
    """A thread's title as shown: the default one ("New thread") in the reader's language,
    a title that was chosen or made from a prompt as it is."""
    from models import DEFAULT_TITLE

    if thread.title == DEFAULT_TITLE and not thread.title_chosen:
        return gettext("New thread")
    return thread.title


def select_language() -> str:
    """The cookie's language if it is one we have, else the browser's best, else English.

    Outside a request (a frame rendered for many followers is rendered under
    `force_locale`) the default."""
    if not request:
        return DEFAULT_LANGUAGE
    chosen = request.cookies.get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(list(LANGUAGES), default=DEFAULT_LANGUAGE)


def language() -> str:
    """The language code of what is being rendered now."""
    locale = get_locale()
    return locale.language if locale is not None else DEFAULT_LANGUAGE


def direction() -> str:
    """"rtl" for a right-to-left language, else "ltr"."""
    return "rtl" if Locale.parse(language()).character_order == "right-to-left" else "ltr"


# The strings the page scripts show, translated once per page (static/js/ui.js: relayText).
JS_STRINGS = (
    N_("Copy"),
    N_("Copied"),
    N_("Could not copy"),
    N_("Copy code"),
    N_("Copy %(language)s code"),
    N_("Show source"),
    N_("Hide source"),
    N_("Diagram"),
    N_("Diagram error"),
    N_("Copy link"),
    N_("Jump to latest ↓"),
    N_("just now"),
    N_("yesterday"),
    N_("Send"),
    N_("Stop"),
    N_("Stop the reply (Escape)"),
    N_("Queue"),
    N_("Send when the reply ends"),
    N_("Polling"),
    N_("Connecting…"),
    N_("Live"),
    N_("Model ready"),
    N_("Model unavailable: %(reason)s"),
    N_("Model status unknown"),
    N_("Compare"),
    N_("%(count)s characters over the limit of %(max)s"),
    N_("%(count)s / %(max)s characters"),
    N_("The message is %(count)s characters long; the limit is %(max)s. Shorten it and send "
       "again."),
    N_("Ask anything. Enter adds a line; the Send button sends."),
    N_("None selected"),
    N_("Save"),
    N_("Cancel"),
    N_("Edit your prompt"),
    N_("connecting"),
    N_("thinking"),
    N_("writing"),
    N_("calling %(name)s…"),
    N_("Thought for %(seconds)s s"),
    N_("failed"),
    N_("stopped"),
    N_("Reply finished."),
    N_("Reply stopped."),
    N_("Reply failed."),
    N_("Reply interrupted."),
    N_("Request failed (HTTP %(status)s)."),
    N_("There is no message box on this page"),
    N_("No reply is being written"),
    N_("There is no reply to copy yet"),
    N_("Sidebar shown"),
    N_("Sidebar hidden"),
    N_("Search is not available on this page"),
    N_("Command"),
    N_("%(size)s KB"),
    N_("%(size)s MB"),
    N_("Uploading…"),
    N_("Remove %(name)s"),
    N_("A message can carry at most %(count)s files."),
    N_("Could not upload %(name)s."),
    N_("Uses ~%(used)s of %(context)s tokens"),
    N_("Too much for the model: ~%(used)s of %(context)s tokens. Remove a file or shorten "
       "the message."),
    N_("%(model)s cannot read images; pick a model that can, or remove the images."),
    N_("Wait for the files to finish uploading, then send."),
)
# Plural messages: (singular, plural); the page picks the form with Intl.PluralRules.
JS_PLURALS = (
    Nn_("%(num)d min ago",
        "%(num)d min ago"),
    Nn_("%(num)d h ago",
        "%(num)d h ago"),
    Nn_("%(num)d day ago",
        "%(num)d days ago"),
    Nn_("Compare: %(num)d model",
        "Compare: %(num)d models"),
    Nn_("%(num)d selected",
        "%(num)d selected"),
    Nn_("Delete %(num)d thread and all its messages? This cannot be undone.",
        "Delete %(num)d threads and all their messages? This cannot be undone."),
)


def js_catalog() -> Markup:
    """The page scripts' strings in this language, as JSON safe inside <script>.

    Plurals map each CLDR plural category of the language (what Intl.PluralRules
    answers) to its form. Made once per language and process (catalogs do not change)."""
    made = current_app.extensions.setdefault("relay_js_catalogs", {})
    code = language()
    if code not in made:
        made[code] = _make_js_catalog()
    return made[code]


def _make_js_catalog() -> Markup:
    translations = get_translations()
    locale = get_locale() or Locale.parse(DEFAULT_LANGUAGE)
    strings = {text: translations.gettext(text) for text in JS_STRINGS}
    plurals = {}
    for singular, plural in JS_PLURALS:
        forms: dict[str, str] = {}
        for n in range(0, 112):  # covers an example of every category in every language
            forms.setdefault(locale.plural_form(n), translations.ngettext(singular, plural, n))
        plurals[singular] = forms
    text = json.dumps({"lang": language(), "strings": strings, "plurals": plurals},
                      ensure_ascii=False)
    # Inside <script>, "</" and "<!--" must not appear; JSON allows the escapes.
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


@bp.post("/language")
def language_set():
    """Remember the language picked in the switcher (a cookie) and go back to the page."""
    code = request.form.get("lang", "")
    if code not in LANGUAGES:
        abort(400, description=f"Pick one of the languages offered: {', '.join(LANGUAGES)}.")
    response = redirect(_back(request.form.get("next")), code=303)
    response.set_cookie(COOKIE, code, max_age=COOKIE_MAX_AGE_S, samesite="Lax",
                        httponly=True, secure=request.is_secure)
    return response


def _back(target: str | None) -> str:
    """Where the switcher returns: a path on this site, never another origin."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and \
                not target.startswith("//") and "\\" not in target:
            return target
    return url_for("pages.thread_index")

