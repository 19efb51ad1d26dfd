"""`telesafe dashboards push` against a local fake Grafana, and a real one if configured."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from monitor.dashboards import all_dashboards, dashboard_json
from monitor.dashboards.cli import main as dashboards_main
from monitor.dashboards.push import folder_uid_for, push


@dataclass
class FakeGrafana:
    """Speaks the subset of the Grafana HTTP API that grafana-client uses for a push."""

    token: str = "glsa_test_token"
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeGrafana:
        fake = self

        class H(BaseHTTPRequestHandler):
            def _send(self, code: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._send(401, {"message": "Unauthorized"})
                    return False
                return True

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"null")

            def do_GET(self) -> None:
                u = urlparse(self.path)
                fake.requests.append(("GET", u.path))
                if not self._authorised():
                    return
                if u.path == "/api/health":
                    self._send(200, {"database": "ok", "version": "12.4.0"})
                elif u.path == "/api/frontend/settings":
                    self._send(200, {"buildInfo": {"version": "12.4.0"}})
                elif u.path == "/api/folders":
                    self._send(
                        200,
                        [
                            {"id": i, "uid": f["uid"], "title": f["title"]}
                            for i, f in enumerate(fake.folders.values(), 1)
                        ],
                    )
                elif u.path.startswith("/api/folders/"):
                    uid = u.path.rsplit("/", 1)[1]
                    if uid in fake.folders:
                        self._send(200, fake.folders[uid])
                    else:
                        self._send(404, {"message": "folder not found"})
                elif u.path.startswith("/api/dashboards/uid/"):
                    uid = u.path.rsplit("/", 1)[1]
                    if uid in fake.dashboards:
                        self._send(200, fake.dashboards[uid])
                    else:
                        self._send(404, {"message": "Dashboard not found"})
                elif u.path == "/api/search":
                    q = parse_qs(u.query)
                    hits = [
                        {
                            "uid": uid,
                            "title": d["dashboard"]["title"],
                            "type": "dash-db",
                            "folderUid": d["meta"]["folderUid"],
                        }
                        for uid, d in fake.dashboards.items()
                        if not q.get("folderUIDs") or d["meta"]["folderUid"] in q["folderUIDs"]
                    ]
                    self._send(200, hits)
                else:
                    self._send(404, {"message": "not found"})

            def do_POST(self) -> None:
                u = urlparse(self.path)
                fake.requests.append(("POST", u.path))
                if not self._authorised():
                    return
                body = self._body()
                if u.path == "/api/folders":
                    uid = body.get("uid") or "generated"
                    if uid in fake.folders:
                        self._send(409, {"message": "a folder with the same uid already exists"})
                        return
                    fake.folders[uid] = {
                        "id": len(fake.folders) + 1,
                        "uid": uid,
                        "title": body["title"],
                    }
                    self._send(200, fake.folders[uid])
                elif u.path == "/api/dashboards/db":
                    dash = body["dashboard"]
                    uid = dash["uid"]
                    if body.get("folderUid") not in fake.folders:
                        self._send(400, {"message": "folder not found"})
                        return
                    if uid in fake.dashboards and not body.get("overwrite"):
                        self._send(412, {"status": "version-mismatch"})
                        return
                    version = (
                        fake.dashboards.get(uid, {"meta": {"version": 0}})["meta"]["version"] + 1
                    )
                    fake.dashboards[uid] = {
                        "dashboard": dash,
                        "payload": body,
                        "meta": {"folderUid": body["folderUid"], "version": version},
                    }
                    self._send(
                        200,
                        {
                            "id": 1,
                            "uid": uid,
                            "url": f"/d/{uid}/x",
                            "status": "success",
                            "version": version,
                        },
                    )
                else:
                    self._send(404, {"message": "not found"})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    g = FakeGrafana().start()
    yield g
    g.stop()


def test_push_creates_folder_and_uploads_every_dashboard(grafana: FakeGrafana) -> None:
    results = push(grafana.url, grafana.token, folder="Surgery Safety")
    assert set(grafana.folders) == {"surgery-safety"}
    assert grafana.folders["surgery-safety"]["title"] == "Surgery Safety"
    expected = {d.uid: dashboard_json(d) for d in all_dashboards()}
    assert {r.uid for r in results} == set(expected)
    for uid, want in expected.items():
        stored = grafana.dashboards[uid]
        payload = stored["payload"]
        assert payload["folderUid"] == "surgery-safety"
        assert payload["overwrite"] is True
        assert payload["dashboard"]["id"] is None
        # The uploaded JSON is exactly the generated dashboard.
        assert {k: v for k, v in payload["dashboard"].items() if k != "id"} == {
            k: v for k, v in want.items() if k != "id"
        }
    assert ("POST", "/api/dashboards/db") in grafana.requests
    assert ("GET", "/api/search") in grafana.requests


def test_push_twice_reuses_folder_and_overwrites(grafana: FakeGrafana) -> None:
    push(grafana.url, grafana.token, folder="telesafe")
    results = push(grafana.url, grafana.token, folder="telesafe")
    assert len(grafana.folders) == 1
    assert all(r.version == 2 for r in results)
    assert grafana.requests.count(("POST", "/api/folders")) == 1


def test_push_finds_existing_folder_by_title(grafana: FakeGrafana) -> None:
    grafana.folders["abc123"] = {"id": 7, "uid": "abc123", "title": "telesafe"}
    push(grafana.url, grafana.token, folder="telesafe")
    assert set(grafana.folders) == {"abc123"}
    assert all(d["meta"]["folderUid"] == "abc123" for d in grafana.dashboards.values())


def test_push_rejects_bad_token(grafana: FakeGrafana) -> None:
    from grafana_client.client import GrafanaUnauthorizedError

    with pytest.raises(GrafanaUnauthorizedError):
        push(grafana.url, "wrong", folder="telesafe")
    assert not grafana.dashboards


def test_cli_push(grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]) -> None:
    rc = dashboards_main(
        ["push", "--url", grafana.url, "--token", grafana.token, "--folder", "Ops"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("success") == len(all_dashboards())
    assert set(grafana.folders) == {folder_uid_for("Ops")}


@pytest.mark.skipif(
    not (os.environ.get("GRAFANA_URL") and os.environ.get("GRAFANA_TOKEN")),
    reason="real Grafana: set GRAFANA_URL and GRAFANA_TOKEN (service-account token)",
)
def test_push_to_real_grafana() -> None:
    from grafana_client.api import GrafanaApi

    url, token = os.environ["GRAFANA_URL"], os.environ["GRAFANA_TOKEN"]
    results = push(url, token, folder="telesafe-ci")
    api: Any = GrafanaApi.from_url(url, credential=token)
    for r in results:
        got = api.dashboard.get_dashboard(r.uid)
        assert got["dashboard"]["uid"] == r.uid
        assert got["meta"]["folderUid"] == folder_uid_for("telesafe-ci")
