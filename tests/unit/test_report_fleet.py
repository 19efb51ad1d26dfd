"""`telesafe report` across instances, on ledgers written the way three monitors write
them during a failover: m1 starts procedure P, latches and gets an acknowledged safe-stop,
dies; m2 takes P over with the latch restored from telesafe.state, re-audits the input
records m1 had not committed (same `source`), is re-armed, stops again, and closes P; m3
supervises another procedure. Entries are `EntryFactory` entries of engine `Event`s."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.audit.archive.core import Archive
from monitor.audit.archive.trusted import TrustedKeys
from monitor.audit.checkpoint import generate_key_files, load_private_key, load_public_key
from monitor.audit.ledger import Ledger
from monitor.audit.verified import VerifiedLedger, load_verified
from monitor.cli import main
from monitor.engine.decisions import Event
from monitor.report.build import build_report
from monitor.report.fleet import HistoryHole, build_fleet_report
from monitor.report.html import render_html
from monitor.report.model import ProcedureReport, ReportError
from monitor.service.audit_sink import CHECKPOINT_EVENTS, EntryFactory

PID, OTHER = "LDN-GIB-0007", "LDN-GIB-0008"
T0 = 1_773_830_400_000_000_000
MS = 1_000_000
CMD1 = "11111111-0000-5000-8000-000000000001"
CMD2 = "22222222-0000-5000-8000-000000000002"
POLICY = {"pack": "default", "version": "1.0.0", "hash": "ab" * 32}
ROBOT = "t.telesafe.telemetry.robot"


def ev(kind: str, pid: str | None, t_ms: float, **data: Any) -> Event:
    ns = T0 + int(t_ms * MS)
    return Event(kind, pid, ns - T0, ns, data)


def stop(cid: str, t_ms: float, rule: str = "heartbeat_silence") -> Event:
    return ev(
        "safe_stop_issued",
        PID,
        t_ms,
        command_id=cid,
        rule=rule,
        subject="robot",
        observed=301.0,
        threshold=300,
        reason="robot heartbeat silent for 301 ms",
        episode=1,
    )


def ack(cid: str, t_ms: float) -> Event:
    return ev(
        "safe_stop_acknowledged",
        PID,
        t_ms,
        command_id=cid,
        result="safe_stopped",
        delay_ms=21.5,
        resends=1,
        robot_at=T0,
    )


# (event, source offset or None): what each monitor recorded.
M1 = [
    (ev("procedure_opened", PID, 0, by="procedure_start", site="robot", policy=POLICY), 1),
    (
        ev(
            "procedure_started",
            PID,
            0,
            site="robot",
            surgeon_id="s-1",
            policy=POLICY,
            robot={"model": "Toumai", "serial": "TM-1"},
            arms=["psm1"],
        ),
        1,
    ),
    (ev("state_changed", PID, 50, before="pending", after="armed"), None),
    (stop(CMD1, 4000), None),
    (ev("safe_stop_resent", PID, 4100, command_id=CMD1, resend=1), None),
    (ack(CMD1, 4120), 40),
    (ev("state_changed", PID, 4120, before="armed", after="safe_stop_latched"), None),
    (ev("operator_note", PID, 6000, operator_id="dr-a", text="checking the robot"), 60),
    (ev("heartbeat_gap", PID, 7000, site="console", gap_ms=120.0), 70),
]
# m2 re-reads offsets 60 and 70 (m1 had not committed them): the same entries again.
M2 = [
    (ev("procedure_opened", PID, 15000, by="latch_state", site=None, policy=POLICY), None),
    (
        ev(
            "latch_restored",
            PID,
            15000,
            command_id=CMD1,
            rule="heartbeat_silence",
            ack_result="safe_stopped",
            previous_monitor="m1",
            ended=False,
        ),
        None,
    ),
    (ev("operator_note", PID, 15010, operator_id="dr-a", text="checking the robot"), 60),
    (ev("heartbeat_gap", PID, 15011, site="console", gap_ms=120.0), 70),
    (
        ev(
            "rearm_accepted",
            PID,
            17000,
            operator_id="dr-a",
            reason="robot checked",
            cleared_command_id=CMD1,
            cleared_rule="heartbeat_silence",
            request_id="r1",
        ),
        80,
    ),
    (ev("state_changed", PID, 17000, before="safe_stop_latched", after="armed"), None),
    (stop(CMD2, 24000), None),
    (ack(CMD2, 24030), 240),
    (ev("procedure_ended", PID, 28000, site="robot", reason="completed"), 280),
    (ev("procedure_closed", PID, 28000, final_state="ended"), None),
]
M3 = [
    (ev("procedure_opened", OTHER, 1000, by="procedure_start", site="robot", policy=POLICY), 5),
    (ev("procedure_started", OTHER, 1000, site="robot", surgeon_id="s-2", policy=POLICY), 5),
]


@dataclass
class Fleet:
    ledgers: list[Path]
    pubs: list[Path]

    def verified(self, *which: int) -> list[VerifiedLedger]:
        ids = which or range(len(self.ledgers))
        return [load_verified(self.ledgers[i], load_public_key(self.pubs[i])) for i in ids]


def write(
    path: Path, monitor: str, events: list[tuple[Event, int | None]], die: bool = False
) -> Path:
    key, pub = generate_key_files(path.with_suffix(".key"))
    factory = EntryFactory(monitor, "0.1.0")
    with Ledger.open(path, load_private_key(key), f"telesafe/{monitor}") as led:
        led.append_many([factory.monitor_event("monitor_started", T0 - 10 * MS, 0)])
        led.checkpoint()
        places: dict[int, int] = {}
        for e, off in events:
            src = None if off is None else f"{ROBOT}:0:{off}"
            n = places[off] = places.get(off, -1) + 1 if off is not None else 0
            led.append_many([factory.from_event(e, source=src, source_n=n)])
            if e.kind in CHECKPOINT_EVENTS:
                led.checkpoint()
        led.checkpoint()
        if die:  # written, never covered by a checkpoint: not evidence yet
            led.append_many(
                [factory.from_event(ev("heartbeat_gap", PID, 7500, site="robot", gap_ms=99.0))]
            )
    return pub


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    paths = [tmp_path / f"m{i}.sqlite" for i in (1, 2, 3)]
    pubs = [
        write(paths[0], "m1", M1, die=True),
        write(paths[1], "m2", M2),
        write(paths[2], "m3", M3),
    ]
    return Fleet(paths, pubs)


def test_one_report_across_three_ledgers(fleet: Fleet) -> None:
    r = build_fleet_report(fleet.verified(), PID, source="3 ledgers")
    assert r.multi and r.evidence_ok and not r.holes
    assert r.entry_count == len(M1) + len(M2) - 2  # the two re-audited inputs shown once
    assert r.duplicates == 2
    assert [i.label for i in r.instances] == ["m1", "m2", "m3"]
    assert [(i.entries, i.duplicates) for i in r.instances] == [(9, 0), (8, 2), (0, 0)]
    assert r.instances[2].checkpoint is None and r.instances[0].checkpoint is not None
    assert r.monitor_ids == ["m1", "m2"]
    # End to end: opened by m1 from procedure_start, closed by m2.
    assert r.opened_by == "procedure_start" and r.final_state == "ended"
    assert r.surgeon_id == "s-1" and r.end_reason == "completed"
    # Both stops, attributed, each with its ack, the first re-armed through m2.
    assert [(s.command_id, s.instance) for s in r.stops] == [(CMD1, "m1"), (CMD2, "m2")]
    assert [s.ack.instance for s in r.stops if s.ack] == ["m1", "m2"]
    first = r.stops[0]
    assert first.rearm is not None and first.rearm.instance == "m2"
    assert first.resends == 1
    # Inclusion proofs of every issue and acknowledgement, in the recorder's ledger.
    assert [(p.what, p.instance, p.verified) for p in r.proofs] == [
        ("issued", "m1", True),
        ("acknowledged", "m1", True),
        ("issued", "m2", True),
        ("acknowledged", "m2", True),
    ]
    # The hand-over.
    (h,) = r.handovers
    assert (h.from_instance, h.to_instance, h.opened_by) == ("m1", "m2", "latch_state")
    assert not h.released and not h.restart
    assert h.latch_before == CMD1 and h.latch_carried is True
    assert h.gap_s == pytest.approx(8.0)  # m1's last entry at 7 s, m2 opened at 15 s
    rows = [(t.event, t.instance) for t in r.timeline]
    i = rows.index(("handover", "m2"))
    assert rows[i + 1] == ("procedure_opened", "m2")
    assert all(t.instance in ("m1", "m2") for t in r.timeline)
    notes = " ".join(r.notes)
    assert "different decisions" not in notes
    assert "recorded twice for the same input record" in notes and "2 of m2" in notes
    assert "1 entry after its latest signed checkpoint" in notes  # m1's uncovered entry


def test_order_of_the_ledgers_does_not_matter(fleet: Fleet) -> None:
    a = build_fleet_report(fleet.verified(0, 1, 2), PID)
    b = build_fleet_report(fleet.verified(2, 1, 0), PID)
    assert [(t.event, t.instance, t.index) for t in a.timeline] == [
        (t.event, t.instance, t.index) for t in b.timeline
    ]
    assert a.entry_count == b.entry_count and a.duplicates == b.duplicates


def test_a_missing_ledger_is_a_hole_and_refused(fleet: Fleet) -> None:
    with pytest.raises(HistoryHole) as err:
        build_fleet_report(fleet.verified(1, 2), PID)
    text = str(err.value)
    assert "m2 took" in text and "latch" in text and "issued by monitor m1" in text
    r = build_fleet_report(fleet.verified(1, 2), PID, allow_holes=True)
    assert len(r.holes) == 2
    assert "hole the ledgers given cannot explain" in render_html(r)


def test_a_latch_not_carried_across_is_flagged(tmp_path: Path) -> None:
    m2 = [
        (ev("procedure_opened", PID, 15000, by="heartbeat", site="robot", policy=POLICY), None),
        *M2[4:],
    ]
    paths = [tmp_path / "m1.sqlite", tmp_path / "m2.sqlite"]
    pubs = [write(paths[0], "m1", M1), write(paths[1], "m2", m2)]
    r = build_fleet_report(Fleet(paths, pubs).verified(), PID)
    (h,) = r.handovers
    assert h.latch_carried is False
    assert any("LATCH NOT CARRIED ACROSS" in n for n in r.notes)


def test_divergent_decisions_on_one_input_are_both_shown(tmp_path: Path) -> None:
    m2 = [
        *M2[:2],
        (
            ev(
                "warning_raised",
                PID,
                15010,
                rule="control_latency",
                subject="control",
                observed=1,
                threshold=1,
                reason="x",
            ),
            60,
        ),
        *M2[4:],
    ]
    paths = [tmp_path / "m1.sqlite", tmp_path / "m2.sqlite"]
    pubs = [write(paths[0], "m1", M1), write(paths[1], "m2", m2)]
    r = build_fleet_report(Fleet(paths, pubs).verified(), PID)
    assert r.duplicates == 0
    assert any("1 input record(s) led two instances to different decisions" in n for n in r.notes)


def test_same_origin_twice_and_unknown_procedure(fleet: Fleet) -> None:
    vl = fleet.verified(0)[0]
    with pytest.raises(ReportError, match="given twice"):
        build_fleet_report([vl, vl], PID)
    with pytest.raises(ReportError, match="not in the verified ledger") as err:
        build_fleet_report(fleet.verified(), "NOPE")
    assert PID in str(err.value) and OTHER in str(err.value)


def test_one_ledger_is_still_the_single_ledger_report(fleet: Fleet) -> None:
    (vl,) = fleet.verified(0)
    single = build_report(vl, PID)
    assert not single.multi and not single.handovers
    html = render_html(single)
    assert "Supervision across instances" not in html and "Inclusion proofs" not in html


def test_html_marks_instances_handover_and_proofs(fleet: Fleet) -> None:
    r = build_fleet_report(fleet.verified(), PID, source="3 ledgers")
    html = render_html(r)
    for needle in (
        "3 ledgers verified",
        "Supervision across instances",
        "Hand-over at",
        "carried across",
        "Inclusion proofs",
        '<span class="inst">m2</span>',
        "telesafe-inclusion-proof/v1",
        "Signed checkpoint covering the entries of m1",
        "supervision passed from m1 to m2",
    ):
        assert needle in html, needle


# --- the command ----------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    return main(["report", "--procedure", PID, *argv])


def _ledger_args(fleet: Fleet) -> list[str]:
    out: list[str] = []
    for led, pub in zip(fleet.ledgers, fleet.pubs, strict=True):
        out += ["--ledger", str(led), "--pubkey", str(pub)]
    return out


def verify_proof(proof: Path, pub: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "audit",
            "verify-proof",
            str(proof),
            "--pubkey",
            str(pub),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_across_ledgers_writes_report_and_proofs(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proofs = tmp_path / "proofs"
    proofs.mkdir()
    out = tmp_path / "r.html"
    assert _cli(*_ledger_args(fleet), "--out", str(out), "--proofs", str(proofs)) == 0
    said = capsys.readouterr().out
    assert "17 entries from 2 instance(s) (m1, m2), 2 safe-stop(s)" in said
    assert "1 hand-over(s), 2 duplicate(s) shown once; 3 ledgers verified" in said
    files = sorted(p.name for p in proofs.iterdir())
    assert files == [
        "stop-1-acknowledged.json",
        "stop-1-issued.json",
        "stop-2-acknowledged.json",
        "stop-2-issued.json",
    ]
    for name, pub in (("stop-1-issued.json", fleet.pubs[0]), ("stop-2-issued.json", fleet.pubs[1])):
        ok = verify_proof(proofs / name, pub)
        assert ok.returncode == 0, ok.stderr
        assert "safe_stop_issued" in ok.stdout
    wrong = verify_proof(proofs / "stop-1-issued.json", fleet.pubs[1])
    assert wrong.returncode != 0


def test_cli_single_ledger_proofs_leave_the_page_unchanged(fleet: Fleet, tmp_path: Path) -> None:
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    proofs = tmp_path / "p"
    proofs.mkdir()
    args = ["--ledger", str(fleet.ledgers[0]), "--pubkey", str(fleet.pubs[0])]
    assert _cli(*args, "--out", str(a)) == 0
    assert _cli(*args, "--out", str(b), "--proofs", str(proofs)) == 0
    strip = lambda p: "\n".join(x for x in p.read_text().splitlines() if "Generated" not in x)  # noqa: E731
    assert strip(a) == strip(b)
    assert sorted(p.name for p in proofs.iterdir()) == [
        "stop-1-acknowledged.json",
        "stop-1-issued.json",
    ]
    assert verify_proof(proofs / "stop-1-issued.json", fleet.pubs[0]).returncode == 0


def test_cli_refuses_holes_and_bad_combinations(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "r.html")
    two = [
        "--ledger",
        str(fleet.ledgers[1]),
        "--ledger",
        str(fleet.ledgers[2]),
        "--pubkey",
        str(fleet.pubs[1]),
        "--pubkey",
        str(fleet.pubs[2]),
    ]
    assert _cli(*two, "--out", out) == 1
    err = capsys.readouterr().err
    assert "refusing to report" in err and "hole" in err and "Traceback" not in err
    assert _cli(*two, "--out", out, "--allow-holes") == 0
    capsys.readouterr()
    bad = [
        (
            [
                "--ledger",
                "a",
                "--ledger",
                "b",
                "--pubkey",
                "k1",
                "--pubkey",
                "k2",
                "--pubkey",
                "k3",
            ],
            "--pubkey per --ledger",
        ),
        (["--archive", str(tmp_path)], "needs --trusted-keys"),
        (["--ledger", "a", "--pubkey", "k", "--archive", "d", "--trusted-keys", "t"], "not both"),
        ([], "give --ledger"),
        (["--ledger", "a"], "needs --pubkey"),
    ]
    for argv, message in bad:
        assert _cli(*argv, "--out", out) == 2, argv
        assert message in capsys.readouterr().err


def test_cli_from_the_archive_matches_the_ledgers_and_refuses_a_tampered_copy(
    fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "trusted-keys"
    keys.write_text("".join(f"telesafe/m{i} {p}\n" for i, p in enumerate(fleet.pubs, 1)))
    d = tmp_path / "archive"
    d.mkdir()
    arch = Archive(d, TrustedKeys.load(keys))
    try:
        for led in fleet.ledgers:
            assert arch.import_source(led).refused == 0
    finally:
        arch.close()
    from_archive = _report_from_archive(d, keys)
    from_ledgers = build_fleet_report(fleet.verified(), PID)
    assert _counts(from_archive) == _counts(from_ledgers)
    assert [p.proof for p in from_archive.proofs] == [p.proof for p in from_ledgers.proofs]
    assert (
        _cli("--archive", str(d), "--trusted-keys", str(keys), "--out", str(tmp_path / "a.html"))
        == 0
    )
    assert "from 2 instance(s)" in capsys.readouterr().out
    # One byte of an archived copy changed: the report is refused, naming the copy.
    copy = d / "ledgers" / "telesafe%2Fm1.sqlite"
    con = sqlite3.connect(copy)
    con.execute("DROP TRIGGER entries_no_update")
    con.execute("UPDATE entries SET body = replace(body, 'checking', 'CHECKING') WHERE idx = 8")
    con.commit()
    con.close()
    assert (
        _cli("--archive", str(d), "--trusted-keys", str(keys), "--out", str(tmp_path / "b.html"))
        == 1
    )
    err = capsys.readouterr().err
    assert "refusing to report: archived copy of telesafe/m1" in err and "entry 8" in err


def _report_from_archive(d: Path, keys: Path) -> ProcedureReport:
    from monitor.report.cli import _load_archive

    vls, source = _load_archive(d, keys)
    return build_fleet_report(vls, PID, source=source)


def _counts(r: ProcedureReport) -> dict[str, Any]:
    return {
        "entries": r.entry_count,
        "duplicates": r.duplicates,
        "stops": [(s.command_id, s.instance, s.ack.result if s.ack else None) for s in r.stops],
        "handovers": [
            (h.from_instance, h.to_instance, h.latch_carried, h.gap_s) for h in r.handovers
        ],
        "timeline": [(t.event, t.instance, t.index) for t in r.timeline],
        "instances": [
            (i.label, i.entries, i.duplicates, i.checkpoint.size if i.checkpoint else 0)
            for i in r.instances
        ],
        "holes": r.holes,
        "warnings": r.warnings_raised,
        "proofs": [(p.instance, p.index, p.size, p.verified) for p in r.proofs],
    }


def test_export_bundles_give_the_same_report_and_proofs(fleet: Fleet, tmp_path: Path) -> None:
    from monitor.audit.export import export_bundle

    bundles = []
    for i, led in enumerate(fleet.ledgers):
        export_bundle(led, tmp_path / f"b{i}", None)
        bundles.append(tmp_path / f"b{i}")
    from_bundles = build_fleet_report(Fleet(bundles, fleet.pubs).verified(), PID)
    from_ledgers = build_fleet_report(fleet.verified(), PID)
    assert _counts(from_bundles) == _counts(from_ledgers)
    assert [p.proof for p in from_bundles.proofs] == [p.proof for p in from_ledgers.proofs]
    assert all(p.verified for p in from_bundles.proofs) and len(from_bundles.proofs) == 4
