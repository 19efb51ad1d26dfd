"""`telesafe status`: ids and states whole at 80 columns; the last view kept when the
monitor stops answering."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rich.console import Console

from monitor.cli import main
from monitor.errors import EXIT_UNAVAILABLE
from monitor.service.statusview import ago, render

IDS = ["FLT-0042-LONDON-GIBRALTAR-0001", "FLT-0042-LONDON-GIBRALTAR-0002", "LDN-GIB-0003"]
STATES = ["safe_stop_latched", "warning", "armed"]


def _procedure(state: str, latched: bool) -> dict[str, Any]:
    site = {"heartbeat_age_s": 0.0123, "jitter_ms": 2.0, "loss_ratio": 0.0}
    return {
        "state": state,
        "pack": "demo-forbidden-zone",
        "sites": {"console": dict(site), "robot": {**site, "heartbeat_age_s": 4.5}},
        "channels": {"control": {"0.95": 351.2}, "video": {"0.95": 99.7}},
        "warnings": ["heartbeat_silence:robot", "control_latency:control"] if latched else [],
        "latch": (
            {"rule": "heartbeat_silence", "ack": None, "resends": 12, "command_id": "c-1"}
            if latched
            else None
        ),
    }


SNAP = {
    "monitor_id": "telesafe-1",
    "procedures": {
        pid: _procedure(st, st == "safe_stop_latched") for pid, st in zip(IDS, STATES, strict=True)
    },
}


def _text(width: int, **kw: Any) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render(SNAP, width, **kw))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 60, 200])
def test_ids_and_states_are_never_truncated(width: int) -> None:
    text = _text(width)
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= width
    for pid, state in zip(IDS, STATES, strict=True):
        # the id and its state on one line, both whole
        [row] = [ln for ln in lines if pid in ln]
        assert state in row.split(), row
    assert "…" not in text.replace("…)", "")


def test_at_80_columns_every_figure_and_the_latch_are_shown() -> None:
    text = _text(80)
    assert "12/4500" in text and "351/100" in text  # heartbeat ages, p95s (console/robot)
    flat = " ".join(text.split())
    assert "heartbeat_silence:robot, control_latency:control" in flat
    assert "stop heartbeat_silence · ack pending · re-sends 12" in flat
    assert "pack demo-forbidden-zone" in flat


def test_an_unreachable_monitor_keeps_the_last_view_with_its_age() -> None:
    text = _text(80, unreachable=("Connection refused", 75.0))
    assert text.splitlines()[0] == "monitor unreachable (Connection refused); last seen 75 s ago"
    assert all(pid in text for pid in IDS)


def test_ago() -> None:
    assert [ago(s) for s in (3, 200, 7300)] == ["3 s ago", "3 min ago", "2 h ago"]


@pytest.fixture()
def monitor_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(SNAP).encode()
            self.send_response(200 if self.path == "/status" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_status_json_prints_the_snapshot(
    monitor_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--url", monitor_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == SNAP


def test_status_once_prints_the_view_once(
    monitor_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["status", "--url", monitor_url, "--once"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "telesafe monitor telesafe-1 — 3 procedure(s)"
    assert all(pid in out for pid in IDS)


def test_status_without_a_monitor_exits_3_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", "http://127.0.0.1:1"]) == EXIT_UNAVAILABLE
    assert capsys.readouterr().err.splitlines() == [
        "telesafe status: cannot reach a monitor at http://127.0.0.1:1/status: Connection refused"
    ]


def test_a_busy_http_port_is_named() -> None:
    import argparse
    import errno

    from monitor.service.cli import _why

    args = argparse.Namespace(http_host="127.0.0.1", http_port=9108)
    busy = OSError(errno.EADDRINUSE, "Address already in use")
    assert _why(busy, args) == (
        "HTTP port 127.0.0.1:9108 is already in use (another monitor?); choose another with "
        "--http-port (0: any free port)"
    )
    assert _why(ValueError("line one\nline two"), args) == "line one; line two"
