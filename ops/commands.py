"""The command modules of the `relay` group; each adds its commands to `ops.relay`."""

from . import maintenance, users  # noqa: F401  (prune, export, stats, backup; users)
