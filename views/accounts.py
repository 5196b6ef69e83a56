"""Accounts (AUTH_MODE=accounts): sign up, sign in, sign out, change the password, keep a
browser's anonymous threads.

Signing in (or up) starts a new session: new contents, a new CSRF token and a new session
row, the previous row removed, so an earlier copy of the cookie signs nobody in. Sign-in
attempts are limited per account name and per address.
"""

from __future__ import annotations

import secrets

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext
from werkzeug.exceptions import HTTPException

from models import db
from models.accounts import (
    InviteInvalid,
    NameTaken,
    User,
    claim_threads,
    close_all_sessions,
    close_session,
    create_user,
    find_user,
    invite_is_valid,
    name_key,
    open_session,
    password_problem,
    thread_count,
    username_problem,
)

from . import is_htmx, wants_json
from .i18n import N_
from .identity import auth_mode
from .limits import limiter

bp = Blueprint("accounts", __name__)

TOO_MANY = "Too many attempts; wait a little, then try again."
WRONG = N_("Wrong user name or password.")


# A form that failed is shown again with what went wrong (JSON and htmx get the message).
FORM_TEMPLATES = {"accounts.signin": "signin.html", "accounts.signup": "signup.html",
                  "accounts.password_change": "account.html"}


@bp.errorhandler(HTTPException)
def _form_again(err: HTTPException):
    """A failed sign-in, sign-up or password change from a page: the form again, with the
    reason and the status; anything else is the app's usual error answer."""
    from . import _http_error

    template = FORM_TEMPLATES.get(request.endpoint or "")
    if template is None or err.code is None or wants_json() or is_htmx() or \
            auth_mode() != "accounts" or err.code == 404:
        return _http_error(err) if err.code is not None else err
    response = current_app.make_response((render_template(
        template, **_form_context(), error=gettext(err.description or err.name)), err.code))
    for key, value in err.get_headers():
        if key.lower() not in ("content-type", "content-length"):
            response.headers[key] = value
    return response


def _sent(name: str) -> str:
    """A form or query field as sent, for showing again; "" when there is none or the body
    could not be read (it is the error being shown)."""
    try:
        value = request.values.get(name)
    except HTTPException:
        return ""
    return value if isinstance(value, str) else ""


def _form_context() -> dict:
    """What the account pages show besides an error."""
    return {"next": _safe_next(), "signup": current_app.config["SIGNUP"],
            "username": _sent("username"), "invite": _sent("invite"),
            "invite_ok": True, "min_chars": current_app.config["PASSWORD_MIN_CHARS"],
            "user": g.get("user"), "claimable": claim_offer() if g.get("user") else 0,
            "local": auth_mode() == "accounts", "done": None}


def passwords():
    return current_app.extensions["relay_passwords"]


def _signin_limit() -> str:
    return current_app.config["SIGNIN_RATE_LIMIT"]


def _address_limit() -> str:
    return current_app.config["SIGNIN_ADDRESS_RATE_LIMIT"]


def _account_key() -> str:
    """The account an attempt is about: the name typed (any case); for a password change,
    the signed-in user's."""
    user = g.get("user")
    if request.endpoint == "accounts.password_change" and user is not None:
        return f"account:{user.name_key}"
    try:
        name = _field("username", required=False)
    except HTTPException:  # not text: the view says so (the attempt still counts)
        name = None
    return f"account:{name_key(name)[:64]}" if name else "account:"


def _address_key() -> str:
    return f"address:{request.remote_addr or 'unknown'}"


def limited(view):
    """Every attempt counts, per account and per address (a burst cannot slip through)."""
    view = limiter.limit(_signin_limit, key_func=_account_key, error_message=TOO_MANY)(view)
    return limiter.limit(_address_limit, key_func=_address_key, error_message=TOO_MANY)(view)


def _field(name: str, *, required: bool = True) -> str | None:
    """A text field from the form or JSON body, exactly as sent; a 400 when it is not text."""
    if request.is_json:
        body = request.get_json(silent=True)
        value = body.get(name) if isinstance(body, dict) else None
    else:
        value = request.form.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or value == "":
        abort(400, description=f"'{name}' is missing.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800")
        abort(400, description=f"'{name}' is not valid Unicode text.")
    return value


def _need_accounts() -> None:
    if auth_mode() != "accounts":
        abort(404, description="Relay has no local accounts here (AUTH_MODE is "
                               f"{auth_mode()}).")


def _safe_next() -> str:
    """Where to go after signing in: a path on this site, else the home page."""
    target = _sent("next") or "/"
    if not target.startswith("/") or target.startswith("//") or "\\" in target or \
            any(ord(c) < 32 for c in target) or target.startswith(("/signin", "/signup")):
        return "/"  # off the site, or back to a form that sends a signed-in browser on
    return target


def _start_session(user: User) -> None:
    """A fresh session for `user`: what the browser had before is gone, except which
    anonymous threads it may keep."""
    anonymous = session.get("owner") or session.get("claim")
    old = session.get("sid")
    if isinstance(old, str):
        close_session(db.session, old)
    shares = session.get("shares")
    session.clear()
    session["sid"] = open_session(db.session, user)
    session["csrf"] = secrets.token_urlsafe(32)
    if anonymous and not anonymous.startswith("user:"):
        session["claim"] = anonymous
    if shares:
        session["shares"] = shares
    session.permanent = True
    g.user, g.owner = user, user.owner


