"""The governance archive's series: promtool-clean, every one written by a real run, and
the names the alert rules use exist."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from monitor.audit.archive.core import Archive, Incoming
from monitor.audit.archive.service import ArchiveMetrics
from monitor.audit.archive.trusted import TrustedKeys
from monitor.audit.checkpoint import generate_key_files, load_private_key
from monitor.audit.ledger import Ledger
from monitor.audit.mirror import checkpoint_value, entry_value

from .promstack import RULES_FILE

pytestmark = pytest.mark.usefixtures("prom_binaries")


def populated(tmp_path: Path) -> ArchiveMetrics:
    """An archive that archived one ledger, refused a forged record and holds records of an
    untrusted origin, with its metrics fed the way the service feeds them."""
    key, pub = generate_key_files(tmp_path / "k")
    led = Ledger.open(tmp_path / "l.sqlite", load_private_key(key), "telesafe/m1")
    led.append_many([{"event": "operator_note", "procedure_id": "P", "data": {}}])
    cp = led.checkpoint()
    body = led.entry_bytes(0)
    led.close()
    assert cp is not None
    keys = tmp_path / "trusted-keys"
    keys.write_text(f"telesafe/m1 {pub.name}\n")
    trusted = TrustedKeys.load(keys)
    m = ArchiveMetrics()
    m.start_time.set(1.0)
    d = tmp_path / "a"
    d.mkdir()
    arch = Archive(
        d,
        trusted,
        on_refusal=lambda r: m.refusal(r, trusted.key_for(r.origin or "") is not None),
        stall_after_s=0.0,
    )
    try:
        records = [
            Incoming("t:0:0", entry_value("telesafe/m1", body)),
            Incoming("t:0:1", checkpoint_value("telesafe/m1", cp.note)),
            Incoming("t:0:2", entry_value("telesafe/m1", body)),  # read again
            Incoming("t:0:3", b'{"event":"x","ledgered":false}'),
            Incoming("t:0:4", entry_value("telesafe/m1", body.replace(b"P", b"Q"))),  # forged
            Incoming("t:0:5", entry_value("telesafe/other", body)),  # untrusted
            Incoming("t:0:6", checkpoint_value("telesafe/m1", cp.note.replace("\n1\n", "\n2\n"))),
        ]
        m.batch(arch.ingest(records))
        m.status(arch)
        m.lag.set(0)
    finally:
        arch.close()
    return m


def test_promtool_check_metrics(tmp_path: Path) -> None:
    m = populated(tmp_path)
    proc = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(m.registry),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout


def test_every_series_is_written_and_the_alerts_use_real_names(tmp_path: Path) -> None:
    m = populated(tmp_path)
    written = {
        f.name: [s for s in f.samples if not s.name.endswith("_created")]
        for f in m.registry.collect()
    }
    assert all(written.values()), [n for n, s in written.items() if not s]
    refused = {
        (s.labels["origin"], s.labels["reason"]) for s in written["telesafe_archive_refused"]
    }
    assert refused >= {
        ("telesafe/m1", "conflict"),
        ("telesafe/m1", "bad_signature"),
        ("untrusted", "unknown_origin"),
    }
    rules = yaml.safe_load(RULES_FILE.read_text())
    exprs = " ".join(
        r["expr"]
        for g in rules["groups"]
        for r in g["rules"]
        if str(r.get("alert", "")).startswith("Archive")
    )
    for series in (
        "telesafe_archive_refused_total",
        "telesafe_archive_stalled",
        "telesafe_archive_untrusted_origins",
    ):
        assert series in exprs
        assert series.removesuffix("_total") in written
