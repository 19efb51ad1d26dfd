"""The monitor's self-verification of its ledger (monitor.audit.selfcheck) and the two
ledger-verify series it feeds (`telesafe_ledger_verify_failures_total`,
`telesafe_ledger_last_verify_success`), which nothing wrote before."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitor.audit.canonical import canonical_json
from monitor.audit.checkpoint import Checkpoint, generate_key_files, sign_checkpoint
from monitor.audit.ledger import Ledger
from monitor.audit.merkle import CompactRange, leaf_hash
from monitor.audit.selfcheck import SelfCheck, SelfCheckResult
from monitor.audit.writer import AuditWriter
from monitor.metrics import MonitorMetrics
from monitor.service.ledger_sink import open_ledger_sink

ORIGIN = "telesafe/self-1"


def ev(i: int) -> dict[str, Any]:
    return {"event": "operator_note", "procedure_id": "P1", "t_utc_ns": i, "data": {"i": i}}


def grow(led: Ledger, n: int, every: int = 100) -> None:
    base = led.size()
    for i in range(base, base + n, every):
        led.append_many([ev(j) for j in range(i, min(i + every, base + n))])
        led.checkpoint()


def tamper(db: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(db)
    for t in ("entries_no_update", "checkpoints_no_update"):
        conn.execute(f"DROP TRIGGER IF EXISTS {t}")
    conn.execute(sql, params)
    conn.commit()
    conn.close()


@pytest.fixture()
def sk() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture()
def db(tmp_path: Path, sk: Ed25519PrivateKey) -> Path:
    p = tmp_path / "l.sqlite"
    with Ledger.open(p, sk, ORIGIN) as led:
        grow(led, 500)  # checkpoints at 100 .. 500
    return p


def test_first_pass_covers_the_newest_range_then_only_new_entries(
    db: Path, sk: Ed25519PrivateKey
) -> None:
    with Ledger.open(db, sk, ORIGIN) as led:
        check = SelfCheck(led, chunk=64)
        res = check.run()
        assert res.ok, res.problem
        # From the second-newest checkpoint found at open to the newest.
        assert (res.verified_from, res.verified_to, res.checkpoints) == (400, 500, 1)
        grow(led, 250)
        res = check.run()
        assert res.ok and (res.verified_from, res.verified_to, res.checkpoints) == (500, 750, 3)
        res = check.run()  # nothing new: still fine, nothing re-read
        assert res.ok and (res.verified_from, res.verified_to) == (750, 750)
        assert check.verified_size == 750


def test_steps_are_bounded_by_the_chunk(db: Path, sk: Ed25519PrivateKey) -> None:
    with Ledger.open(db, sk, ORIGIN) as led:
        check = SelfCheck(led, chunk=30)
        grow(led, 100)
        steps = 0
        while (res := check.step()) is None:
            steps += 1
        assert res.ok and res.verified_to == 600
        assert steps == (600 - 400) // 30  # 200 entries in chunks of 30: 6 partial steps


@pytest.mark.hazard("H-08")
def test_a_tampered_body_in_the_new_range_fails_and_stays_failed(
    db: Path, sk: Ed25519PrivateKey
) -> None:
    with Ledger.open(db, sk, ORIGIN) as led:
        check = SelfCheck(led)
        assert check.run().ok
        grow(led, 200)
        tamper(
            db, "UPDATE entries SET body = replace(body, 'operator', 'Operator') WHERE idx = 613"
        )
        res = check.run()
        assert not res.ok
        assert res.problem == "entry 613: body does not match its stored leaf hash"
        grow(led, 100)
        again = check.run()  # sticky: the same range is re-checked, not skipped
        assert not again.ok and again.problem == res.problem
        assert check.verified_size == 500


@pytest.mark.hazard("H-08")
def test_a_consistent_rewrite_breaks_the_signed_root(db: Path, sk: Ed25519PrivateKey) -> None:
    with Ledger.open(db, sk, ORIGIN) as led:
        check = SelfCheck(led)
        assert check.run().ok
        grow(led, 200)
        body = canonical_json({**ev(650), "data": {"i": -1}, "index": 650})
        tamper(
            db, "UPDATE entries SET body = ?, leaf_hash = ? WHERE idx = 650", body, leaf_hash(body)
        )
        res = check.run()
        assert not res.ok and res.problem is not None
        assert res.problem.startswith(
            "entry 600: the signed checkpoint at size 700 does not match the stored entries"
        )


def test_a_forged_checkpoint_fails(db: Path, sk: Ed25519PrivateKey) -> None:
    with Ledger.open(db, sk, ORIGIN) as led:
        check = SelfCheck(led)
        assert check.run().ok
        grow(led, 100)
        rows = sqlite3.connect(db).execute("SELECT leaf_hash FROM entries ORDER BY idx")
        cr = CompactRange()
        cr.extend(bytes(r[0]) for r in rows)
        forged = sign_checkpoint(Checkpoint(ORIGIN, 600, cr.root()), Ed25519PrivateKey.generate())
        tamper(db, "UPDATE checkpoints SET note = ? WHERE size = 600", forged.note)
        res = check.run()
        assert not res.ok and res.problem is not None
        assert res.problem.startswith(
            "entry 500: checkpoint at size 600: not signed by the trusted key"
        )


def test_the_verified_checkpoint_must_stay(db: Path, sk: Ed25519PrivateKey) -> None:
    with Ledger.open(db, sk, ORIGIN) as led:
        check = SelfCheck(led)
        assert check.run().ok
        tamper(db, "UPDATE checkpoints SET note = replace(note, '500', '499') WHERE size = 500")
        res = check.run()
        assert not res.ok and res.problem == (
            "entry 500: the verified checkpoint at size 500 was changed"
        )


def test_first_pass_checks_the_baseline_signature(db: Path, sk: Ed25519PrivateKey) -> None:
    rows = sqlite3.connect(db).execute("SELECT leaf_hash FROM entries WHERE idx < 400")
    cr = CompactRange()
    cr.extend(bytes(r[0]) for r in rows)
    forged = sign_checkpoint(Checkpoint(ORIGIN, 400, cr.root()), Ed25519PrivateKey.generate())
    tamper(db, "UPDATE checkpoints SET note = ? WHERE size = 400", forged.note)
    with Ledger.open(db, sk, ORIGIN) as led:  # open checks roots, not signatures
        res = SelfCheck(led).run()
    assert not res.ok and res.problem is not None
    assert res.problem.startswith("entry 0: checkpoint at size 400: not signed")


def test_rotation_in_the_range_is_followed(db: Path, sk: Ed25519PrivateKey) -> None:
    new = Ed25519PrivateKey.generate()
    with Ledger.open(db, sk, ORIGIN) as led:
        check = SelfCheck(led)
        assert check.run().ok
        grow(led, 50)
        led.rotate_key(new, actor="operator:x")
        grow(led, 150)
        res = check.run()
        assert res.ok, res.problem
        assert res.verified_to == 701
    with Ledger.open(db, new, ORIGIN) as led:  # baseline key after a restart: the new one
        grow(led, 10)
        assert SelfCheck(led).run().ok


def test_writer_runs_it_in_its_thread_on_schedule(tmp_path: Path, sk: Ed25519PrivateKey) -> None:
    led = Ledger.open(tmp_path / "w.sqlite", sk, ORIGIN)
    seen: list[tuple[SelfCheckResult, str]] = []
    done = threading.Event()

    def verified(res: SelfCheckResult) -> None:
        seen.append((res, threading.current_thread().name))
        done.set()

    w = AuditWriter(led, verify_interval_s=0.2, verify_delay_s=0.05, on_verified=verified)
    w.start()
    for i in range(300):
        w.submit(ev(i), checkpoint=i % 100 == 99)
    assert w.flush()
    assert done.wait(5)
    deadline = time.monotonic() + 5
    while seen[-1][0].verified_to < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    w.stop()
    assert all(res.ok for res, _ in seen)
    assert {name for _, name in seen} == {"audit-writer"}
    assert seen[-1][0].verified_to == 300
    assert w.stats()["verifications"] == len(seen) and w.stats()["last_verify_ok"] == 1.0


@pytest.mark.hazard("H-08")
def test_monitor_sink_writes_the_verify_series(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = generate_key_files(tmp_path / "k")[0]
    db = tmp_path / "m.sqlite"
    metrics = MonitorMetrics(with_process=False)

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    sink = open_ledger_sink(
        str(db), str(key), "self-1", lambda *_: None, metrics, verify_interval_s=0.2
    )
    try:
        for i in range(200):
            sink.submit(ev(i), checkpoint=i % 100 == 99)
        assert sink.writer.flush()
        deadline = time.monotonic() + 10
        while sample("telesafe_ledger_last_verify_success") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sample("telesafe_ledger_last_verify_success") == 1
        assert sample("telesafe_ledger_verify_failures_total") == 0
        # Tamper with an entry the next pass covers.
        for i in range(200, 300):
            sink.submit(ev(i), checkpoint=i == 299)
        assert sink.writer.flush()
        tamper(db, "UPDATE entries SET body = replace(body, 'P1', 'P2') WHERE idx = 250")
        with caplog.at_level(logging.ERROR, logger="telesafe.audit"):
            while sample("telesafe_ledger_verify_failures_total") == 0 and (
                time.monotonic() < deadline + 10
            ):
                time.sleep(0.05)
        assert sample("telesafe_ledger_verify_failures_total") >= 1
        assert sample("telesafe_ledger_last_verify_success") == 0
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors and errors[0].startswith(
            "AUDIT LEDGER SELF-VERIFICATION FAILED: entry 250: body does not match its stored "
            "leaf hash"
        )
        assert "\n" not in errors[0]
    finally:
        sink.stop()


def test_an_unreadable_ledger_is_a_failed_pass_not_a_crash(db: Path, sk: Ed25519PrivateKey) -> None:
    led = Ledger.open(db, sk, ORIGIN)
    check = SelfCheck(led)
    led.close()
    res = check.run()
    assert not res.ok and res.problem is not None
    assert "cannot read the ledger: ledger is closed" in res.problem