def _signed_in(user: User, status: int = 200):
    if wants_json():
        return jsonify(user=user.to_json()), status
    target = _safe_next()
    if is_htmx():
        return "", 204, {"HX-Redirect": target}
    return redirect(target, code=303)


@bp.get("/signin")
def signin_form():
    """The sign-in page."""
    _need_accounts()
    if g.user is not None:
        return redirect(_safe_next())
    return render_template("signin.html", **_form_context())


@bp.post("/signin")
@limited
def signin():
    """Sign in with `username` and `password`: 303 to `/` (JSON: 200 {user}); 401 when
    either is wrong, 429 after too many attempts."""
    _need_accounts()
    username, password = _field("username"), _field("password")
    user = find_user(db.session, username)
    # The same work whether or not the name exists: a wrong name looks like a wrong password.
    stored = user.password_hash if user is not None else None
    if not passwords().verify(stored, password):
        abort(401, description=WRONG)
    if user.disabled:
        abort(403, description=N_("This account is disabled."))
    if passwords().needs_rehash(stored):
        user.password_hash = passwords().hash(password)
    _start_session(user)
    return _signed_in(user)


@bp.get("/signup")
def signup_form():
    """The sign-up page (an invite code from the link when sign-up is by invitation)."""
    _need_accounts()
    invite = request.args.get("invite", "")
    return render_template("signup.html", **{
        **_form_context(), "invite": invite,
        "invite_ok": bool(invite) and invite_is_valid(db.session, invite)})


@bp.post("/signup")
@limited
def signup():
    """Make an account and sign in to it: 303 to `/` (JSON: 200 {user}); 403 when sign-up
    is closed or the invite is not valid, 409 when the name is taken."""
    _need_accounts()
    mode = current_app.config["SIGNUP"]
    if mode == "off":
        abort(403, description=N_("Sign-up is closed here; ask the administrator for an account."))
    username, password = _field("username"), _field("password")
    invite = _field("invite", required=False) if mode == "invite" else None
    if mode == "invite" and not invite:
        abort(403, description=N_("Sign-up is by invitation: open the invite link you were sent."))
    problem = username_problem(username) or password_problem(
        password, current_app.config["PASSWORD_MIN_CHARS"])
    if problem:
        abort(400, description=problem)
    if find_user(db.session, username) is not None:
        abort(409, description=N_("That user name is taken; pick another."))
    try:
        user = create_user(db.session, username, passwords().hash(password), invite=invite)
    except NameTaken:
        abort(409, description=N_("That user name is taken; pick another."))
    except InviteInvalid:
        abort(403, description=N_("This invite is not valid: it was used, or it expired."))
    _start_session(user)
    return _signed_in(user)


@bp.post("/signout")
def signout():
    """Sign this browser out (its session ends on the server too): 303 to `/`."""
    token = session.get("sid")
    if isinstance(token, str):
        close_session(db.session, token)
    session.clear()
    session["csrf"] = secrets.token_urlsafe(32)
    g.user = g.owner = None
    if wants_json():
        return jsonify(user=None)
    if is_htmx():
        return "", 204, {"HX-Redirect": "/"}
    return redirect("/", code=303)


def _claimable() -> tuple[str | None, int]:
    """The anonymous owner this browser was before signing in, and how many threads it has
    (forgotten once it has none)."""
    owner = session.get("claim")
    if not isinstance(owner, str) or g.get("user") is None:
        return None, 0
    count = thread_count(db.session, owner)
    if not count:
        session.pop("claim", None)
        return None, 0
    return owner, count


def claim_offer() -> int:
    """How many threads this browser made before signing in (0: nothing to offer)."""
    return _claimable()[1]


@bp.get("/account")
def account_show():
    """The signed-in user's page: name, password change, threads to keep, sign out."""
    user = g.user
    if user is None:
        abort(404, description="Accounts are off here (AUTH_MODE=anonymous).")
    if wants_json():
        return jsonify(user=user.to_json(), claimable=claim_offer())
    return render_template("account.html", **{**_form_context(),
                                              "done": request.args.get("done")})


@bp.post("/account/password")
@limited
def password_change():
    """Change the password (`current_password`, `new_password`); every other session of the
    user is signed out, and this one starts afresh."""
    _need_accounts()
    user = g.user
    current, new = _field("current_password"), _field("new_password")
    if not passwords().verify(user.password_hash, current):
        abort(403, description=N_("The current password is not right."))
    problem = password_problem(new, current_app.config["PASSWORD_MIN_CHARS"])
    if problem:
        abort(400, description=problem)
    user.password_hash = passwords().hash(new)
    db.session.commit()
    close_all_sessions(db.session, user.id)
    session.pop("sid", None)
    _start_session(user)
    if wants_json():
        return jsonify(user=user.to_json())
    target = url_for("accounts.account_show", done="password")
    if is_htmx():
        return "", 204, {"HX-Redirect": target}
    return redirect(target, code=303)


@bp.post("/account/claim")
def threads_claim():
    """Keep (`keep=yes`, the default) or leave (`keep=no`) the threads this browser made
    before signing in; JSON: 200 {claimed}."""
    user = g.user
    if user is None:
        abort(404, description="Accounts are off here (AUTH_MODE=anonymous).")
    keep = (_field("keep", required=False) or "yes") not in ("no", "false")
    owner, _count = _claimable()
    claimed = claim_threads(db.session, owner, user) if owner and keep else 0
    session.pop("claim", None)
    if wants_json():
        return jsonify(claimed=claimed)
    if is_htmx():
        return "", 204, {"HX-Redirect": "/"}
    return redirect("/", code=303)
