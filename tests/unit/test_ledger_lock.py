"""One writer per ledger, one key per ledger, and failed starts that leave nothing behind.

Before the lock, a second `Ledger.open` of the same file succeeded silently and the two
writers then collided on `entries.idx` (UNIQUE constraint failed) and the first stopped
appending for good; a second key appended checkpoints that verified with neither key.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitor.audit.checkpoint import generate_key_files, key_id, load_private_key
from monitor.audit.cli import main as audit_main
from monitor.audit.ledger import Ledger, LedgerKeyMismatch, LedgerLocked
from monitor.audit.store import LedgerError
from monitor.audit.verified import load_verified
from monitor.audit.verify import verify
from monitor.metrics import MonitorMetrics
from monitor.service.ledger_sink import open_ledger_sink

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "telesafe/m-7"  # what `telesafe run --monitor-id m-7` uses

HOLDER = """
import sys
from monitor.audit.checkpoint import load_private_key
from monitor.audit.ledger import Ledger
led = Ledger.open(sys.argv[1], load_private_key(sys.argv[2]), sys.argv[3], holder="monitor m-7")
led.append_many([{"n": 1}])
led.checkpoint()
print("ready", flush=True)
sys.stdin.read()
"""


def ev(i: int) -> dict[str, Any]:
    return {"type": "NOTE", "procedure_id": "P1", "seq": i}


@pytest.fixture()
def key(tmp_path: Path) -> Path:
    return generate_key_files(tmp_path / "ledger.key")[0]


@pytest.fixture()
def holder(tmp_path: Path, key: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding `tmp_path/ledger.sqlite` as its writer."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "ledger.sqlite"), str(key), ORIGIN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.hazard("H-08")
def test_second_writer_in_one_process_is_refused(tmp_path: Path, key: Path) -> None:
    sk = load_private_key(key)
    first = Ledger.open(tmp_path / "l.db", sk, ORIGIN, holder="monitor m-1")
    with pytest.raises(LedgerLocked) as exc:
        Ledger.open(tmp_path / "l.db", sk, ORIGIN)
    assert str(exc.value) == (
        f"ledger {tmp_path / 'l.db'} is in use by pid {os.getpid()} (monitor m-1); "
        f"one writer per ledger"
    )
    # The first writer is unharmed: it goes on appending and checkpointing.
    assert first.append_many([ev(0), ev(1)]) == [0, 1]
    assert first.checkpoint() is not None
    first.close()
    # Closing releases the lock.
    again = Ledger.open(tmp_path / "l.db", sk, ORIGIN)
    assert again.append_many([ev(2)]) == [2]
    again.close()
    assert verify(tmp_path / "l.db", sk.public_key()).ok


@pytest.mark.hazard("H-08")
def test_second_writer_process_is_refused_naming_the_holder(
    tmp_path: Path, key: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(LedgerLocked, match=rf"in use by pid {holder.pid} \(monitor m-7\)"):
        Ledger.open(tmp_path / "ledger.sqlite", load_private_key(key), ORIGIN)


def test_a_sigkilled_writer_leaves_no_stale_lock(
    tmp_path: Path, key: Path, holder: subprocess.Popen[str]
) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    led = Ledger.open(tmp_path / "ledger.sqlite", load_private_key(key), ORIGIN)
    assert led.size() == 1
    led.close()


def test_readers_work_while_a_writer_holds_the_lock(
    tmp_path: Path, key: Path, holder: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, pub = tmp_path / "ledger.sqlite", Path(f"{key}.pub")
    assert audit_main(["audit", "verify", str(db), "--pubkey", str(pub)]) == 0
    assert audit_main(["audit", "show", str(db)]) == 0
    assert audit_main(["audit", "export", str(db), "--out", str(tmp_path / "b")]) == 0
    assert audit_main(["audit", "prove", str(db), "--entry", "0"]) == 0
    assert "OK: 1 entries" in capsys.readouterr().out
    assert load_verified(db, load_private_key(key).public_key()).covered == 1


@pytest.mark.hazard("H-08")
def test_a_different_signing_key_is_refused(tmp_path: Path, key: Path) -> None:
    sk, other = load_private_key(key), Ed25519PrivateKey.generate()
    with Ledger.open(tmp_path / "l.db", sk, ORIGIN) as led:
        led.append_many([ev(0)])
        led.checkpoint()
    with pytest.raises(LedgerKeyMismatch) as exc:
        Ledger.open(tmp_path / "l.db", other, ORIGIN)
    msg = str(exc.value)
    assert key_id(ORIGIN, sk.public_key()).hex() in msg
    assert key_id(ORIGIN, other.public_key()).hex() in msg
    assert "telesafe audit rotate-key" in msg
    # Nothing was written by the refused writer, and the refusal released the lock.
    with Ledger.open(tmp_path / "l.db", sk, ORIGIN) as led:
        assert led.size() == 1
    # A ledger whose first writer had no key is bound by the first one that has.
    with Ledger.open(tmp_path / "n.db", None, ORIGIN) as led:
        led.append_many([ev(0)])
    Ledger.open(tmp_path / "n.db", other, ORIGIN).close()
    with pytest.raises(LedgerKeyMismatch):
        Ledger.open(tmp_path / "n.db", sk, ORIGIN)


def test_older_ledger_is_bound_to_its_newest_checkpoint_key(tmp_path: Path, key: Path) -> None:
    sk, other = load_private_key(key), Ed25519PrivateKey.generate()
    db = tmp_path / "old.db"
    with Ledger.open(db, sk, ORIGIN) as led:
        led.append_many([ev(0)])
        led.checkpoint()
    # A ledger written before the binding existed has no meta.signing_key.
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER meta_no_delete")
    conn.execute("DELETE FROM meta WHERE key = 'signing_key'")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerKeyMismatch, match="has its newest checkpoint by key id"):
        Ledger.open(db, other, ORIGIN)
    with Ledger.open(db, sk, ORIGIN) as led:  # the right key binds it again
        led.append_many([ev(1)])
    assert (
        sqlite3.connect(db)
        .execute("SELECT count(*) FROM meta WHERE key = 'signing_key'")
        .fetchone()[0]
        == 1
    )


@pytest.mark.parametrize("where", ["missing_dir", "a_directory"])
def test_unusable_ledger_path_is_named_and_nothing_is_created(tmp_path: Path, where: str) -> None:
    path = tmp_path / "nope" / "l.sqlite" if where == "missing_dir" else tmp_path
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(LedgerError) as exc:
        open_ledger_sink(str(path), None, "m-1", lambda *_: None, MonitorMetrics())
    assert str(path) in str(exc.value)
    assert ("does not exist" if where == "missing_dir" else "is a directory") in str(exc.value)
    assert sorted(tmp_path.rglob("*")) == before  # no key files, no lock, no database


def test_failed_start_removes_the_key_it_generated(
    tmp_path: Path, key: Path, holder: subprocess.Popen[str]
) -> None:
    db = tmp_path / "ledger.sqlite"
    key.unlink()  # as if the holder had been started with another key
    Path(f"{key}.pub").unlink()
    with pytest.raises(LedgerLocked):
        open_ledger_sink(str(db), None, "m-1", lambda *_: None, MonitorMetrics())
    assert not key.exists() and not Path(f"{key}.pub").exists()


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "run", "--http-port", "0", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "TELESAFE_BOOTSTRAP": "127.0.0.1:1"},
    )


@pytest.mark.hazard("H-08")
def test_telesafe_run_refuses_a_held_ledger_in_one_line(
    tmp_path: Path, key: Path, holder: subprocess.Popen[str]
) -> None:
    res = _run(
        "--ledger",
        str(tmp_path / "ledger.sqlite"),
        "--signing-key",
        str(key),
        "--monitor-id",
        "m-7",
        cwd=tmp_path,
    )
    assert res.returncode != 0
    assert res.stderr.splitlines() == [
        f"telesafe run: cannot start: ledger {tmp_path / 'ledger.sqlite'} is in use by pid "
        f"{holder.pid} (monitor m-7); one writer per ledger"
    ], res.stderr
    assert "Traceback" not in res.stdout


@pytest.mark.parametrize("where", ["missing_dir", "a_directory"])
def test_telesafe_run_names_an_unusable_ledger_path(tmp_path: Path, where: str) -> None:
    (tmp_path / "d").mkdir()
    path = tmp_path / "nope" / "l.sqlite" if where == "missing_dir" else tmp_path / "d"
    before = sorted(tmp_path.rglob("*"))
    res = _run("--ledger", str(path), cwd=tmp_path)
    assert res.returncode != 0
    [line] = res.stderr.splitlines()
    assert line.startswith(f"telesafe run: cannot start: ledger {path}")
    assert sorted(tmp_path.rglob("*")) == before
