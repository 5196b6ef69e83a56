"""Gunicorn entry point: gevent patches the standard library before anything else loads."""

from gevent import monkey

monkey.patch_all()

from app import create_app  # noqa: E402

app = create_app()
