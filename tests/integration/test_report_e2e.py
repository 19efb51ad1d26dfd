"""End to end: simulator -> Kafka -> `telesafe run` with a signed ledger -> `telesafe report`
-> a headless-browser screenshot of the page, and the PDF's text layer (`pdftotext`).

The robot's heartbeats stop 2 s into a 6 s procedure; the monitor latches a safe-stop, the
simulated robot acknowledges it. The ledger must verify, hold the safe-stop and its
acknowledgement, and the report must show both, with the acknowledgement delay the
ledger recorded.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.audit.checkpoint import generate_key_files, load_public_key
from monitor.audit.verified import load_verified
from monitor.audit.verify import verify
from monitor.cli import main
from monitor.kafka.settings import KafkaSettings
from monitor.report.build import build_report
from monitor.report.html import pdf_available
from monitor.sim.faults import parse_spec
from monitor.sim.runner import SimConfig, Simulation
from tests.integration.monitorkit import run_monitor
from tests.unit.test_report import flat, pdf_text

PID = "LDN-GIB-0001"


def _entries(ledger: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(ledger) as conn:
        return [json.loads(b) for (b,) in conn.execute("SELECT body FROM entries ORDER BY idx")]


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip(
            "chromium is not installed (scripts/test.sh installs it: apt-get install chromium)"
        )
    return exe


def _run_procedure(
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    during: Callable[[], None] | None = None,
) -> tuple[Path, Path, Callable[[], str]]:
    """A 6 s simulated procedure whose robot heartbeats stop at 2 s, supervised by
    `telesafe run` with a signed ledger; `during` runs while the simulator does. Returns
    the ledger, its public key, and the monitor's log."""
    key, pub = generate_key_files(tmp_path / "ledger.key")
    ledger = tmp_path / "ledger.sqlite"
    with run_monitor(
        kafka_bootstrap, topic_prefix, tmp_path, "--ledger", str(ledger), "--signing-key", str(key)
    ) as mon:
        sim = Simulation(
            SimConfig(duration=6, faults=[parse_spec("heartbeat-stop:robot@2s")], seed=3),
            KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix),
        )
        runner = threading.Thread(target=sim.run, daemon=True)
        runner.start()
        if during is not None:
            during()
        runner.join(timeout=60)
        assert not runner.is_alive(), "the simulator did not finish"
        time.sleep(1.0)  # the last acknowledgements and procedure_end reach the monitor
        return ledger, pub, mon.log


def test_safe_stop_reaches_the_report_and_the_page_renders(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, chromium: str
) -> None:
    ledger, pub, log = _run_procedure(kafka_bootstrap, topic_prefix, tmp_path)
    # The monitor has stopped (SIGTERM): the final checkpoint covers everything.
    res = verify(ledger, load_public_key(pub))
    assert res.ok, [str(p) for p in res.problems]

    entries = [e for e in _entries(ledger) if e.get("procedure_id") == PID]
    kinds = [e["event"] for e in entries]
    assert "safe_stop_issued" in kinds, (kinds, log())
    stop = next(e for e in entries if e["event"] == "safe_stop_issued")
    assert stop["data"]["rule"] == "heartbeat_silence"
    assert stop["data"]["subject"] == "robot"
    ack = next(e for e in entries if e["event"] == "safe_stop_acknowledged")
    assert ack["data"]["command_id"] == stop["data"]["command_id"]
    delay_ms = float(ack["data"]["delay_ms"])
    assert 0 < delay_ms < 2000

    out = tmp_path / "report.html"
    rc = _report(ledger, pub, "--out", str(out))
    assert rc == 0
    page = out.read_text(encoding="utf-8")
    assert "Ledger verified" in page
    assert stop["data"]["command_id"] in page
    assert "heartbeat_silence" in page
    assert f"{delay_ms:,.1f} ms" in page  # the acknowledgement delay, as recorded
    assert page.count("<svg") >= 2

    # A real browser renders it: a non-trivial, non-blank screenshot.
    shot = tmp_path / "report.png"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        f"file://{out}",
    ]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists(), proc.stderr.decode(errors="replace")[-2000:]
    assert shot.stat().st_size > 50_000
    _assert_not_blank(shot)


def _report(ledger: Path, pub: Path, *out: str) -> int:
    return main(["report", "--ledger", str(ledger), "--pubkey", str(pub), "--procedure", PID, *out])


def _assert_not_blank(png: Path) -> None:
    from matplotlib import image

    px = image.imread(str(png))
    assert px.shape[0] == 2000 and px.shape[1] == 1280, px.shape
    rgb = (px[::4, ::4, :3] * 255).astype("uint8").reshape(-1, 3)
    colours = {tuple(int(c) for c in p) for p in rgb[:: max(1, len(rgb) // 50_000)]}
    assert len(colours) > 200, f"only {len(colours)} distinct colours: a blank page?"
    # The dark header band was rendered (the CSS applied), and the page is not one colour.
    r, g, b = (int(c * 255) for c in px[10, 10, :3])
    assert r < 80 and g < 80 and b < 110, (r, g, b)
    light = sum(1 for p in rgb if p.min() > 230) / len(rgb)
    assert 0.3 < light < 0.98, light


NOTE = "camera re-centred <by hand>; instruments & drapes checked, see nursing record 7/B"


def test_pdf_of_a_real_run_keeps_every_column(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """issue 16 item 3: WeasyPrint used to cut the wide tables at the page edge, so the
    PDF's text had neither the operator's note nor the ack delay."""
    if not pdf_available():
        pytest.skip("WeasyPrint (optional extra `pdf`) is not installed")
    kafka = ["--bootstrap", kafka_bootstrap, "--topic-prefix", topic_prefix]

    def note() -> None:
        time.sleep(1.5)  # the procedure is running: the note belongs to it
        rc = main(["note", *kafka, "--procedure", PID, "--operator", "dr-demo", "--text", NOTE])
        assert rc == 0

    ledger, pub, log = _run_procedure(kafka_bootstrap, topic_prefix, tmp_path, during=note)

    pdf = tmp_path / "report.pdf"
    rc = _report(ledger, pub, "--pdf", str(pdf))
    assert rc == 0, log()
    report = build_report(load_verified(ledger, load_public_key(pub)), PID)
    details = [t.detail for t in report.timeline]
    assert NOTE in details, (details, log())
    [stop] = [s for s in report.stops if s.rule == "heartbeat_silence"]
    assert stop.ack is not None and stop.ack.delay_ms is not None

    text = pdf_text(pdf)
    for detail in details:  # the DETAIL column of every timeline row
        assert flat(detail) in text, detail
    assert flat(NOTE) in text
    assert flat(f"{stop.ack.delay_ms:,.1f} ms") in text  # the ACK DELAY column
    assert stop.command_id in text  # the full id, in the safe-stops table
