"""Ledger append API, storage guarantees and the background writer."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitor.audit.checkpoint import verify_checkpoint
from monitor.audit.ledger import Ledger, sidecar_path
from monitor.audit.merkle import leaf_hash, root_of
from monitor.audit.store import LedgerCorrupt, LedgerError
from monitor.audit.verify import verify
from monitor.audit.writer import AuditWriter

ORIGIN = "telesafe.test/ledger"


@pytest.fixture()
def sk() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def ev(i: int, **kw: Any) -> dict[str, Any]:
    return {"type": "POLICY_BREACH", "procedure_id": "P1", "seq": i, "v": i / 3, **kw}


def test_append_assigns_indices_and_root(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    led = Ledger.open(tmp_path / "a.db", sk, ORIGIN)
    assert led.size() == 0
    assert led.append_many([ev(0), ev(1)]) == [0, 1]
    assert led.append_many([ev(2)]) == [2]
    assert led.append_many([]) == []
    bodies = [led.entry_bytes(i) for i in range(3)]
    assert json.loads(bodies[1])["index"] == 1
    assert led.root() == root_of([leaf_hash(b) for b in bodies])
    cp = led.checkpoint()
    assert cp is not None and cp.size == 3 and cp.root == led.root()
    assert led.checkpoint() is None  # did not grow
    verify_checkpoint(cp.note, sk.public_key(), ORIGIN)
    assert sidecar_path(tmp_path / "a.db").read_text() == cp.note
    led.close()
    with pytest.raises(LedgerError):
        led.append_many([ev(3)])


def test_append_rejects_bad_entries_atomically(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    led = Ledger.open(tmp_path / "a.db", sk, ORIGIN)
    led.append_many([ev(0)])
    with pytest.raises(ValueError):
        led.append_many([ev(1), {"x": float("nan")}])
    with pytest.raises(ValueError):
        led.append_many([{"index": 7}])
    assert led.size() == 1
    assert led.append_many([ev(1)]) == [1]
    led.close()


def test_reopen_restores_state(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    p = tmp_path / "a.db"
    led = Ledger.open(p, sk, ORIGIN)
    led.append_many([ev(i) for i in range(100)])
    led.checkpoint()
    led.append_many([ev(i) for i in range(100, 130)])
    root = led.root()
    led.close()
    led = Ledger.open(p, sk, ORIGIN)
    assert led.size() == 130 and led.root() == root
    assert led.append_many([ev(130)]) == [130]
    led.close()
    with pytest.raises(LedgerError, match="origin"):
        Ledger.open(p, sk, "telesafe.test/other")


def test_pragmas_and_triggers(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    p = tmp_path / "a.db"
    led = Ledger.open(p, sk, ORIGIN)
    led.append_many([ev(0), ev(1)])
    led.checkpoint()
    conn = led._store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    led.close()
    conn = sqlite3.connect(p)
    for sql in ("UPDATE entries SET body = x'00' WHERE idx = 0",
                "DELETE FROM entries WHERE idx = 1",
                "UPDATE checkpoints SET note = 'x'",
                "DELETE FROM checkpoints"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()


def test_open_refuses_damaged_tree(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    p = tmp_path / "a.db"
    led = Ledger.open(p, sk, ORIGIN)
    led.append_many([ev(i) for i in range(10)])
    led.checkpoint()
    led.close()
    conn = sqlite3.connect(p)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET leaf_hash = ? WHERE idx = 3", (b"\x00" * 32,))
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorrupt, match="do not reproduce the checkpoint root"):
        Ledger.open(p, sk, ORIGIN)


def test_open_refuses_non_sqlite(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    p = tmp_path / "junk.db"
    p.write_bytes(b"not a database" * 100)
    with pytest.raises(LedgerError):
        Ledger.open(p, sk, ORIGIN)


# --- writer --------------------------------------------------------------------------

def test_writer_group_commit_callbacks_and_checkpoints(
    tmp_path: Path, sk: Ed25519PrivateKey
) -> None:
    seen: list[dict[str, Any]] = []
    led = Ledger.open(tmp_path / "w.db", sk, ORIGIN)
    w = AuditWriter(led, on_appended=seen.extend, checkpoint_interval_s=60)
    w.start()
    for i in range(2000):
        w.submit(ev(i))
    w.submit(ev(2000, type="SAFE_STOP_CMD"), checkpoint=True)
    assert w.flush(10)
    assert [e["index"] for e in seen] == list(range(2001))
    assert seen[5]["seq"] == 5
    st = w.stats()
    assert st["appended"] == 2001 and st["checkpoints"] >= 1 and st["queue_depth"] == 0
    assert st["last_checkpoint_unix"] > 0
    w.stop()
    res = verify(tmp_path / "w.db", sk.public_key())
    assert res.ok, res.problems
    assert res.entries == 2001 and res.latest is not None and res.latest.size == 2001


def test_writer_periodic_checkpoint(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    led = Ledger.open(tmp_path / "w.db", sk, ORIGIN)
    w = AuditWriter(led, checkpoint_interval_s=0.2)
    w.start()
    w.submit(ev(0))
    deadline = time.monotonic() + 5
    while w.stats()["checkpoints"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert w.stats()["checkpoints"] == 1
    time.sleep(0.5)  # nothing appended: no new checkpoint
    assert w.stats()["checkpoints"] == 1
    w.stop()


def test_writer_submit_does_not_block(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    led = Ledger.open(tmp_path / "w.db", sk, ORIGIN)
    gate = threading.Event()

    def slow(_entries: list[dict[str, Any]]) -> None:
        gate.wait(5)

    w = AuditWriter(led, on_appended=slow)
    w.start()
    w.submit(ev(0))
    time.sleep(0.05)  # writer is now stuck in the callback
    t0 = time.perf_counter()
    for i in range(10_000):
        w.submit(ev(i))
    assert time.perf_counter() - t0 < 0.5
    gate.set()
    assert w.flush(20)
    w.stop()


def test_writer_encodes_bad_entry_as_record(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    seen: list[dict[str, Any]] = []
    led = Ledger.open(tmp_path / "w.db", sk, ORIGIN)
    w = AuditWriter(led, on_appended=seen.extend)
    w.start()
    w.submit(ev(0))
    w.submit({"x": float("nan")})
    w.submit(ev(2))
    assert w.flush()
    w.stop()
    assert [e.get("type") for e in seen] == ["POLICY_BREACH", "AUDIT_ENCODING_ERROR",
                                             "POLICY_BREACH"]
    assert "nan" in seen[1]["original_repr"]


def test_writer_failure_keeps_entries(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    failures: list[Exception] = []
    led = Ledger.open(tmp_path / "w.db", sk, ORIGIN)
    w = AuditWriter(led, on_failure=failures.append)
    w.start()
    w.submit(ev(0))
    assert w.flush()
    # Simulate the disk going away under the writer.
    def broken(_rows: list[tuple[int, bytes, bytes]]) -> None:
        raise OSError(5, "Input/output error")
    led._store.append = broken  # type: ignore[method-assign,assignment]
    w.submit(ev(1))
    w.submit(ev(2))
    assert not w.flush(5)
    w.submit(ev(3))
    assert not w.flush(5)
    assert len(failures) == 1 and isinstance(failures[0], OSError)
    assert [e["seq"] for e in w.unwritten()] == [1, 2, 3]
    assert w.stats()["failures"] == 1 and w.stats()["queue_depth"] == 3
    w.stop()


def test_100k_entries_verify_fast(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    led = Ledger.open(tmp_path / "big.db", sk, ORIGIN)
    for b in range(100):
        led.append_many([ev(b * 1000 + i) for i in range(1000)])
        if b % 25 == 24:
            led.checkpoint()
    led.close()
    res = verify(tmp_path / "big.db", sk.public_key())
    assert res.ok, res.problems
    assert res.entries == 100_000 and res.checkpoints == 4
    rate = res.entries / res.elapsed_s
    print(f"verify: {rate:,.0f} entries/s")
    assert rate > 50_000  # target 100k/s; slack for loaded CI machines
