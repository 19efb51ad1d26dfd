"""Key rotation: an audited entry signed under the old key; verifiers follow the chain
from the originally trusted key (`audit verify`, `report`, export bundles, proofs)."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitor.audit.checkpoint import (
    Checkpoint,
    generate_key_files,
    key_id,
    load_private_key,
    sign_checkpoint,
    verify_checkpoint,
)
from monitor.audit.cli import main
from monitor.audit.keychain import ROTATION_EVENT
from monitor.audit.ledger import Ledger, LedgerKeyMismatch, sidecar_path
from monitor.audit.merkle import CompactRange
from monitor.audit.verified import load_verified
from monitor.audit.verify import verify
from monitor.report.build import covering_checkpoint

ORIGIN = "telesafe/rot-1"


def ev(i: int) -> dict[str, Any]:
    return {"event": "operator_note", "procedure_id": "P1", "t_utc_ns": 1 + i, "data": {"i": i}}


class Keys:
    def __init__(self, tmp: Path) -> None:
        self.old, self.new = (generate_key_files(tmp / n)[0] for n in ("old.key", "new.key"))
        self.old_pub, self.new_pub = Path(f"{self.old}.pub"), Path(f"{self.new}.pub")
        self.old_sk, self.new_sk = load_private_key(self.old), load_private_key(self.new)

    def kid(self, which: str) -> str:
        sk = self.old_sk if which == "old" else self.new_sk
        return key_id(ORIGIN, sk.public_key()).hex()


@pytest.fixture()
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


def build(db: Path, sk: Ed25519PrivateKey, lo: int, hi: int) -> None:
    with Ledger.open(db, sk, ORIGIN) as led:
        for i in range(lo, hi, 10):
            led.append_many([ev(j) for j in range(i, min(i + 10, hi))])
            led.checkpoint()


@pytest.fixture()
def rotated(tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]) -> Path:
    """30 entries under the old key, the rotation (entry 30), 20 more under the new."""
    db = tmp_path / "l.sqlite"
    build(db, keys.old_sk, 0, 30)
    assert (
        main(
            [
                "audit",
                "rotate-key",
                str(db),
                "--key",
                str(keys.old),
                "--new-key",
                str(keys.new),
                "--reason",
                "yearly",
                "--operator",
                "dr-a",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"now signed by key id {keys.kid('new')} (was {keys.kid('old')})" in out
    assert "announced in entry 30, covered by the checkpoint at size 31" in out
    build(db, keys.new_sk, 31, 51)
    return db


@pytest.mark.hazard("H-08")
def test_rotation_is_an_entry_signed_under_the_old_key(rotated: Path, keys: Keys) -> None:
    conn = sqlite3.connect(rotated)
    body = json.loads(conn.execute("SELECT body FROM entries WHERE idx = 30").fetchone()[0])
    assert body["event"] == ROTATION_EVENT and body["actor"] == "operator:dr-a"
    assert body["data"]["old_key_id"] == keys.kid("old")
    assert body["data"]["new_key_id"] == keys.kid("new")
    assert body["data"]["reason"] == "yearly"
    notes = dict(conn.execute("SELECT size, note FROM checkpoints").fetchall())
    verify_checkpoint(notes[31], keys.old_sk.public_key(), ORIGIN)  # covers it: old key
    verify_checkpoint(notes[41], keys.new_sk.public_key(), ORIGIN)  # after it: new key
    verify_checkpoint(sidecar_path(rotated).read_text(), keys.new_sk.public_key(), ORIGIN)


@pytest.mark.hazard("H-08")
def test_verify_follows_the_chain_from_the_original_key(
    rotated: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    res = verify(rotated, keys.old_sk.public_key())
    assert res.ok, [str(p) for p in res.problems]
    assert res.entries == 51 and res.latest is not None and res.latest.size == 51
    kids = [key_id(ORIGIN, k).hex() for _, k in res.key_spans]
    assert kids == [keys.kid("old"), keys.kid("new")]
    assert res.key_for(31) == keys.old_sk.public_key()
    assert res.key_for(32) == keys.new_sk.public_key()
    assert main(["audit", "verify", str(rotated), "--pubkey", str(keys.old_pub)]) == 0
    out = capsys.readouterr().out
    assert (
        f"signing keys: {keys.kid('old')} (the trusted key), then {keys.kid('new')} "
        f"above size 31" in out
    )
    # Trusting the NEW key alone does not verify the part the old key signed.
    assert not verify(rotated, keys.new_sk.public_key()).ok


@pytest.mark.hazard("H-08")
def test_a_checkpoint_by_an_unannounced_key_fails(rotated: Path, keys: Keys) -> None:
    mallory = Ed25519PrivateKey.generate()
    rows = sqlite3.connect(rotated).execute("SELECT leaf_hash FROM entries ORDER BY idx")
    cr = CompactRange()
    cr.extend(bytes(r[0]) for r in rows)
    forged = sign_checkpoint(Checkpoint(ORIGIN, 51, cr.root()), mallory)
    conn = sqlite3.connect(rotated)
    conn.execute("DROP TRIGGER checkpoints_no_update")
    conn.execute("UPDATE checkpoints SET note = ? WHERE size = 51", (forged.note,))
    conn.commit()
    conn.close()
    res = verify(rotated, keys.old_sk.public_key(), use_sidecar=False)
    first = res.first_problem
    assert first is not None and first.index == 41, [str(p) for p in res.problems]
    assert "checkpoint at size 51: not signed by the trusted key" in first.message
    mallory_id = key_id(ORIGIN, mallory.public_key()).hex()
    assert f"no key rotation in the ledger announces key {mallory_id}" in first.message


def test_new_key_checkpoint_before_the_announcement_is_covered_fails(
    tmp_path: Path, keys: Keys
) -> None:
    # An announcement takes effect only once a checkpoint by the key in force covers it.
    db = tmp_path / "early.sqlite"
    build(db, keys.old_sk, 0, 10)
    with Ledger.open(db, keys.old_sk, ORIGIN) as led:
        led.rotate_key(keys.new_sk, actor="operator:x")
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER checkpoints_no_update")
    note = conn.execute("SELECT note FROM checkpoints WHERE size = 11").fetchone()[0]
    cp = sign_checkpoint(
        Checkpoint(ORIGIN, 11, verify_checkpoint(note, keys.old_sk.public_key()).root), keys.new_sk
    )
    conn.execute("UPDATE checkpoints SET note = ? WHERE size = 11", (cp.note,))
    conn.commit()
    conn.close()
    res = verify(db, keys.old_sk.public_key(), use_sidecar=False)
    assert any(
        "key " + keys.kid("new") + " is announced at entry 10, but no checkpoint signed "
        "by the key in force" in p.message
        for p in res.problems
    ), res.problems


def test_writers_must_use_the_key_in_force(rotated: Path, keys: Keys) -> None:
    with pytest.raises(LedgerKeyMismatch, match=f"signed by key id {keys.kid('new')}"):
        Ledger.open(rotated, keys.old_sk, ORIGIN)
    with Ledger.open(rotated, keys.new_sk, ORIGIN) as led:
        assert led.size() == 51


def test_rotate_key_refusals(
    rotated: Path, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    third = generate_key_files(tmp_path / "third.key")[0]
    # Authorised only by the key in force.
    assert (
        main(["audit", "rotate-key", str(rotated), "--key", str(keys.old), "--new-key", str(third)])
        == 2
    )
    assert "is not the key that signs" in capsys.readouterr().err
    # Not back to a key that signed before.
    assert (
        main(
            [
                "audit",
                "rotate-key",
                str(rotated),
                "--key",
                str(keys.new),
                "--new-key",
                str(keys.old),
            ]
        )
        == 2
    )
    assert "has signed this ledger before" in capsys.readouterr().err
    # Not while a writer holds the ledger.
    with Ledger.open(rotated, keys.new_sk, ORIGIN, holder="monitor rot-1"):
        assert (
            main(
                [
                    "audit",
                    "rotate-key",
                    str(rotated),
                    "--key",
                    str(keys.new),
                    "--new-key",
                    str(third),
                ]
            )
            == 2
        )
    err = capsys.readouterr().err
    assert "(monitor rot-1); one writer per ledger: stop that writer first" in err
    assert (
        main(
            [
                "audit",
                "rotate-key",
                str(tmp_path / "none.sqlite"),
                "--key",
                str(keys.new),
                "--new-key",
                str(third),
            ]
        )
        == 2
    )
    assert not (tmp_path / "none.sqlite").exists()
    assert verify(rotated, keys.old_sk.public_key()).ok  # nothing was written


def test_rotation_is_all_or_nothing(tmp_path: Path, keys: Keys) -> None:
    db = tmp_path / "atomic.sqlite"
    build(db, keys.old_sk, 0, 10)
    conn = sqlite3.connect(db)  # make the last statement of the rotation fail
    conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON meta WHEN NEW.key LIKE 'key_rotation:%' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    conn.commit()
    conn.close()
    with Ledger.open(db, keys.old_sk, ORIGIN) as led, pytest.raises(sqlite3.IntegrityError):
        led.rotate_key(keys.new_sk, actor="operator:x")
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT max(idx) FROM entries").fetchone()[0] == 9
    assert conn.execute("SELECT max(size) FROM checkpoints").fetchone()[0] == 10


def test_report_follows_the_rotation(rotated: Path, keys: Keys) -> None:
    vl = load_verified(rotated, keys.old_sk.public_key())
    assert vl.covered == 51
    info = covering_checkpoint(vl, 45)
    assert info is not None and info.size == 51 and info.signature_ok, info
    assert info.key_id_hex == keys.kid("new")
    early = covering_checkpoint(vl, 5)
    assert early is not None and early.signature_ok and early.key_id_hex == keys.kid("old")


def test_export_and_proofs_after_rotation(
    rotated: Path, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    assert main(["audit", "export", str(rotated), "--out", str(out)]) == 0
    assert (out / "pubkey.pem").read_text() == keys.old_pub.read_text()  # the original
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["index"] for r in manifest["key_rotations"]] == [30]
    assert main(["audit", "verify", str(out), "--pubkey", str(out / "pubkey.pem")]) == 0
    proof = tmp_path / "p.json"
    assert main(["audit", "prove", str(rotated), "--entry", "45", "--out", str(proof)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(keys.old_pub)]) == 1
    assert "give each key with --pubkey" in capsys.readouterr().err
    assert (
        main(
            [
                "audit",
                "verify-proof",
                str(proof),
                "--pubkey",
                str(keys.old_pub),
                "--pubkey",
                str(keys.new_pub),
            ]
        )
        == 0
    )
    # A consistency proof across the rotation: old checkpoint by the old key.
    assert (
        main(["audit", "prove", str(rotated), "--consistency-from", "20", "--out", str(proof)]) == 0
    )
    assert (
        main(
            [
                "audit",
                "verify-proof",
                str(proof),
                "--pubkey",
                str(keys.old_pub),
                "--pubkey",
                str(keys.new_pub),
            ]
        )
        == 0
    )


def test_rotate_key_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit", "rotate-key", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "usage: telesafe audit rotate-key" in out and "signed by the current key" in out


def test_verify_proof_with_several_keys_checks_every_known_line(
    rotated: Path, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proof = tmp_path / "p.json"
    assert (
        main(
            [
                "audit",
                "prove",
                str(rotated),
                "--entry",
                "5",
                "--checkpoint",
                "10",
                "--out",
                str(proof),
            ]
        )
        == 0
    )
    p = json.loads(proof.read_text())
    # Add a line claiming the NEW key with a bad signature next to the old key's good one.
    new_id = bytes.fromhex(keys.kid("new"))
    bad = f"\u2014 {ORIGIN} {base64.b64encode(new_id + bytes(64)).decode()}\n"
    p["checkpoint"] += bad
    proof.write_text(json.dumps(p))
    capsys.readouterr()
    assert main(["audit", "verify-proof", str(proof), "--pubkey", str(keys.old_pub)]) == 0
    assert (
        main(
            [
                "audit",
                "verify-proof",
                str(proof),
                "--pubkey",
                str(keys.old_pub),
                "--pubkey",
                str(keys.new_pub),
            ]
        )
        == 1
    )
    assert "invalid signature by trusted key " + keys.kid("new") in capsys.readouterr().err
