"""Gunicorn settings for Relay: the gevent worker, so one process holds many streams."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gevent"
# Every core by default: the hub keeps followers, stops and resumes right across workers.
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
# Streams are long-lived; the gevent worker notifies the arbiter on its own greenlet.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "20"))
keepalive = 5
control_socket_disable = True  # one per machine by default: servers side by side would share it
accesslog = os.environ.get("ACCESS_LOG", "-") or None  # ACCESS_LOG= (empty) turns it off
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")


def post_worker_init(worker):
    """Start this worker's background work, and end its replies cleanly on SIGTERM."""
    import signal

    import gevent

    engine = worker.wsgi.extensions["relay"]
    engine.start_background()
    stop_accepting = worker.handle_exit

    def handle_term(sig, frame):
        stop_accepting(sig, frame)
        # Flush every reply as `interrupted` now, so the streams end and the worker exits
        # at once instead of waiting out graceful_timeout.
        gevent.spawn(engine.shutdown)

    signal.signal(signal.SIGTERM, handle_term)
    signal.siginterrupt(signal.SIGTERM, False)
