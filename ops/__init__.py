"""Operations from the command line: `flask --app app relay ...`."""

from __future__ import annotations

from flask import Flask
from flask.cli import AppGroup

relay = AppGroup("relay", help="Operate Relay: users, pruning, exports, statistics, backups.")


def register_cli(app: Flask) -> None:
    """Attach the `relay` command group (and every command module's commands) to the app."""
    from . import commands  # noqa: F401  (its commands register themselves on `relay`)

    app.cli.add_command(relay)
