"""The models on offer, and operational endpoints: health."""

from __future__ import annotations

import gc
import os
from collections import Counter

from flask import Blueprint, abort, current_app, jsonify, request
from greenlet import greenlet
from sqlalchemy import text

from llm import ModelCatalog, ModelChoice
from models import db

bp = Blueprint("api", __name__)


def model_catalog() -> ModelCatalog:
    return current_app.extensions["relay"].models


def unknown_model(model_id: object) -> None:
    """A 400 that names the models one may choose from."""
    choices = ", ".join(c.id for c in model_catalog().choices())
    abort(400, description=f"Unknown model {str(model_id)[:80]!r}; choose one of: {choices}.")


def model_arg(model_id: object) -> ModelChoice | None:
    """The model a request names (None when it names none); a 400 for one not on offer."""
    if model_id is None or model_id == "":
        return None
    choice = model_catalog().get(model_id) if isinstance(model_id, str) else None
    if choice is None:
        unknown_model(model_id)
    return choice


MAX_COMPARED = 4  # models that answer one prompt side by side


def compared_models_arg(model_ids: list) -> list[ModelChoice]:
    """2 to MAX_COMPARED distinct models on offer, in the order named; a 400 that says what
    is wrong otherwise (an unknown one: naming the choices)."""
    if not all(isinstance(m, str) and m for m in model_ids):
        abort(400, description="Name each model to compare by its id (see GET /models).")
    choices = [model_arg(m) for m in model_ids]
    ids = [c.id for c in choices]
    twice = next((i for n, i in enumerate(ids) if i in ids[:n]), None)
    if twice is not None:
        abort(400, description=f"Compare each model once: {twice!r} is named twice.")
    if not 2 <= len(ids) <= MAX_COMPARED:
        abort(400, description=f"Compare 2 to {MAX_COMPARED} models at once; "
                               f"{len(ids)} {'was' if len(ids) == 1 else 'were'} named.")
    return choices


@bp.get("/models")
def model_list():
    """The models the composer offers, the default first: `[{id, provider, label, vision,
    context}]`."""
    # Not a page: it may wait briefly for the server's own list when that is due.
    wait = current_app.config["MODEL_LIST_TIMEOUT_S"]
    return jsonify([c.to_json() for c in model_catalog().choices(wait_s=wait)])


@bp.get("/models/health")
def model_health():
    """Whether a model (`?model=`, default: the default model) answers now (cached a few
    seconds): the page shows it before a prompt is sent. 200 whenever the model is known;
    `ok` says whether it is reachable."""
    catalog = model_catalog()
    choice = model_arg(request.args.get("model")) or catalog.default
    health = {**catalog.health(choice).status(), "id": choice.id}
    return jsonify(health), 200, {"Cache-Control": "no-store"}


@bp.get("/healthz")
def healthz():
    """200 when the database answers; the hub's and the writer's state for operators.

    A degraded hub (its broker away, followers served through the database watcher) still
    answers 200: every host sees the same broker, so taking hosts out would not help.
    """
    relay = current_app.extensions["relay"]
    try:
        db.session.execute(text("SELECT 1"))
        database = {"ok": True, "dialect": db.engine.dialect.name}
    except Exception as err:  # report, don't crash: this is what monitoring reads
        database = {"ok": False, "error": type(err).__name__}
    finally:
        db.session.close()
    hub = relay.hub.health()
    ok = database["ok"] and hub["ok"]
    body = {"status": "ok" if ok else "degraded", "database": database, "hub": hub,
            "provider": {"name": relay.provider.name, "model": relay.provider.model},
            "worker": os.getpid(),
            "followers": current_app.extensions["relay_feeds"].stats(),
            **relay.health()}
    if current_app.config.get("HEALTH_DIAGNOSTICS"):
        body["diagnostics"] = diagnostics()
    return jsonify(body), 200 if ok else 503


def diagnostics() -> dict:
    """What a leak would grow: this worker's greenlets, and what the most common ones run
    (HEALTH_DIAGNOSTICS only)."""
    gc.collect()  # what is garbage already is no leak
    alive = [o for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead]
    kinds = Counter(_runs(o) for o in alive)
    return {"greenlets": len(alive), "greenlet_kinds": dict(kinds.most_common(8))}


def _runs(g: greenlet) -> str:
    run = getattr(g, "_run", None) or getattr(g, "run", None)
    run = getattr(run, "__func__", run)
    return getattr(run, "__qualname__", type(g).__name__)
