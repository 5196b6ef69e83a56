"""Gunicorn's error and access logs in the JSON format of Relay's own (LOG_FORMAT=json)."""

from __future__ import annotations

from gunicorn.glogging import Logger as GunicornLogger

from .logs import JsonFormatter


class JsonGunicornLogger(GunicornLogger):
    """Gunicorn's error and access logs as JSON lines (gunicorn.conf.py, LOG_FORMAT=json)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        duration = request_time.total_seconds()
        method = environ.get("REQUEST_METHOD")
        # A share link's path is its secret: such requests are logged by route alone.
        path = environ.get("relay.log_path") or environ.get("PATH_INFO")
        fields = {"request_id": environ.get("relay.request_id"),
                  "route": environ.get("relay.route"), "method": method, "path": path,
                  "status": int(status), "bytes": getattr(resp, "sent", None),
                  "duration_ms": round(duration * 1000, 3),
                  "remote_addr": environ.get("REMOTE_ADDR"),
                  "user_agent": environ.get("HTTP_USER_AGENT")}
        self.access_log.info("%s %s %s", method, path, status, extra=fields)
