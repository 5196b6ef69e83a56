"""Gunicorn entry point: gevent patches the standard library before anything else loads."""

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402

from app import create_app  # noqa: E402

app = create_app()
# Everything loaded so far lives as long as the process: keep it out of the collector's
# full passes, which otherwise pause every stream of the worker for ~100 ms.
gc.freeze()
