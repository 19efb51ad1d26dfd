"""`telesafe report` on ledgers built from synthetic but realistic engine events.

Entries are produced the way the monitor produces them: engine `Event`s turned into
audit entries by `EntryFactory`, appended to a real `Ledger`, with a signed checkpoint
after the same events the service checkpoints on (`CHECKPOINT_EVENTS`).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.audit.checkpoint import generate_key_files, load_private_key, load_public_key
from monitor.audit.ledger import Ledger
from monitor.audit.store import LedgerError
from monitor.audit.verified import LedgerRefused, load_verified
from monitor.cli import main
from monitor.engine.decisions import Event
from monitor.policy.loader import load_pack_file, rules_dir
from monitor.report import charts, html
from monitor.report import summary as plain
from monitor.report.build import build_report
from monitor.report.model import ProcedureReport, UnknownProcedure, weighted_median
from monitor.service.audit_sink import CHECKPOINT_EVENTS, EntryFactory

ORIGIN = "telesafe.test/report"
PID = "LDN-GIB-0042"
OTHER = "LDN-GIB-0043"
T0 = 1_773_830_400_000_000_000  # UTC ns
MS = 1_000_000
CMD = "5385a9e6-e433-5d4c-b70d-7c27669ca37a"
CMD2 = "7a1c0c1e-0000-5000-8000-000000000002"
DEFAULT = load_pack_file(rules_dir() / "default.yaml")
POLICY = {"pack": DEFAULT.name, "version": DEFAULT.version, "hash": DEFAULT.sha256}


def _ref(rule: str) -> dict[str, Any]:
    return {**POLICY, "rule": rule}


# A link-loss warning as the engine records it (ratios): the report shows percentages.
LOSS_WARNING: dict[str, Any] = {
    "rule": "link_loss",
    "subject": "robot",
    "observed": 0.012,
    "threshold": 0.001,
    "reason": "robot link loss ratio 0.012 above 0.001",
    "policy": _ref("link_loss"),
}


def ev(kind: str, pid: str | None, t_ms: float, **data: Any) -> Event:
    ns = T0 + int(t_ms * MS)
    return Event(kind, pid, 5_000_000_000 + ns - T0, ns, data)


def summary(pid: str, t_ms: float, channel: str, p95: float, count: int = 100) -> Event:
    return ev(
        "latency_summary",
        pid,
        t_ms,
        channel=channel,
        count=count,
        p50=p95 - 3.0,
        p95=p95,
        p99=p95 + 1.5,
        max=p95 + 2.0,
    )


def procedure_events(pid: str = PID, t0_ms: float = 0.0) -> list[Event]:
    """A 12 s procedure: warnings, a tool-speed warning, a control-latency safe-stop that is
    re-sent 12 times, escalated, and acknowledged after 1223.456 ms, a rejected then an
    accepted re-arm, an operator note, heartbeat gaps, a link-loss warning, and a
    procedure_end with per-site counters."""
    t = t0_ms
    out = [
        ev("procedure_opened", pid, t, by="procedure_start", site="robot", policy=POLICY),
        ev(
            "procedure_started",
            pid,
            t,
            site="robot",
            surgeon_id="surgeon-ldn-07",
            robot={"model": "Toumai", "serial": "TM-0042"},
            arms=["psm1", "psm2", "ecm"],
            policy_requested=None,
            policy=POLICY,
        ),
        ev(
            "clock_state",
            pid,
            t,
            site="robot",
            before=None,
            source="ptp",
            offset_ns=-12000,
            max_error_ns=100000,
        ),
        ev("state_changed", pid, t + 40, before="pending", after="armed"),
    ]
    control = [50.0, 52.0, 54.0, 310.0, 330.0, 51.0]
    video = [90.0, 91.0, 95.0, 96.0, 97.0, 98.0]
    for i in range(6):
        out.append(summary(pid, t + 1000 * (i + 1), "control", control[i]))
        out.append(summary(pid, t + 1000 * (i + 1), "video", video[i], count=30))
    out += [
        ev("heartbeat_gap", pid, t + 1500, site="console", gap_ms=140.5),
        ev(
            "warning_raised",
            pid,
            t + 2100,
            rule="tool_speed",
            subject="psm2",
            observed={"arm": "psm2", "speed_mm_s": 142.0},
            threshold=100,
            reason="psm2 tool-tip speed 142.0 mm/s above 100 mm/s",
            policy=_ref("tool_speed"),
        ),
        ev("state_changed", pid, t + 2100, before="armed", after="warning"),
        ev(
            "warning_raised",
            pid,
            t + 3900,
            rule="control_latency",
            subject="control",
            observed=310.0,
            threshold=100,
            reason="control latency p95 310 ms above 100 ms",
            policy=_ref("control_latency"),
        ),
        ev("warning_cleared", pid, t + 4100, rule="tool_speed", subject="psm2", duration_ms=2000.0),
        ev(
            "safe_stop_issued",
            pid,
            t + 4900,
            rule="control_latency",
            subject="control",
            command_id=CMD,
            observed=330.0,
            threshold=300,
            reason="control latency p95 330 ms above 300 ms for 1000 ms (limit: held 1000 ms)",
            episode=1,
            policy=_ref("control_latency"),
        ),
        ev("state_changed", pid, t + 4900, before="warning", after="safe_stop_latched"),
    ]
    for n in range(1, 13):
        out.append(ev("safe_stop_resent", pid, t + 4900 + 100 * n, command_id=CMD, resend=n))
        if n == 5:
            out.append(
                ev(
                    "safe_stop_escalated",
                    pid,
                    t + 5400,
                    command_id=CMD,
                    reason="not acknowledged after 5 re-sends",
                )
            )
            out.append(
                ev(
                    "breach_while_latched",
                    pid,
                    t + 5400,
                    rule="heartbeat_silence",
                    subject="robot",
                    observed=320.0,
                    threshold=300,
                    reason="robot heartbeat silent for 320 ms",
                    command_id=CMD,
                )
            )
    out += [
        ev("heartbeat_gap", pid, t + 6100, site="robot", gap_ms=612.25),
        ev(
            "safe_stop_acknowledged",
            pid,
            t + 6123.456,
            command_id=CMD,
            result="safe_stopped",
            delay_ms=1223.456,
            resends=12,
            robot_at=T0 + int((t + 6100) * MS),
        ),
        ev("state_changed", pid, t + 6123.456, before="safe_stop_latched", after="safe_stopped"),
        ev(
            "rearm_rejected",
            pid,
            t + 6200,
            operator_id="dr-who",
            reason="try again",
            rejected_because=["operator 'dr-who' is not authorised to re-arm"],
        ),
        ev(
            "operator_note",
            pid,
            t + 6500,
            operator_id="dr-demo",
            text="video feed checked <ok> & instruments clear",
            known_procedure=True,
        ),
        ev(
            "rearm_accepted",
            pid,
            t + 8000,
            operator_id="dr-demo",
            reason="link restored; surgeon confirmed view",
            command_id=CMD2,
            cleared_command_id=CMD,
            cleared_rule="control_latency",
        ),
        ev("state_changed", pid, t + 8000, before="safe_stopped", after="armed"),
        ev(
            "warning_raised",
            pid,
            t + 9000,
            rule="forbidden_zone",
            subject="psm1:ureter",
            observed={"arm": "psm1", "p": [1.0, 2.0, -3.0], "zone": "ureter", "distance_mm": 3.2},
            threshold={"zone": "ureter", "warn_mm": 5},
            reason="psm1 tool tip 3.2 mm from forbidden zone 'ureter'",
            policy=_ref("forbidden_zone"),
        ),
        ev("warning_raised", pid, t + 10000, **LOSS_WARNING),
        ev(
            "procedure_ended",
            pid,
            t + 12000,
            site="robot",
            reason="completed",
            sites={
                "console": {
                    "received": 1200,
                    "duplicates": 2,
                    "lost": 1,
                    "stale": 0,
                    "rejected": 3,
                    "heartbeat_gaps": 1,
                    "max_heartbeat_gap_ms": 140.5,
                },
                "robot": {
                    "received": 9000,
                    "duplicates": 0,
                    "lost": 4,
                    "stale": 5,
                    "rejected": 0,
                    "heartbeat_gaps": 1,
                    "max_heartbeat_gap_ms": 612.25,
                },
            },
        ),
        ev("state_changed", pid, t + 12000, before="armed", after="ended"),
        ev("procedure_closed", pid, t + 12000, final_state="ended"),
    ]
    return out


@dataclass
class Built:
    ledger: Path
    key: Path
    pub: Path
    factory: EntryFactory


def _append(led: Ledger, factory: EntryFactory, events: list[Event]) -> None:
    for e in events:
        led.append_many([factory.from_event(e)])
        if e.kind in CHECKPOINT_EVENTS:
            led.checkpoint()


@pytest.fixture()
def built(tmp_path: Path) -> Built:
    key, pub = generate_key_files(tmp_path / "ledger.key")
    factory = EntryFactory("telesafe-test", "0.1.0")
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path, load_private_key(key), ORIGIN) as led:
        led.append_many(
            [
                factory.monitor_event("monitor_started", T0 - 10 * MS, 0, operators=["dr-demo"]),
                factory.monitor_event("policy_loaded", T0 - 10 * MS, 0, **POLICY),
            ]
        )
        led.checkpoint()
        _append(led, factory, procedure_events())
        # A second procedure afterwards, so the covering checkpoint is not simply the last.
        _append(led, factory, procedure_events(OTHER, 20_000)[:6])
        led.checkpoint()
    return Built(path, key, pub, factory)


def _report(b: Built, pid: str = PID, **kw: Any) -> ProcedureReport:
    vl = load_verified(b.ledger, load_public_key(b.pub))
    return build_report(vl, pid, **kw)


def _cli(b: Built, *extra: str, pid: str = PID) -> int:
    return main(
        ["report", "--ledger", str(b.ledger), "--pubkey", str(b.pub), "--procedure", pid, *extra]
    )


# --- the model --------------------------------------------------------------------------


def test_facts_stop_ack_rearm_and_policy(built: Built) -> None:
    r = _report(built)
    assert r.verified
    assert (r.surgeon_id, r.robot_model, r.robot_serial) == ("surgeon-ldn-07", "Toumai", "TM-0042")
    assert r.arms == ["psm1", "psm2", "ecm"]
    assert r.end_reason == "completed"
    assert r.duration_s == pytest.approx(12.0)
    assert r.monitor_ids == ["telesafe-test"]
    assert r.policy is not None and r.policy.hash == DEFAULT.sha256
    assert r.policy.source is not None and r.policy.source.endswith("default.yaml")
    [stop] = r.stops
    assert stop.rule == "control_latency" and stop.command_id == CMD
    assert stop.observed == 330.0 and stop.threshold == 300
    assert stop.resends == 12
    assert stop.escalations == ["not acknowledged after 5 re-sends"]
    assert stop.breaches_while_latched == ["robot heartbeat silent for 320 ms"]
    assert stop.ack is not None and stop.ack.delay_ms == 1223.456
    assert stop.ack.result == "safe_stopped"
    assert stop.rearm is not None and stop.rearm.operator_id == "dr-demo"


def test_latency_statistics_and_thresholds(built: Built) -> None:
    r = _report(built)
    control, video = r.channels["control"], r.channels["video"]
    assert control.windows == 6 and control.samples == 600
    # Equal weights: the lower median of [50, 51, 52, 54, 310, 330].
    assert control.p95 == 52.0
    assert control.worst_p95 == 330.0
    assert control.max == 332.0
    assert control.p50 == 49.0 and control.p99 == 53.5
    assert video.p95 == 95.0 and video.samples == 180
    # Thresholds come from the pack whose content hash the ledger recorded.
    assert (control.warn_ms, control.stop_ms) == (100.0, 300.0)
    assert (video.warn_ms, video.stop_ms) == (150.0, 400.0)


def test_heartbeats_counters_and_excursions(built: Built) -> None:
    r = _report(built)
    assert r.sites["robot"].gap_count == 1 and r.sites["robot"].max_gap_ms == 612.25
    assert r.sites["console"].max_gap_ms == 140.5
    assert r.sites["robot"].counters is not None
    assert r.sites["robot"].counters["stale"] == 5
    assert r.sites["console"].counters is not None
    assert r.sites["console"].counters["rejected"] == 3
    assert [(x.rule, x.subject) for x in r.excursions] == [
        ("tool_speed", "psm2"),
        ("forbidden_zone", "psm1:ureter"),
    ]


def test_resends_fold_after_a_few_rows(built: Built) -> None:
    r = _report(built)
    rows = [t for t in r.timeline if t.event == "safe_stop_resent"]
    # 1-5, then the escalation, then 6-12: the second run of seven is folded to 4 + 1.
    assert [t.folded for t in rows] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 3]
    assert "re-sends 10–12" in rows[-1].detail
    assert all(t.rule == "control_latency" for t in rows)


def test_covering_checkpoint_and_entry_range(built: Built) -> None:
    r = _report(built)
    assert r.first_index == 2  # after monitor_started and policy_loaded
    assert r.entry_count == len(procedure_events())
    assert r.last_index == r.first_index + r.entry_count - 1
    cp = r.checkpoint
    assert cp is not None and cp.signature_ok
    # procedure_closed is a checkpoint event: the smallest checkpoint covering it has
    # exactly last_index + 1 entries, although the ledger goes on.
    assert cp.size == r.last_index + 1
    assert r.latest_checkpoint_size > cp.size
    with sqlite3.connect(built.ledger) as conn:
        sizes = [s for (s,) in conn.execute("SELECT size FROM checkpoints ORDER BY size")]
    assert cp.size == min(s for s in sizes if s > r.last_index)


def test_unknown_procedure_lists_the_known_ones(built: Built) -> None:
    with pytest.raises(UnknownProcedure) as exc:
        _report(built, "NOPE-1")
    assert {p.procedure_id for p in exc.value.known} == {PID, OTHER}
    assert PID in str(exc.value) and OTHER in str(exc.value)


def test_reused_procedure_id_reports_latest_run_by_default(tmp_path: Path) -> None:
    key, pub = generate_key_files(tmp_path / "k")
    factory = EntryFactory("telesafe-test", "0.1.0")
    with Ledger.open(tmp_path / "l.db", load_private_key(key), ORIGIN) as led:
        _append(led, factory, procedure_events())
        _append(led, factory, procedure_events(t0_ms=60_000)[:5])
        led.checkpoint()
    vl = load_verified(tmp_path / "l.db", load_public_key(pub))
    latest = build_report(vl, PID)
    first = build_report(vl, PID, run=1)
    assert (latest.run, latest.runs, first.run) == (2, 2, 1)
    assert latest.stops == [] and len(first.stops) == 1
    assert any("opened 2 times" in n for n in latest.notes)


def test_entries_after_the_last_checkpoint_are_not_used(built: Built) -> None:
    with Ledger.open(built.ledger, load_private_key(built.key), ORIGIN) as led:
        led.append_many(
            [
                built.factory.from_event(
                    ev("operator_note", PID, 30_000, operator_id="x", text="late, unsigned")
                )
            ]
        )
    r = _report(built)
    assert r.uncovered_entries == 1
    assert all("late, unsigned" not in t.detail for t in r.timeline)
    assert any("not signed yet" in n for n in r.notes)


def test_weighted_median() -> None:
    assert weighted_median([]) is None
    assert weighted_median([(1.0, 1), (2.0, 1), (3.0, 1)]) == 2.0
    assert weighted_median([(1.0, 1), (100.0, 10)]) == 100.0
    assert weighted_median([(5.0, 0), (7.0, 0)]) == 5.0


# --- refusal ----------------------------------------------------------------------------


def test_tampered_ledger_is_refused_naming_the_entry(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ack = _report(built).stops[0].ack
    assert ack is not None
    idx = ack.index
    conn = sqlite3.connect(built.ledger)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute(
        "UPDATE entries SET body = replace(body, '1223.456', '23.456') WHERE idx = ?", (idx,)
    )
    conn.commit()
    conn.close()
    with pytest.raises(LedgerRefused, match=f"entry {idx}: body does not match"):
        _report(built)
    out = tmp_path / "r.html"
    assert _cli(built, "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert f"FAILED: entry {idx}:" in err and "refusing to report" in err
    assert not out.exists()


def test_ledger_trust_is_an_audit_concern() -> None:
    """Reading a verified ledger does not import the report (no upward import), and its
    refusal is a ledger error."""
    assert issubclass(LedgerRefused, LedgerError)
    code = (
        "import sys, monitor.audit.verified; "
        "print([m for m in sys.modules if m.startswith('monitor.report')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_wrong_key_is_refused(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, other_pub = generate_key_files(tmp_path / "other.key")
    rc = main(
        [
            "report",
            "--ledger",
            str(built.ledger),
            "--pubkey",
            str(other_pub),
            "--procedure",
            PID,
            "--out",
            str(tmp_path / "r.html"),
        ]
    )
    assert rc == 1
    assert "not signed by the trusted key" in capsys.readouterr().err


# --- charts and HTML --------------------------------------------------------------------


def test_charts_are_inline_svg(built: Built) -> None:
    r = _report(built)
    drawn = charts.all_charts(r)
    assert set(drawn) == {"timeline", "latency", "heartbeat"}
    for name, svg in drawn.items():
        assert svg is not None, name
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
        root = ET.fromstring(svg)  # well-formed XML
        assert root.tag.endswith("svg") and "viewBox" in root.attrib
        assert "width" not in root.attrib  # sized by the page's CSS
    # Threshold labels are real text (svg.fonttype none), so they are searchable.
    assert "safe-stop 300 ms" in (drawn["latency"] or "")


def test_cli_writes_self_contained_html(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    assert _cli(built, "--out", str(out)) == 0
    assert "covered by checkpoint size" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    # Self-contained: no scripts, stylesheets, images or fonts from elsewhere.
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", page)  # only url(#clip) ids
    assert page.count("<svg") == 3
    for figure in (
        "Ledger verified",
        PID,
        "surgeon-ldn-07",
        "Toumai",
        "TM-0042",
        DEFAULT.sha256,
        "control_latency",
        CMD,
        "1,223.5 ms",
        "52.0 ms",
        "95.0 ms",
        "dr-demo",
        "link restored; surgeon confirmed view",
        "not authorised to re-arm",
        "tool_speed",
        "forbidden_zone",
        "612.2 ms",
        "Escalated".lower(),
    ):
        assert figure in page, figure
    r = _report(built)
    assert r.checkpoint is not None
    assert f"size <b>{r.checkpoint.size}</b>" in page
    assert r.checkpoint.root_hex in page
    assert f"entries <b>{r.first_index}–{r.last_index}</b>" in page
    # Ledger text is escaped, never interpreted as markup.
    assert "video feed checked &lt;ok&gt; &amp; instruments clear" in page


def test_default_output_name(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _cli(built) == 0
    assert (tmp_path / f"report-{PID}.html").exists()


def test_unknown_procedure_exit_1(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(built, pid="LDN-GIB-9999") == 1
    err = capsys.readouterr().err
    assert "LDN-GIB-9999" in err and PID in err and OTHER in err


def test_bad_arguments_exit_2(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", "--ledger", str(built.ledger), "--pubkey", str(built.pub)])
    assert exc.value.code == 2
    assert "--procedure" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _cli(built, "--run", "0")
    assert exc.value.code == 2
    assert (
        main(
            [
                "report",
                "--ledger",
                str(tmp_path / "missing.db"),
                "--pubkey",
                str(built.pub),
                "--procedure",
                PID,
                "--out",
                str(tmp_path / "r.html"),
            ]
        )
        == 2
    )
    assert "no such ledger" in capsys.readouterr().err
    junk = tmp_path / "junk.pub"
    junk.write_bytes(b"not a key at all")
    assert (
        main(
            [
                "report",
                "--ledger",
                str(built.ledger),
                "--pubkey",
                str(junk),
                "--procedure",
                PID,
                "--out",
                str(tmp_path / "r.html"),
            ]
        )
        == 2
    )
    assert "junk.pub" in capsys.readouterr().err
    assert _cli(built, "--out", str(tmp_path / "no" / "such" / "dir.html")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _cli(built, "--run", "3", "--out", str(tmp_path / "r.html")) == 2
    assert "run(s)" in capsys.readouterr().err


def test_pdf_without_weasyprint_is_a_clear_error(
    built: Built,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(html, "pdf_available", lambda: False)
    out, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    assert _cli(built, "--out", str(out), "--pdf", str(pdf)) == 2
    assert "telesafe[pdf]" in capsys.readouterr().err
    assert not out.exists() and not pdf.exists()


def test_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--ledger", "--pubkey", "--procedure", "--out", "--pdf", "exit codes"):
        assert flag in text


def test_pdf_when_weasyprint_is_installed(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not html.pdf_available():
        pytest.skip("WeasyPrint (optional extra `pdf`) is not installed")
    monkeypatch.chdir(tmp_path)
    pdf = tmp_path / "r.pdf"
    assert _cli(built, "--pdf", str(pdf)) == 0
    assert pdf.read_bytes().startswith(b"%PDF-") and pdf.stat().st_size > 20_000
    assert not (tmp_path / f"report-{PID}.html").exists()  # only the PDF was asked for


def _poppler(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        pytest.skip(f"{tool} (poppler-utils) is not installed: apt-get install poppler-utils")
    return exe


def pdf_text(pdf: Path, first: int | None = None, last: int | None = None) -> str:
    """The PDF's text layer (pdftotext -raw: content-stream order, so a wrapped table cell
    stays in one piece), all whitespace removed: line breaks inside cells do not matter."""
    pages = [*(["-f", str(first)] if first else []), *(["-l", str(last)] if last else [])]
    out = subprocess.run(
        [_poppler("pdftotext"), "-raw", *pages, str(pdf), "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return flat(out)


def flat(text: str) -> str:
    return "".join(text.split())


def test_pdf_keeps_every_column(built: Built, tmp_path: Path) -> None:
    """The PDF's text holds every table column: each timeline DETAIL, the note, the ack
    delay, the full command id, the re-arm; the timeline is on landscape pages."""
    if not html.pdf_available():
        pytest.skip("WeasyPrint (optional extra `pdf`) is not installed")
    pdf = tmp_path / "r.pdf"
    assert _cli(built, "--pdf", str(pdf)) == 0
    text = pdf_text(pdf)
    r = _report(built)
    for t in r.timeline:
        assert flat(t.detail) in text, t.detail
    assert flat("video feed checked <ok> & instruments clear") in text
    assert flat("1,223.5 ms") in text  # the ack delay column of the safe-stops table
    assert CMD in text  # the full command id (reason · command id column)
    assert flat("link restored; surgeon confirmed view") in text  # the re-arm column
    for header in (
        "COMMAND",
        "DETAIL",
        "ACK DELAY",
        "RE-ARM",
        "SAFE-STOP",
        "LOST (SEQ GAPS)",
        "REJECTED (DEAD-LETTERED)",
        "LONGEST GAP",
    ):
        assert flat(header) in text, header
    sizes = subprocess.run(
        [_poppler("pdfinfo"), "-f", "1", "-l", "99", str(pdf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    pages = re.findall(r"Page\s+\d+ size:\s+([\d.]+) x ([\d.]+)", sizes)
    landscape = [i + 1 for i, (w, h) in enumerate(pages) if float(w) > float(h)]
    assert landscape and 1 not in landscape, pages
    # The timeline table starts on the first landscape page.
    assert flat("Timeline") in pdf_text(pdf, landscape[0], landscape[0])
    # Page 1 carries the key figures and the plain-language summary, not only cards.
    page1 = pdf_text(pdf, 1, 1)
    assert flat("In plain words") in page1
    assert flat(plain.summary(r)[0]) in page1


# --- what a governance reader needs ------------------------------------------------------


def test_header_names_this_procedures_sites_and_robot(built: Built) -> None:
    page = html.render_html(_report(built))
    header = page[page.index('<header class="top">') : page.index("</header>")]
    assert "console ↔ robot (Toumai TM-0042)" in header
    assert "London" not in page and "Gibraltar" not in page


def test_loss_ratios_read_as_percentages(built: Built) -> None:
    r = _report(built)
    [loss] = [t for t in r.timeline if t.rule == "link_loss"]
    assert loss.detail == "robot link loss 1.2 % above 0.1 %"
    page = html.render_html(r)
    row = page[page.index(loss.detail) - 900 : page.index(loss.detail)]
    assert ">1.2 %</td>" in row and ">0.1 %</td>" in row
    assert "0.012" not in page


def test_charts_shade_only_latches_of_their_own_rules(built: Built) -> None:
    r = _report(built)  # one safe-stop, rule control_latency
    assert charts.latched_spans(r, charts.CHART_RULES["control"])
    assert not charts.latched_spans(r, charts.CHART_RULES["video"])
    assert not charts.latched_spans(r, charts.CHART_RULES["heartbeat"])
    # The legend entry (real SVG text) appears for the control axes only.
    assert (charts.latency_chart(r) or "").count("safe-stop latched") == 1
    assert "safe-stop latched" not in (charts.heartbeat_chart(r) or "")


def test_plain_summary_and_glossary(built: Built) -> None:
    r = _report(built)
    lines = plain.summary(r)
    text = " ".join(lines)
    assert f"Procedure {PID} ran for 12.0 s" in lines[0]
    assert "the delay from the surgeon's hands to the robot was too long" in text
    assert "after 1,223.5 ms, after 12 re-sends" in text
    assert "dr-demo re-armed the procedure" in text
    assert "4 warning(s)" in text
    terms = {g.term for g in plain.glossary(r)}
    assert {"p95", "Latched", "Re-send", "Dead-lettered", "Checkpoint"} <= terms
    # The pack is known: the glossary quotes its re-send interval and escalation count.
    resend = next(g for g in plain.glossary(r) if g.term == "Re-send")
    assert "every 100 ms" in resend.meaning and "after 5 re-sends" in resend.meaning
    page = html.render_html(r)
    assert 'id="glossary"' in page and "In plain words" in page


def test_pack_path_relative_to_its_pack_directory(built: Built, tmp_path: Path) -> None:
    r = _report(built)
    assert r.policy is not None
    assert (r.policy.source, r.policy.source_dir) == ("default.yaml", "rules/")
    assert str(rules_dir()) not in html.render_html(r)
    # A pack found in a --rules directory is named relative to that directory.
    extra = tmp_path / "packs"
    extra.mkdir()
    shutil.copy(rules_dir() / "default.yaml", extra / "site-default.yaml")
    r2 = _report(built, rules_dirs=[extra])
    assert r2.policy is not None
    assert (r2.policy.source, r2.policy.source_dir) == ("site-default.yaml", f"{extra}/")


def test_refused_operator_requests_are_listed_as_security_events(tmp_path: Path) -> None:
    """Issue 19: the report's audit section lists the security events of the procedure;
    what a refused request claimed is shown as a claim, escaped."""
    key, pub = generate_key_files(tmp_path / "k")
    factory = EntryFactory("telesafe-test", "0.1.0")
    events = procedure_events()
    forged = ev(
        "operator_request_refused",
        PID,
        9_000,
        source="telesafe.operator:1:42",
        reason="operator_id 'dr-b' does not match signing key 'dr-a'",
        reason_class="operator_key_mismatch",
        claimed={"type": "rearm_request", "operator_id": "<b>dr-b</b>", "procedure_id": PID},
        key_id_presented="dr-a",
        signed=True,
        value_bytes=310,
    )
    with Ledger.open(tmp_path / "l.db", load_private_key(key), ORIGIN) as led:
        _append(led, factory, [*events[:8], forged, *events[8:]])
        led.checkpoint()
    r = build_report(load_verified(tmp_path / "l.db", load_public_key(pub)), PID)
    (s,) = r.security_events
    assert (s.reason_class, s.claimed_operator, s.key_id_presented, s.source) == (
        "operator_key_mismatch",
        "<b>dr-b</b>",
        "dr-a",
        "telesafe.operator:1:42",
    )
    assert any("security event" in line for line in plain.summary(r))
    page = html.render_html(r)
    assert "&lt;b&gt;dr-b&lt;/b&gt;" in page and "<b>dr-b</b>" not in page
    assert "operator_key_mismatch" in page and "Security events" in page


def test_no_security_events_says_so(built: Built) -> None:
    r = _report(built)
    assert r.security_events == []
    assert "no operator request for this procedure was refused" in html.render_html(r)
