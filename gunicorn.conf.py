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
if os.environ.get("LOG_FORMAT") == "json":  # the access and error logs as JSON lines too
    logger_class = "observability.gunicorn_logger.JsonGunicornLogger"
# Where every worker keeps its metrics for /metrics to add up (prometheus-client's
# multiprocess mode). Unless the operator names one, each start of the master makes a fresh
# private directory and removes it on exit; a directory the operator names must be emptied
# by them before each start.
_OWN_METRICS_DIR = "RELAY_OWN_METRICS_DIR"


def on_starting(server):
    """Before any worker exists: give the workers a fresh metrics directory."""
    import tempfile

    if os.environ.get("METRICS") == "off":
        return
    named = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    # A directory an earlier master made (a re-exec keeps its environment) is not reused.
    if named and named != os.environ.get(_OWN_METRICS_DIR):
        return
    path = tempfile.mkdtemp(prefix="relay-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[_OWN_METRICS_DIR] = path


def child_exit(server, worker):
    """A worker is gone: its live gauges (replies running, followers) go with it."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    import shutil

    path = os.environ.get(_OWN_METRICS_DIR)
    if path and path == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(path, ignore_errors=True)


def post_worker_init(worker):
    """Start this worker's background work, and on SIGTERM exit as soon as its replies are
    saved as `interrupted` and its requests answered."""
    import signal
    import time

    import gevent

    engine = worker.wsgi.extensions["relay"]
    engine.start_background()
    if os.environ.get("LOG_FORMAT") == "json":
        from observability.logs import log_greenlet_errors

        log_greenlet_errors()
    stop_accepting = worker.handle_exit
    answering = _count_requests(worker)

    def shut_down():
        # Every reply flushed and marked now, so their streams end with their last event.
        engine.shutdown()
        deadline = time.monotonic() + worker.cfg.graceful_timeout
        while answering() and time.monotonic() < deadline:
            gevent.sleep(0.05)
        # What is left is idle: kept-alive connections and websocket followers, which
        # reconnect elsewhere. Gunicorn would wait out their keep-alive; leave now instead.
        hub = gevent.get_hub()
        hub.loop.run_callback(hub.parent.throw, SystemExit(0))

    def handle_term(sig, frame):
        stop_accepting(sig, frame)
        gevent.spawn(shut_down)

    signal.signal(signal.SIGTERM, handle_term)
    signal.siginterrupt(signal.SIGTERM, False)


def _count_requests(worker):
    """Count the requests this worker is answering (websockets aside: a follower waits for
    news for as long as it is open); returns a function that tells how many."""
    running = [0]
    handle_request = worker.handle_request

    def counted(listener_name, req, sock, addr):
        websocket = any(name == "UPGRADE" and value.lower() == "websocket"
                        for name, value in req.headers)
        running[0] += not websocket
        try:
            return handle_request(listener_name, req, sock, addr)
        finally:
            running[0] -= not websocket

    worker.handle_request = counted
    return lambda: running[0]
