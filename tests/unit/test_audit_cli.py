"""`telesafe audit ...` end to end through cli.main."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from monitor.audit.checkpoint import load_private_key
from monitor.audit.cli import main
from monitor.audit.ledger import Ledger

ORIGIN = "telesafe.test/cli"


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    key = tmp_path / "k"
    assert main(["audit", "keygen", "--out", str(key)]) == 0
    led = Ledger.open(tmp_path / "l.db", load_private_key(key), ORIGIN)
    for _ in range(4):
        led.append_many(
            [
                {
                    "type": "POLICY_BREACH",
                    "procedure_id": f"P{i % 2}",
                    "t_utc_ns": 1_763_900_000_000_000_000 + i,
                    "rule": "speed",
                }
                for i in range(50)
            ]
        )
        led.checkpoint()
    led.close()
    return tmp_path / "l.db", key, Path(str(key) + ".pub")


def test_keygen_permissions_and_no_overwrite(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, key, pub = setup
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert main(["audit", "keygen", "--out", str(key)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_verify_ok_and_tampered(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _, pub = setup
    assert main(["audit", "verify", str(db), "--pubkey", str(pub)]) == 0
    assert "OK: 200 entries, 4 checkpoints" in capsys.readouterr().out
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET body = replace(body, 'speed', 'spied') WHERE idx = 77")
    conn.commit()
    conn.close()
    assert main(["audit", "verify", str(db), "--pubkey", str(pub)]) == 1
    err = capsys.readouterr().err
    assert "FAILED: entry 77: body does not match its stored leaf hash" in err
    assert main(["audit", "verify", str(db), "--pubkey", str(pub), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["first_bad_index"] == 77


def test_prove_and_verify_proof(
    setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _, pub = setup
    proof = tmp_path / "p.json"
    assert main(["audit", "prove", str(db), "--entry", "42", "--out", str(proof)]) == 0
    p = json.loads(proof.read_text())
    assert (p["index"], p["size"]) == (42, 200) and len(p["path"]) == 8
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(pub)]) == 0
    assert "OK: entry 42 is included" in capsys.readouterr().out
    # The auditor's own (pretty-printed) copy of the entry.
    entry = tmp_path / "e.json"
    entry.write_text(json.dumps(json.loads(p["entry"]), indent=2))
    assert (
        main(
            ["audit", "verify-proof", str(proof), "--pubkey", str(pub), "--entry-file", str(entry)]
        )
        == 0
    )
    # A different entry, a bit flip in the path, or a pinned checkpoint size.
    entry.write_text(json.dumps({**json.loads(p["entry"]), "rule": "other"}))
    assert (
        main(
            ["audit", "verify-proof", str(proof), "--pubkey", str(pub), "--entry-file", str(entry)]
        )
        == 1
    )
    p["path"][3] = ("0" if p["path"][3][0] != "0" else "1") + p["path"][3][1:]
    proof.write_text(json.dumps(p))
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(pub)]) == 1
    assert "inclusion proof does not lead to the expected root" in capsys.readouterr().err
    assert (
        main(
            ["audit", "prove", str(db), "--entry", "42", "--checkpoint", "50", "--out", str(proof)]
        )
        == 0
    )
    assert json.loads(proof.read_text())["size"] == 50
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(pub)]) == 0


def test_consistency_proof(
    setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _, pub = setup
    proof = tmp_path / "c.json"
    assert main(["audit", "prove", str(db), "--consistency-from", "100", "--out", str(proof)]) == 0
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(pub)]) == 0
    assert "size 100 is a prefix of the signed tree of size 200" in capsys.readouterr().out
    p = json.loads(proof.read_text())
    p["path"][0] = p["path"][0][::-1]
    proof.write_text(json.dumps(p))
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(pub)]) == 1


def test_export_bundle_verifies(
    setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _, pub = setup
    out = tmp_path / "bundle"
    assert main(["audit", "export", str(db), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "checkpoints", "entries.jsonl", "manifest.json", "pubkey.pem"]
    assert pub.read_text() == (out / "pubkey.pem").read_text()
    assert "telesafe audit verify" in (out / "README.md").read_text()
    assert main(["audit", "verify", str(out), "--pubkey", str(out / "pubkey.pem")]) == 0
    assert (
        main(["audit", "prove", str(out), "--entry", "3", "--out", str(tmp_path / "p.json")]) == 0
    )
    assert main(["audit", "verify-proof", str(tmp_path / "p.json"), "--pubkey", str(pub)]) == 0
    # Tampering with the bundle is caught as well.
    lines = (out / "entries.jsonl").read_bytes().split(b"\n")
    lines[120] = lines[120].replace(b"speed", b"spied")
    (out / "entries.jsonl").write_bytes(b"\n".join(lines))
    capsys.readouterr()
    assert main(["audit", "verify", str(out), "--pubkey", str(pub)]) == 1
    assert "entry 100: root of entries [0, 150) does not match" in capsys.readouterr().err
    assert main(["audit", "export", str(db), "--out", str(out)]) == 2  # not empty


def test_show(setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    db, _, _ = setup
    assert main(["audit", "show", str(db), "--procedure", "P1", "--tail", "3"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 4 and lines[0].split()[0] == "index"
    assert all("P1" in ln and "POLICY_BREACH" in ln for ln in lines[1:])
    assert lines[-1].split()[0] == "199"


def test_show_leads_with_event_time_procedure_and_actor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k"
    assert main(["audit", "keygen", "--out", str(key)]) == 0
    led = Ledger.open(tmp_path / "l.db", load_private_key(key), ORIGIN)
    led.append_many(
        [
            {  # the shape of a monitor's entry (service/audit_sink.py)
                "schema": "telesafe.audit/1",
                "event": "safe_stop_issued",
                "procedure_id": "LDN-GIB-0001",
                "actor": "monitor:telesafe-1",
                "monitor_id": "telesafe-1",
                "boot_id": "0b9d1b4e-5a51-4c55-9d6a-2f8d1c7e0a11",
                "t_utc_ns": 1_763_900_000_000_000_000,
                "t_mono_ns": 12_345,
                "data": {"rule": "heartbeat_silence", "observed": 310.2},
                "source": "telesafe.telemetry.robot:3:17",
            }
        ]
    )
    led.checkpoint()
    led.close()
    capsys.readouterr()
    assert main(["audit", "show", str(tmp_path / "l.db")]) == 0
    head, row = capsys.readouterr().out.splitlines()
    assert head.split()[:6] == ["index", "time", "(UTC)", "event", "procedure", "actor"]
    assert row.split()[:5] == [
        "0",
        "2025-11-23T12:13:20.000+00:00",
        "safe_stop_issued",
        "LDN-GIB-0001",
        "monitor:telesafe-1",
    ]
    detail = row.split(None, 5)[5]
    assert detail.startswith('{"observed":310.2,"rule":"heartbeat_silence"}')
    assert "source=" in detail and "boot_id" not in detail and "schema" not in detail


@pytest.mark.parametrize(
    "argv",
    [
        ["audit"],
        ["audit", "verify", "nope.db", "--pubkey", "nope.pub"],
        ["audit", "verify", "x.db"],
        ["audit", "prove", "x.db"],
        ["audit", "prove", "x.db", "--entry", "-3"],
        ["audit", "show", "x.db", "--tail", "many"],
        ["audit", "verify-proof", "missing.json", "--pubkey", "k.pub"],
        ["audit", "bogus"],
    ],
)
def test_bad_arguments_no_traceback(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    err = capsys.readouterr().err
    assert rc != 0
    assert "Traceback" not in err and err.strip()


@pytest.mark.parametrize(
    "cmd", ["keygen", "verify", "prove", "verify-proof", "export", "show", "rotate-key"]
)
def test_help(cmd: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit", cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: telesafe audit " + cmd in capsys.readouterr().out


@pytest.mark.hazard("H-08")
def test_consistency_proof_root1_must_match_its_signed_checkpoint1(
    setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _, pub = setup
    proof = tmp_path / "c.json"
    assert main(["audit", "prove", str(db), "--consistency-from", "100", "--out", str(proof)]) == 0
    p = json.loads(proof.read_text())
    assert p["checkpoint1"] is not None  # 100 is a checkpoint size: the proof carries it
    # A root1 that contradicts the signed checkpoint1 is refused, even though the path
    # itself is checked against the signed root.
    p["root1"] = "00" * 32
    proof.write_text(json.dumps(p))
    capsys.readouterr()
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(pub)]) == 1
    assert "the proof's root1 " + "00" * 32 + " contradicts checkpoint1" in capsys.readouterr().err
    # Same with the auditor's own old checkpoint.
    note = tmp_path / "old.note"
    note.write_text(
        sqlite3.connect(db).execute("SELECT note FROM checkpoints WHERE size=100").fetchone()[0]
    )
    del p["checkpoint1"]
    proof.write_text(json.dumps(p))
    assert (
        main(
            [
                "audit",
                "verify-proof",
                str(proof),
                "--pubkey",
                str(pub),
                "--old-checkpoint",
                str(note),
            ]
        )
        == 1
    )
    assert "contradicts --old-checkpoint" in capsys.readouterr().err
    # And an origin field that is not the signed one.
    assert main(["audit", "prove", str(db), "--entry", "3", "--out", str(proof)]) == 0
    p = json.loads(proof.read_text())
    p["origin"] = "someone/else"
    proof.write_text(json.dumps(p))
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(pub)]) == 1
    assert "the proof says origin 'someone/else'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("frm", "expect"),
    [
        ("200", "size 200 is the latest signed checkpoint: a consistency proof needs a newer one"),
        ("201", "the ledger holds 200 entries; there is no tree of size 201"),
    ],
)
def test_prove_consistency_from_the_latest_size_says_what_is_wrong(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], frm: str, expect: str
) -> None:
    db, _, _ = setup
    assert main(["audit", "prove", str(db), "--consistency-from", frm]) == 2
    err = capsys.readouterr().err
    assert expect in err and "not yet covered" not in err


def test_prove_consistency_from_beyond_the_latest_checkpoint(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, key, _ = setup
    with Ledger.open(db, load_private_key(key), ORIGIN) as led:
        led.append_many([{"type": "NOTE"} for _ in range(5)])  # 200..204, no checkpoint
    assert main(["audit", "prove", str(db), "--consistency-from", "203"]) == 2
    assert (
        "the tree of size 203 is newer than the latest signed checkpoint (size 200)"
        in capsys.readouterr().err
    )
