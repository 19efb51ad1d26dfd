"""Real Prometheus + Alertmanager (Debian packages) on free loopback ports, for tests.

* :func:`ensure_binaries` installs them with scripts/install-prometheus.sh if missing.
* :class:`WebhookReceiver` is a local HTTP server standing in for the paging gateway,
  PagerDuty (Events API v2) and Opsgenie (v2 alerts API): it records every POST.
* :func:`alertmanager_test_config` derives the test config from the shipped
  alerts/alertmanager.yml: same routes and inhibitions, every receiver pointed at the local
  receiver, secrets in temp files, group waits/intervals shortened to 1 s.
* :class:`PromStack` runs Prometheus (1 s scrape and rule evaluation, the shipped rules)
  and Alertmanager with temp dirs; ``query()`` runs PromQL over the HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "alerts" / "telesafe-rules.yml"
AM_CONFIG = REPO_ROOT / "alerts" / "alertmanager.yml"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-prometheus.sh"
BINARIES = ("prometheus", "promtool", "prometheus-alertmanager", "amtool")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def ensure_binaries() -> None:
    """Install the Debian packages (as CI does: root, non-interactive) if any is missing."""
    if not missing_binaries():
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], env=env, capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0 or missing_binaries():
        raise RuntimeError(
            f"install-prometheus.sh failed (rc={proc.returncode}), still missing "
            f"{missing_binaries()}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, data: bytes | None = None, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, data=data)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.2, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")


# --------------------------------------------------------------------------- receiver


@dataclass
class Delivery:
    path: str  # e.g. /webhook/telesafe-webhook, /pagerduty/pagerduty-oncall, /opsgenie/v2/alerts
    body: Any
    at: float


@dataclass
class WebhookReceiver:
    """Records every POST (JSON) it receives; answers 200/202 like the real services."""

    deliveries: list[Delivery] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with receiver._cond:
                    receiver.deliveries.append(Delivery(self.path, body, time.time()))
                    receiver._cond.notify_all()
                status = 202 if self.path.startswith("/pagerduty") else 200
                payload = b'{"status":"success","message":"ok","dedup_key":"x","result":"ok"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def snapshot(self) -> list[Delivery]:
        with self._cond:
            return list(self.deliveries)

    def wait_for(self, predicate: Callable[[Delivery], bool], timeout: float) -> Delivery:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for d in self.deliveries[seen:]:
                    if predicate(d):
                        return d
                seen = len(self.deliveries)
                left = deadline - time.monotonic()
                if left <= 0:
                    paths = [(d.path, _summary(d.body)) for d in self.deliveries]
                    raise TimeoutError(f"no matching delivery in {timeout:.0f}s; got {paths}")
                self._cond.wait(left)


def _summary(body: Any) -> Any:
    if isinstance(body, dict) and "alerts" in body:
        return [
            (body.get("status"), a.get("labels", {}).get("alertname"), a.get("status"))
            for a in body["alerts"]
        ]
    return str(body)[:120]


def webhook_alerts(d: Delivery) -> list[dict[str, Any]]:
    """The alerts of an Alertmanager webhook (version 4) delivery, else []."""
    if d.path.startswith("/webhook/") and isinstance(d.body, dict):
        return list(d.body.get("alerts", []))
    return []


# --------------------------------------------------------------------------- configs


def alertmanager_test_config(receiver_base: str, secrets_dir: Path) -> dict[str, Any]:
    """The shipped Alertmanager config with every receiver pointed at ``receiver_base``."""
    cfg: dict[str, Any] = yaml.safe_load(AM_CONFIG.read_text(encoding="utf-8"))
    secrets_dir.mkdir(parents=True, exist_ok=True)
    for r in cfg["receivers"]:
        name = r["name"]
        for wh in r.get("webhook_configs", []):
            wh["url"] = f"{receiver_base}/webhook/{name}"
        for pd in r.get("pagerduty_configs", []):
            key = secrets_dir / f"{name}-routing-key"
            key.write_text("test-routing-key-0123456789abcdef", encoding="utf-8")
            pd["routing_key_file"] = str(key)
            pd["url"] = f"{receiver_base}/pagerduty/{name}"
        for og in r.get("opsgenie_configs", []):
            key = secrets_dir / f"{name}-api-key"
            # No trailing newline: Alertmanager 0.25 sends the file verbatim in the
            # Authorization header, and Go rejects a header value with "\n".
            key.write_text("test-opsgenie-key", encoding="utf-8")
            og["api_key_file"] = str(key)
            og["api_url"] = f"{receiver_base}/opsgenie/"

    def shorten(route: dict[str, Any]) -> None:
        for k in ("group_wait", "group_interval"):
            if k in route or route is cfg["route"]:
                route[k] = "1s"
        for child in route.get("routes", []):
            shorten(child)

    shorten(cfg["route"])
    return cfg


def prometheus_config(
    targets: list[str], alertmanager: str, rule_files: list[Path], job: str = "telesafe"
) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def start_process(name: str, argv: list[str], workdir: Path) -> Proc:
    log = workdir / f"{name}.log"
    fh = log.open("wb")
    p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=workdir)
    fh.close()
    return Proc(name, p, log)


def wait_ready(proc: Proc, url: str, timeout: float = 30.0) -> None:
    def ok() -> bool:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{proc.name} not ready at {url}:\n{proc.tail()}")


@dataclass
class PromStack:
    """Prometheus + Alertmanager + webhook receiver; use as a context manager."""

    targets: list[str]
    rule_files: list[Path] = field(default_factory=lambda: [RULES_FILE])
    workdir: Path | None = None
    receiver: WebhookReceiver = field(default_factory=WebhookReceiver)
    prom_port: int = 0
    am_port: int = 0
    procs: list[Proc] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def prom_url(self) -> str:
        return f"http://127.0.0.1:{self.prom_port}"

    @property
    def am_url(self) -> str:
        return f"http://127.0.0.1:{self.am_port}"

    def __enter__(self) -> PromStack:
        ensure_binaries()
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="promstack-")
            self.workdir = Path(self._tmp.name)
        wd = self.workdir
        self.receiver.start()
        try:
            self.am_port = free_port()
            am_cfg = wd / "alertmanager.yml"
            am_cfg.write_text(
                yaml.safe_dump(alertmanager_test_config(self.receiver.base_url, wd / "secrets"))
            )
            (wd / "am-data").mkdir()
            am = start_process(
                "alertmanager",
                [
                    "prometheus-alertmanager",
                    f"--config.file={am_cfg}",
                    f"--storage.path={wd / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{self.am_port}",
                    "--cluster.listen-address=",
                    "--log.level=debug",
                ],
                wd,
            )
            self.procs.append(am)
            wait_ready(am, f"{self.am_url}/-/ready")

            self.prom_port = free_port()
            prom_cfg = wd / "prometheus.yml"
            prom_cfg.write_text(
                yaml.safe_dump(
                    prometheus_config(self.targets, f"127.0.0.1:{self.am_port}", self.rule_files)
                )
            )
            (wd / "prom-data").mkdir()
            prom = start_process(
                "prometheus",
                [
                    "prometheus",
                    f"--config.file={prom_cfg}",
                    f"--storage.tsdb.path={wd / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{self.prom_port}",
                    "--rules.alert.resend-delay=1s",
                    "--log.level=info",
                ],
                wd,
            )
            self.procs.append(prom)
            wait_ready(prom, f"{self.prom_url}/-/ready")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.receiver.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def logs(self) -> str:
        return "\n".join(f"----- {p.name}\n{p.tail()}" for p in self.procs)

    # ------------------------------------------------------------------ queries

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        out = http_json(url)
        if out.get("status") != "success":
            raise RuntimeError(f"query failed: {expr}: {out}")
        return list(out["data"]["result"])

    def targets_up(self) -> bool:
        res = self.query("up")
        return bool(res) and all(r["value"][1] == "1" for r in res)

    def alerts(self) -> list[dict[str, Any]]:
        return list(http_json(f"{self.prom_url}/api/v1/alerts")["data"]["alerts"])


@contextlib.contextmanager
def prom_stack(targets: list[str]) -> Iterator[PromStack]:
    with PromStack(targets=targets) as stack:
        yield stack
