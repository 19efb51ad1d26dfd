"""HTTP endpoints: /metrics (Prometheus), /healthz (liveness), /readyz, /status (JSON)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HealthFn = Callable[[], tuple[bool, dict[str, Any]]]
StatusFn = Callable[[], dict[str, Any]]


class MonitorHTTP:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: HealthFn,
        ready: HealthFn,
        status: StatusFn,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, detail = (health if path == "/healthz" else ready)()
                    self._json(200 if ok else 503, {"ok": ok, **detail})
                elif path == "/status":
                    self._json(200, status())
                else:
                    self._json(
                        404,
                        {
                            "error": f"no such endpoint {path}",
                            "endpoints": ["/metrics", "/healthz", "/readyz", "/status"],
                        },
                    )

            def _json(self, code: int, body: dict[str, Any]) -> None:
                self._send(code, json.dumps(body, default=str).encode(), "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every second would drown the safety log

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="telesafe-http", daemon=True
        )
        _ = outer

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
