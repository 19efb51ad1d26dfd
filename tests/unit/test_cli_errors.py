"""Every `telesafe` command fails with one line and a non-zero exit, never a traceback.

The argparse tree is walked, so a new subcommand without a bad-input case here fails
`test_every_command_has_a_bad_input_case`. Nothing here needs Kafka or starts a broker:
each bad input is refused before any connection (or aims at a closed port).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from monitor.audit.checkpoint import generate_key_files
from monitor.cli import build_parser, main, walk
from monitor.errors import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE

REPO = Path(__file__).resolve().parents[2]
CLOSED = "http://127.0.0.1:1"  # port 1: nothing listens, connection refused at once

# Per command: arguments that parse but cannot be used ({t}: a temporary directory holding
# `notes.txt`, which is no ledger, recording, proof or pack; {pub}: a real public key), and
# the exit code. None: the command has no such input (only unparseable arguments).
BAD_INPUT: dict[str, tuple[list[str], int] | None] = {
    "run": (["--rules", "{t}/missing"], EXIT_USAGE),
    "status": (["--url", CLOSED], EXIT_UNAVAILABLE),
    "simulate": (["--duration", "-1"], EXIT_USAGE),
    "rearm": (
        ["--procedure", "P", "--operator", "op", "--reason", "r", "--signing-key", "k"],
        EXIT_USAGE,
    ),
    "latch close": (
        ["--procedure", "P", "--operator", "op", "--reason", "r", "--signing-key", "other=k"],
        EXIT_USAGE,
    ),
    "note": (
        ["--procedure", "P", "--operator", "op", "--text", "t", "--signing-key", "op=/-"],
        EXIT_USAGE,
    ),
    "policy check": (["{t}/notes.txt"], EXIT_FAILED),
    "policy explain": (["{t}/missing.yaml"], EXIT_FAILED),
    "policy schema": None,
    "record": (["{t}/r.jsonl", "--duration", "0"], EXIT_USAGE),
    "replay": (["{t}/notes.txt"], EXIT_USAGE),
    "broker start": (["--partitions", "0"], EXIT_USAGE),
    "broker stop": (["--timeout", "0", "--data-dir", "{t}/kafka"], EXIT_USAGE),
    "broker status": (["--secure", "--data-dir", "{t}/kafka"], EXIT_USAGE),
    "broker topics": (["--bootstrap", "127.0.0.1:1"], EXIT_FAILED),
    "broker reset": (["--data-dir", "{t}/kafka"], EXIT_USAGE),
    "audit keygen": (["--out", "{t}/no/such/dir/k"], EXIT_USAGE),
    "audit verify": (["{t}/notes.txt", "--pubkey", "{pub}"], EXIT_USAGE),
    "audit prove": (["{t}/notes.txt", "--entry", "0"], EXIT_USAGE),
    "audit verify-proof": (["{t}/notes.txt", "--pubkey", "{pub}"], EXIT_USAGE),
    "audit export": (["{t}/notes.txt", "--out", "{t}/bundle"], EXIT_USAGE),
    "audit show": (["{t}/notes.txt"], EXIT_USAGE),
    "audit archive": (
        ["--dir", "{t}/archive", "--trusted-keys", "{t}/missing-keys", "--once"],
        EXIT_USAGE,
    ),
    "audit rotate-key": (["{t}/notes.txt", "--key", "{t}/k", "--new-key", "{t}/k"], EXIT_USAGE),
    "report": (
        ["--ledger", "{t}/notes.txt", "--pubkey", "{pub}", "--procedure", "P"],
        EXIT_USAGE,
    ),
    "dashboards generate": (["--out", "{t}/notes.txt/dir"], EXIT_USAGE),
    "dashboards push": (["--url", CLOSED], EXIT_UNAVAILABLE),
    "demo": (["--workdir", "{t}/notes.txt/dir"], EXIT_USAGE),
    "safety trace": (["--hazards", "{t}/missing.yaml", "--out", "-"], EXIT_USAGE),
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every leaf command by name ("audit verify"), from the real parser."""
    out = {}
    for p in walk(build_parser()):
        if not any(isinstance(a, argparse._SubParsersAction) for a in p._actions):
            out[p.prog.removeprefix("telesafe ")] = p
    return out


COMMANDS = sorted(_commands())


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # nothing a command writes lands in the repository
    monkeypatch.setenv("TELESAFE_KAFKA_DIR", str(tmp_path / "kafka"))
    (tmp_path / "notes.txt").write_text("not a ledger, recording, proof nor pack\n")
    _, pub = generate_key_files(tmp_path / "k")
    return {"t": str(tmp_path), "pub": str(pub)}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
    return rc, capsys.readouterr().err


def _one_error_line(err: str, command: str) -> str:
    """The error line; besides it only a usage line or a listing's indented details."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln and not ln.startswith(("usage: ", "  "))]
    assert len(lines) == 1, err
    return lines[0]


def test_every_command_has_a_bad_input_case() -> None:
    assert set(COMMANDS) == set(BAD_INPUT)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_flag_names_the_command_typed(
    command: str, sandbox: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    case = BAD_INPUT.get(command)
    args = [a.format(**sandbox) for a in case[0]] if case else []
    rc, err = _run([*command.split(), *args, "--bogus-flag"], capsys)
    assert rc == EXIT_USAGE
    assert err.splitlines()[0].startswith(f"usage: telesafe {command} ")
    line = _one_error_line(err, command)
    assert line.startswith(f"telesafe {command}: "), err
    # The unknown flag, or the bad value argparse met first (a case refused by argparse).
    assert "unrecognized arguments: --bogus-flag" in line or ": argument --" in line, err


@pytest.mark.parametrize("command", [c for c in COMMANDS if BAD_INPUT.get(c)])
def test_bad_input_is_one_line_and_a_non_zero_exit(
    command: str, sandbox: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    case = BAD_INPUT[command]
    assert case is not None
    args, code = case
    rc, err = _run([*command.split(), *(a.format(**sandbox) for a in args)], capsys)
    assert rc == code, err
    line = _one_error_line(err, command)
    if not command.startswith("policy"):  # a pack check lists its problems: INVALID ...
        assert line.startswith(f"telesafe {command}: "), err


@pytest.fixture()
def not_grafana() -> Iterator[str]:
    """An HTTP server answering 404 to everything (a wrong URL, not Grafana)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>\n<body>not found</body>\n</html>\n")

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_dashboards_push_to_a_server_answering_404(
    not_grafana: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = _run(["dashboards", "push", "--url", not_grafana], capsys)
    assert rc == EXIT_FAILED
    assert err.splitlines() == [
        f"telesafe dashboards push: Grafana at {not_grafana} answered HTTP 404 Not Found "
        "(is the URL Grafana's base URL?)"
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["dashboards", "push", "--url", CLOSED],
        ["broker", "topics", "--partitions", "0"],
        ["broker", "start", "--partitions", "0"],
        ["run", "--bogus-flag"],
    ],
    ids=" ".join,
)
def test_the_installed_command_prints_no_traceback(argv: list[str], tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "monitor", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    command = " ".join(argv[:2]) if argv[0] in ("dashboards", "broker") else argv[0]
    errors = [ln for ln in res.stderr.splitlines() if not ln.startswith("usage: ")]
    assert len(errors) == 1 and errors[0].startswith(f"telesafe {command}: "), res.stderr
