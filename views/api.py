"""Operational endpoints: health."""

from __future__ import annotations

import os

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from models import db

bp = Blueprint("api", __name__)


@bp.get("/models/health")
def model_health():
    """Whether the model answers now (cached a few seconds): the page shows it before a
    prompt is sent. Always 200; `ok` says whether the model is reachable."""
    health = current_app.extensions["relay_model_health"].status()
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
    return jsonify(body), 200 if ok else 503
