"""Tamper matrix on a real ledger file: what an attacker with write access to the SQLite
file can do (drop the triggers, then edit), and the specific verify message for each."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitor.audit.canonical import canonical_json
from monitor.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    sign_checkpoint,
    verify_checkpoint,
)
from monitor.audit.ledger import Ledger, sidecar_path
from monitor.audit.merkle import CompactRange, leaf_hash
from monitor.audit.verify import VerifyResult, verify

ORIGIN = "telesafe.test/tamper"
N = 300  # checkpoints at 100, 200, 300


@pytest.fixture()
def sk() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture()
def ledger(tmp_path: Path, sk: Ed25519PrivateKey) -> Path:
    p = tmp_path / "t.db"
    led = Ledger.open(p, sk, ORIGIN)
    for b in range(3):
        led.append_many(
            [
                {"type": "SAFE_STOP_CMD", "procedure_id": "P7", "seq": b * 100 + i}
                for i in range(100)
            ]
        )
        led.checkpoint()
    led.close()
    return p


def attacker(p: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(p)
    for t in (
        "entries_no_update",
        "entries_no_delete",
        "checkpoints_no_update",
        "checkpoints_no_delete",
    ):
        conn.execute(f"DROP TRIGGER IF EXISTS {t}")
    yield conn
    conn.commit()
    conn.close()


def tamper(p: Path, *sql: tuple[str, tuple[object, ...]]) -> None:
    for conn in attacker(p):
        for stmt, params in sql:
            conn.execute(stmt, params)


def check(res: VerifyResult, index: int, fragment: str) -> None:
    assert not res.ok
    first = res.first_problem
    assert first is not None
    assert first.index == index, [str(p) for p in res.problems]
    assert any(p.index == index and fragment in p.message for p in res.problems), [
        str(p) for p in res.problems
    ]


def test_untouched_ledger_verifies(ledger: Path, sk: Ed25519PrivateKey) -> None:
    res = verify(ledger, sk.public_key())
    assert res.ok, res.problems
    assert (res.entries, res.checkpoints) == (N, 3)


@pytest.mark.hazard("H-08")
def test_flip_one_byte_of_a_body(ledger: Path, sk: Ed25519PrivateKey) -> None:
    body = bytearray(
        sqlite3.connect(ledger).execute("SELECT body FROM entries WHERE idx=137").fetchone()[0]
    )
    body[body.index(b"SAFE")] ^= 0x20  # 'S' -> 's'
    tamper(ledger, ("UPDATE entries SET body=? WHERE idx=137", (bytes(body),)))
    res = verify(ledger, sk.public_key())
    check(res, 137, "body does not match its stored leaf hash")


def test_rewrite_body_and_leaf_hash_consistently(ledger: Path, sk: Ed25519PrivateKey) -> None:
    # A smarter attacker also fixes the leaf hash: only the signed root can catch it.
    body = canonical_json({"index": 150, "type": "NOTE", "procedure_id": "P7", "seq": 150})
    tamper(
        ledger, ("UPDATE entries SET body=?, leaf_hash=? WHERE idx=150", (body, leaf_hash(body)))
    )
    res = verify(ledger, sk.public_key())
    check(res, 100, "does not match the signed checkpoint at size 200")


@pytest.mark.hazard("H-08")
def test_delete_an_entry(ledger: Path, sk: Ed25519PrivateKey) -> None:
    tamper(ledger, ("DELETE FROM entries WHERE idx=42", ()))
    res = verify(ledger, sk.public_key())
    check(res, 42, "missing: the ledger jumps from entry 41 to 43")


def test_swap_two_entries(ledger: Path, sk: Ed25519PrivateKey) -> None:
    for conn in attacker(ledger):
        a = conn.execute("SELECT leaf_hash, body FROM entries WHERE idx=10").fetchone()
        b = conn.execute("SELECT leaf_hash, body FROM entries WHERE idx=20").fetchone()
        conn.execute("UPDATE entries SET leaf_hash=?, body=? WHERE idx=10", b)
        conn.execute("UPDATE entries SET leaf_hash=?, body=? WHERE idx=20", a)
    res = verify(ledger, sk.public_key())
    check(res, 10, "body carries index 20 (entries moved or swapped)")
    assert any(p.index == 20 and "carries index 10" in p.message for p in res.problems)


def test_truncate_tail_below_checkpoint(ledger: Path, sk: Ed25519PrivateKey) -> None:
    tamper(ledger, ("DELETE FROM entries WHERE idx >= 250", ()))
    res = verify(ledger, sk.public_key(), use_sidecar=False)
    check(res, 250, "ledger truncated: checkpoint at size 300 is signed but only 250")


def test_rollback_to_earlier_checkpoint(ledger: Path, sk: Ed25519PrivateKey) -> None:
    saved = (
        sqlite3.connect(ledger).execute("SELECT note FROM checkpoints WHERE size=300").fetchone()[0]
    )
    tamper(
        ledger,
        ("DELETE FROM entries WHERE idx >= 200", ()),
        ("DELETE FROM checkpoints WHERE size > 200", ()),
    )
    # The file alone is self-consistent: rollback is only visible against a checkpoint
    # held elsewhere. Here: the sidecar the ledger keeps beside the file ...
    res = verify(ledger, sk.public_key())
    check(res, 200, "ledger rolled back or truncated: trusted checkpoint")
    # ... or a checkpoint the auditor saved earlier.
    res = verify(
        ledger, sk.public_key(), use_sidecar=False, trusted_notes=[("auditor.note", saved)]
    )
    check(res, 200, "trusted checkpoint auditor.note has size 300 but the ledger holds only 200")
    # Without either, nothing can tell: documented limitation.
    sidecar_path(ledger).unlink()
    assert verify(ledger, sk.public_key()).ok


@pytest.mark.hazard("H-08")
def test_forged_checkpoint_with_another_key(ledger: Path, sk: Ed25519PrivateKey) -> None:
    # Rewrite entry 250 and re-sign the tail with the attacker's own key.
    mallory = Ed25519PrivateKey.generate()
    rows = sqlite3.connect(ledger).execute("SELECT idx, body FROM entries ORDER BY idx").fetchall()
    bodies = [bytes(b) for _, b in rows]
    bodies[250] = canonical_json({**json.loads(bodies[250]), "type": "NOTE"})
    cr = CompactRange()
    cr.extend(leaf_hash(b) for b in bodies)
    forged = sign_checkpoint(Checkpoint(ORIGIN, N, cr.root()), mallory)
    tamper(
        ledger,
        (
            "UPDATE entries SET body=?, leaf_hash=? WHERE idx=250",
            (bodies[250], leaf_hash(bodies[250])),
        ),
        ("UPDATE checkpoints SET note=? WHERE size=300", (forged.note,)),
    )
    sidecar_path(ledger).write_text(forged.note)
    res = verify(ledger, sk.public_key())
    check(res, 200, "checkpoint at size 300: not signed by the trusted key")


def test_edited_checkpoint_note(ledger: Path, sk: Ed25519PrivateKey) -> None:
    note = (
        sqlite3.connect(ledger).execute("SELECT note FROM checkpoints WHERE size=200").fetchone()[0]
    )
    tamper(
        ledger,
        ("UPDATE checkpoints SET note=? WHERE size=200", (note.replace("\n200\n", "\n199\n"),)),
    )
    res = verify(ledger, sk.public_key())
    check(res, 100, "checkpoint at size 200: invalid signature by trusted key")


def test_wrong_public_key(ledger: Path) -> None:
    res = verify(ledger, Ed25519PrivateKey.generate().public_key())
    check(res, 0, "not signed by the trusted key")


def test_inserted_entry_past_the_end(ledger: Path, sk: Ed25519PrivateKey) -> None:
    # Appending after the last checkpoint is legal (not yet signed): warned, not failed.
    body = canonical_json({"index": N, "type": "NOTE"})
    tamper(ledger, ("INSERT INTO entries VALUES (?, ?, ?)", (N, leaf_hash(body), body)))
    res = verify(ledger, sk.public_key())
    assert res.ok and any("not yet covered" in w for w in res.warnings)
    assert any("triggers missing" in w for w in res.warnings)


@pytest.mark.hazard("H-08")
@pytest.mark.parametrize("order", ["bad_after_good", "bad_before_good"])
def test_bad_signature_line_claiming_the_trusted_key_rejects_the_note(
    ledger: Path, sk: Ed25519PrivateKey, order: str
) -> None:
    # A second signature line with the trusted key id but a wrong signature: the note is
    # refused wherever that line stands (it used to pass when it came after a good one).
    note = (
        sqlite3.connect(ledger).execute("SELECT note FROM checkpoints WHERE size=300").fetchone()[0]
    )
    good = note.rstrip("\n").split("\n")[-1]
    blob = base64.b64decode(good.split(" ")[2])
    bad = " ".join([*good.split(" ")[:2], base64.b64encode(blob[:4] + bytes(64)).decode()])
    body = note[: note.rindex("\n\n") + 2]
    lines = [good, bad] if order == "bad_after_good" else [bad, good]
    edited = body + "\n".join(lines) + "\n"
    with pytest.raises(CheckpointError, match="invalid signature by trusted key"):
        verify_checkpoint(edited, sk.public_key(), ORIGIN)
    tamper(ledger, ("UPDATE checkpoints SET note=? WHERE size=300", (edited,)))
    sidecar_path(ledger).write_text(edited)
    res = verify(ledger, sk.public_key())
    check(res, 200, "checkpoint at size 300: invalid signature by trusted key")
