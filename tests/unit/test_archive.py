"""The audit mirror's format and the governance archive, without Kafka: records are
produced by the monitor's own ledger sink (`open_ledger_sink`, the real writer thread),
and fed to `Archive.ingest` in the orders a topic of several partitions can deliver."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.audit.archive.core import Archive, ArchiveError, Incoming
from monitor.audit.archive.trusted import TrustedKeys, TrustedKeysError
from monitor.audit.checkpoint import (
    generate_key_files,
    load_private_key,
    load_public_key,
    vkey,
)
from monitor.audit.ledger import Ledger
from monitor.audit.mirror import (
    CheckpointRecord,
    EntryRecord,
    MirrorError,
    checkpoint_value,
    entry_value,
    parse_record,
)
from monitor.audit.store import Store
from monitor.audit.verify import verify
from monitor.metrics import MonitorMetrics
from monitor.service.ledger_sink import REPLAY_ENTRIES, open_ledger_sink

MONITOR = "m1"
ORIGIN = f"telesafe/{MONITOR}"


# --- the mirror format -------------------------------------------------------------------


def test_entry_value_is_the_entry_and_gives_back_the_exact_leaf_bytes() -> None:
    body = '{"data":{"text":"naïve – ok"},"event":"operator_note","index":7}'.encode()
    value = entry_value(ORIGIN, body)
    obj = json.loads(value)  # readers of the topic still see the entry
    assert obj["event"] == "operator_note" and obj["ledger_origin"] == ORIGIN
    rec = parse_record(value)
    assert rec == EntryRecord(ORIGIN, 7, body)
    replayed = parse_record(entry_value(ORIGIN, body, replay=True))
    assert isinstance(replayed, EntryRecord) and replayed.body == body and replayed.replay


def test_checkpoint_value_round_trip() -> None:
    note = "telesafe/m1\n3\nAAAA\n\n— telesafe/m1 xyz\n"
    for replay in (False, True):
        rec = parse_record(checkpoint_value(ORIGIN, note, replay=replay))
        assert rec == CheckpointRecord(ORIGIN, note, replay)


@pytest.mark.parametrize(
    "value",
    [
        b'{"event":"x","procedure_id":"P"}',  # a mirror from before the format
        b'{"event":"x","ledgered":false}',  # written while the ledger had failed
        b"not json",
        None,
    ],
)
def test_other_records_are_not_ledger_records(value: bytes | None) -> None:
    assert parse_record(value) is None


@pytest.mark.parametrize(
    "value",
    [
        b'{"ledger_origin":7,"index":1}',
        b'{"ledger_origin":"o"}',
        b'{"ledger_origin":"o","event":"x"}',  # no index
        b'{"ledger_origin":"o","index":"1"}',
        b'{"ledger_origin":"o","ledger_checkpoint":5}',
        b'{"ledger_origin":"o","ledger_checkpoint":"n","x":1}',
    ],
)
def test_malformed_ledger_records_are_errors(value: bytes) -> None:
    with pytest.raises(MirrorError):
        parse_record(value)


# --- a monitor's ledger sink producing mirror records ------------------------------------


class Topic:
    """What `Publisher.audit` would put on the audit topic: (key, value) per record."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []

    def publish(self, entries: list[dict[str, Any]], encode: Any) -> None:
        for e in entries:
            pid = e.get("procedure_id")
            self.records.append((pid.encode() if pid else None, encode(e)))

    def incoming(self, start: int = 0) -> list[Incoming]:
        return [
            Incoming(f"audit:0:{i}", v, ("audit", 0, i + 1))
            for i, (_, v) in enumerate(self.records[start:], start)
        ]


def _entry(pid: str | None, n: int, **data: Any) -> dict[str, Any]:
    return {
        "schema": "telesafe.audit/1",
        "event": data.pop("event", "operator_note"),
        "procedure_id": pid,
        "actor": "operator:dr-a",
        "monitor_id": MONITOR,
        "boot_id": "b",
        "t_utc_ns": 1_773_830_400_000_000_000 + n,
        "data": {"n": n, **data},
    }


def run_sink(ledger: Path, key: Path, topic: Topic, batches: list[list[dict[str, Any]]]) -> None:
    sink = open_ledger_sink(
        str(ledger), str(key), MONITOR, topic.publish, MonitorMetrics(), verify_interval_s=0
    )
    try:
        for batch in batches:
            for i, e in enumerate(batch):
                sink.submit(e, checkpoint=i == len(batch) - 1)
            assert sink.writer.flush(5.0)
    finally:
        sink.stop()


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    key = tmp_path / "m1.key"
    generate_key_files(key)
    return key


@pytest.fixture
def trusted(tmp_path: Path, keyfile: Path) -> TrustedKeys:
    f = tmp_path / "trusted-keys"
    f.write_text(f"# the fleet\n{ORIGIN}  {keyfile.name}.pub\n")
    return TrustedKeys.load(f)


def ledger_rows(path: Path) -> tuple[list[bytes], list[tuple[int, str]]]:
    store = Store(path, readonly=True)
    try:
        return [bytes(b) for _, _, b in store.iter_entries()], store.checkpoints()
    finally:
        store.close()


def test_sink_mirrors_exact_bytes_and_every_checkpoint(tmp_path: Path, keyfile: Path) -> None:
    topic = Topic()
    ledger = tmp_path / "l.sqlite"
    run_sink(ledger, keyfile, topic, [[_entry("P-1", 0), _entry(None, 1)], [_entry("P-1", 2)]])
    bodies, cps = ledger_rows(ledger)
    parsed = [parse_record(v) for _, v in topic.records]
    assert [p.body for p in parsed if isinstance(p, EntryRecord)] == bodies
    assert [p.note for p in parsed if isinstance(p, CheckpointRecord)] == [n for _, n in cps]
    # Entries keep the procedure as their key (telesafe rearm reads that partition).
    keys = [
        k for (k, _), p in zip(topic.records, parsed, strict=True) if isinstance(p, EntryRecord)
    ]
    assert keys == [b"P-1", None, b"P-1"]
    assert not any(p.replay for p in parsed if p is not None)


def test_sink_mirrors_the_tail_again_at_start(tmp_path: Path, keyfile: Path) -> None:
    topic = Topic()
    ledger = tmp_path / "l.sqlite"
    run_sink(ledger, keyfile, topic, [[_entry("P", i) for i in range(10)]] * 3)
    first = len(topic.records)
    run_sink(ledger, keyfile, topic, [[_entry("P", 99)]])
    again = [parse_record(v) for _, v in topic.records[first:]]
    replayed = [p for p in again if p is not None and p.replay]
    assert [p.index for p in replayed if isinstance(p, EntryRecord)] == list(range(30))
    assert len([p for p in replayed if isinstance(p, CheckpointRecord)]) == 3
    assert REPLAY_ENTRIES >= 1024


# --- the archive ---------------------------------------------------------------------------


def fill(
    tmp_path: Path, keyfile: Path, batches: int = 6, per: int = 7, base: int = 0
) -> tuple[Path, Topic]:
    topic = Topic()
    ledger = tmp_path / "l.sqlite"
    run_sink(
        ledger,
        keyfile,
        topic,
        [[_entry(f"P-{b % 2}", base + b * per + i) for i in range(per)] for b in range(batches)],
    )
    return ledger, topic


def assert_same_ledger(copy: Path, source: Path, key: Path) -> None:
    assert ledger_rows(copy) == ledger_rows(source)
    res = verify(copy, load_public_key(f"{key}.pub"))
    assert res.ok, res.problems


def the_copy(directory: Path) -> Path:
    (copy,) = (directory / "ledgers").glob("*.sqlite")
    return copy


def test_archive_rebuilds_an_identical_verified_copy_in_any_order(
    tmp_path: Path, keyfile: Path, trusted: TrustedKeys
) -> None:
    ledger, topic = fill(tmp_path, keyfile)
    records = topic.incoming()
    random.Random(7).shuffle(records)  # several partitions: any interleaving
    d = tmp_path / "archive"
    d.mkdir()
    arch = Archive(d, trusted)
    try:
        for i in range(0, len(records), 5):
            arch.ingest(records[i : i + 5])
        (st,) = arch.status()
        assert (st.entries, st.staged, st.pending, st.stalled) == (42, 0, 0, False)
    finally:
        arch.close()
    assert the_copy(d).name == "telesafe%2Fm1.sqlite"
    assert_same_ledger(the_copy(d), ledger, keyfile)
    # `telesafe audit verify` accepts the copy with the instance's key.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "audit",
            "verify",
            str(the_copy(d)),
            "--pubkey",
            f"{keyfile}.pub",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "OK: 42 entries" in out.stdout


def test_reading_again_and_restarting_change_nothing(
    tmp_path: Path, keyfile: Path, trusted: TrustedKeys
) -> None:
    ledger, topic = fill(tmp_path, keyfile)
    d = tmp_path / "archive"
    d.mkdir()
    half = len(topic.records) // 2
    arch = Archive(d, trusted)
    arch.ingest(topic.incoming()[:half])
    arch.close()
    arch = Archive(d, trusted)  # restart: state and copy survive
    try:
        assert arch.state.positions("audit") == {0: half}
        res = arch.ingest(topic.incoming())  # re-read from the start: all idempotent
        assert res.refused == 0 and res.duplicates == half
        again = arch.ingest(topic.incoming())
        assert (again.appended_entries, again.appended_checkpoints, again.refused) == (0, 0, 0)
        assert arch.state.refusal_count() == 0
    finally:
        arch.close()
    assert_same_ledger(the_copy(d), ledger, keyfile)


def test_one_archive_process_per_directory(tmp_path: Path, trusted: TrustedKeys) -> None:
    arch = Archive(tmp_path, trusted)
    try:
        with pytest.raises(ArchiveError, match="in use by pid"):
            Archive(tmp_path, trusted)
    finally:
        arch.close()
    with pytest.raises(ArchiveError, match="does not exist"):
        Archive(tmp_path / "nope", trusted)


def test_a_gap_waits_and_an_import_fills_it(
    tmp_path: Path, keyfile: Path, trusted: TrustedKeys
) -> None:
    ledger, topic = fill(tmp_path, keyfile)
    records = topic.incoming()
    lost = next(
        i
        for i, r in enumerate(records)
        if isinstance(p := parse_record(r.value), EntryRecord) and p.index == 20
    )
    d = tmp_path / "archive"
    d.mkdir()
    arch = Archive(d, trusted, stall_after_s=0.0)
    try:
        arch.ingest(records[:lost] + records[lost + 1 :])
        (st,) = arch.status()
        assert st.entries < 21 <= st.entries + st.staged + 1 and st.pending and st.stalled
        res = arch.import_source(ledger)
        assert res.refused == 0
        (st,) = arch.status()
        assert (st.entries, st.pending, st.stalled) == (42, 0, False)
    finally:
        arch.close()
    assert_same_ledger(the_copy(d), ledger, keyfile)


def test_forged_and_altered_records_are_refused_and_the_genuine_ones_win(
    tmp_path: Path, keyfile: Path, trusted: TrustedKeys
) -> None:
    ledger, topic = fill(tmp_path, keyfile, batches=2)
    records = topic.incoming()
    refusals: list[Any] = []
    d = tmp_path / "archive"
    d.mkdir()
    arch = Archive(d, trusted, on_refusal=refusals.append)
    try:
        # A forged entry 3 arrives first, then the genuine records.
        genuine = next(
            parse_record(r.value)
            for r in records
            if isinstance(p := parse_record(r.value), EntryRecord) and p.index == 3
        )
        assert isinstance(genuine, EntryRecord)
        forged = genuine.body.replace(b'"n":3', b'"n":333')
        arch.ingest([Incoming("evil:0", entry_value(ORIGIN, forged))])
        arch.ingest(records)
        # A note edited after signing, and a malformed record.
        (s, note) = ledger_rows(ledger)[1][-1]
        edited = note.replace(f"\n{s}\n", f"\n{s + 100}\n")
        arch.ingest([Incoming("evil:1", checkpoint_value(ORIGIN, edited))])
        arch.ingest([Incoming("evil:2", b'{"ledger_origin":"telesafe/m1","index":"x"}')])
        # An entry contradicting one already archived.
        arch.ingest([Incoming("evil:3", entry_value(ORIGIN, forged))])
    finally:
        arch.close()
    assert_same_ledger(the_copy(d), ledger, keyfile)
    reasons = [r.reason for r in refusals]
    assert reasons.count("ambiguous") == 1  # both bodies for entry 3 held until a checkpoint
    assert reasons.count("conflict") == 2  # the forged one lost, and came again later
    assert "bad_signature" in reasons and "malformed" in reasons


def test_a_validly_signed_fork_is_refused(
    tmp_path: Path, keyfile: Path, trusted: TrustedKeys
) -> None:
    _, topic = fill(tmp_path, keyfile, batches=2)
    d = tmp_path / "archive"
    d.mkdir()
    arch = Archive(d, trusted)
    arch.ingest(topic.incoming())
    arch.close()
    # The instance's ledger is lost and re-created with the same key and origin.
    for f in tmp_path.glob("l.sqlite*"):
        f.unlink()
    _, topic2 = fill(tmp_path, keyfile, batches=3, base=1000)
    refusals: list[Any] = []
    arch = Archive(d, trusted, on_refusal=refusals.append)
    try:
        arch.ingest(topic2.incoming())
    finally:
        arch.close()
    assert {r.reason for r in refusals} >= {"fork", "conflict"}
    entries, _ = ledger_rows(the_copy(d))
    assert len(entries) == 14  # what it had, untouched


def test_unknown_origin_is_held_until_trusted(tmp_path: Path, keyfile: Path) -> None:
    _, topic = fill(tmp_path, keyfile, batches=2)
    other = tmp_path / "other.key"
    generate_key_files(other)
    f = tmp_path / "trusted-keys"
    f.write_text(f"telesafe/someone-else {other.name}.pub\n")
    d = tmp_path / "archive"
    d.mkdir()
    refusals: list[Any] = []
    arch = Archive(d, TrustedKeys.load(f), on_refusal=refusals.append)
    arch.ingest(topic.incoming())
    (st,) = arch.status()
    assert not st.trusted and st.staged == 14 and st.pending == 2 and st.entries == 0
    arch.close()
    assert [r.reason for r in refusals] == ["unknown_origin"]
    # The operator adds the origin (a verifier-key line this time) and restarts.
    pub = load_public_key(f"{keyfile}.pub")
    f.write_text(f.read_text() + vkey(ORIGIN, pub) + "\n")
    arch = Archive(d, TrustedKeys.load(f))
    try:
        arch.apply([ORIGIN])
        st2 = next(s for s in arch.status() if s.origin == ORIGIN)
        assert (st2.trusted, st2.entries, st2.staged) == (True, 14, 0)
    finally:
        arch.close()


def test_a_wrong_trusted_key_refuses_every_checkpoint(tmp_path: Path, keyfile: Path) -> None:
    _, topic = fill(tmp_path, keyfile, batches=2)
    other = tmp_path / "other.key"
    generate_key_files(other)
    f = tmp_path / "trusted-keys"
    f.write_text(f"telesafe/* {other.name}.pub\n")  # a pattern, but the wrong key
    d = tmp_path / "archive"
    d.mkdir()
    arch = Archive(d, TrustedKeys.load(f), stall_after_s=0.0)
    try:
        arch.ingest(topic.incoming())
        (st,) = arch.status()
        assert st.entries == 0 and st.stalled  # not signed by the key in force: waits
    finally:
        arch.close()


def test_key_rotation_is_followed(tmp_path: Path, keyfile: Path, trusted: TrustedKeys) -> None:
    topic = Topic()
    ledger = tmp_path / "l.sqlite"
    run_sink(ledger, keyfile, topic, [[_entry("P", i) for i in range(5)]])
    new = tmp_path / "new.key"
    generate_key_files(new)
    led = Ledger.open(ledger, load_private_key(keyfile), ORIGIN)
    led.rotate_key(load_private_key(new), actor="operator:test", reason="yearly")
    led.close()
    run_sink(ledger, new, topic, [[_entry("P", 10 + i) for i in range(5)]])
    d = tmp_path / "archive"
    d.mkdir()
    arch = Archive(d, trusted)
    try:
        res = arch.ingest(topic.incoming())
        assert res.refused == 0
        (st,) = arch.status()
        assert st.pending == 0 and st.entries == 11
    finally:
        arch.close()
    assert_same_ledger(the_copy(d), ledger, keyfile)
    arch = Archive(d, trusted)  # reopening re-verifies the copy across the rotation
    arch.close()


def test_a_tampered_copy_is_refused_and_left_alone(
    tmp_path: Path, keyfile: Path, trusted: TrustedKeys
) -> None:
    _, topic = fill(tmp_path, keyfile, batches=2)
    d = tmp_path / "archive"
    d.mkdir()
    arch = Archive(d, trusted)
    arch.ingest(topic.incoming()[:10])
    arch.close()
    copy = the_copy(d)
    con = sqlite3.connect(copy)
    con.execute("DROP TRIGGER entries_no_update")
    con.execute("UPDATE entries SET body = replace(body, '\"n\":2', '\"n\":9') WHERE idx = 2")
    con.commit()
    con.close()
    before = copy.read_bytes()
    arch = Archive(d, trusted)
    try:
        (st,) = arch.status()
        assert st.stalled and "entry 2" in (st.refused_copy or "")
        arch.ingest(topic.incoming())
    finally:
        arch.close()
    assert copy.read_bytes() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "names no origin"),
        ("telesafe/a missing.pub\n", "cannot read public key"),
        ("a b c\n", "want `ORIGIN KEYFILE`"),
        ("telesafe/a+bad\n", "malformed verifier key"),
    ],
)
def test_trusted_keys_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "tk"
    f.write_text(text)
    with pytest.raises(TrustedKeysError, match=message):
        TrustedKeys.load(f)


def test_trusted_keys_exact_beats_pattern(tmp_path: Path) -> None:
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    generate_key_files(a)
    generate_key_files(b)
    f = tmp_path / "tk"
    f.write_text("telesafe/* a.key.pub\ntelesafe/m1 b.key.pub\n")
    tk = TrustedKeys.load(f)
    pa, pb = load_public_key(f"{a}.pub"), load_public_key(f"{b}.pub")
    assert tk.key_for("telesafe/m1") == pb and tk.key_for("telesafe/m2") == pa
    assert tk.key_for("other/m1") is None


def test_cli_import_and_exit_codes(tmp_path: Path, keyfile: Path, trusted: TrustedKeys) -> None:
    ledger, _ = fill(tmp_path, keyfile, batches=2)
    d = tmp_path / "archive"
    d.mkdir()
    tk = tmp_path / "trusted-keys"

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitor", "audit", "archive", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )

    out = cli("--dir", str(d), "--trusted-keys", str(tk), "--import", str(ledger))
    assert out.returncode == 0, out.stderr
    assert "14 entries and 2 checkpoints added" in out.stdout
    assert "telesafe/m1" in out.stdout and " ok" in out.stdout
    again = cli("--dir", str(d), "--trusted-keys", str(tk), "--import", str(ledger))
    assert again.returncode == 0 and "0 entries and 0 checkpoints added" in again.stdout
    bad = cli("--dir", str(tmp_path / "nope"), "--trusted-keys", str(tk), "--import", str(ledger))
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    bad = cli("--dir", str(d), "--trusted-keys", str(tmp_path / "nope"), "--once")
    assert bad.returncode == 2 and "cannot read trusted keys" in bad.stderr


def test_bundles_dropped_in_the_inbox_are_imported_once_complete(
    tmp_path: Path, keyfile: Path, trusted: TrustedKeys
) -> None:
    from monitor.audit.export import export_bundle

    ledger, _ = fill(tmp_path, keyfile, batches=3)
    d = tmp_path / "archive"
    d.mkdir()
    inbox = d / "import"
    inbox.mkdir()
    export_bundle(ledger, inbox / "m1", None)
    entries = inbox / "m1" / "entries.jsonl"
    full = entries.read_bytes()
    entries.write_bytes(full[: len(full) // 2])  # still being copied
    arch = Archive(d, trusted)
    try:
        assert arch.import_inbox() == []
        assert (inbox / "m1").is_dir()
        entries.write_bytes(full)
        ((name, res),) = arch.import_inbox()
        assert name == "m1" and not isinstance(res, str) and res.appended_entries == 21
        assert not (inbox / "m1").exists() and len(list((inbox / "done").iterdir())) == 1
    finally:
        arch.close()
    assert_same_ledger(the_copy(d), ledger, keyfile)


def test_a_note_by_another_key_neither_enters_nor_blocks(
    tmp_path: Path, keyfile: Path, trusted: TrustedKeys
) -> None:
    from monitor.audit.checkpoint import Checkpoint, sign_checkpoint

    ledger, topic = fill(tmp_path, keyfile, batches=2)
    other = tmp_path / "other.key"
    generate_key_files(other)
    forged = sign_checkpoint(Checkpoint(ORIGIN, 5, b"\x01" * 32), load_private_key(other))
    refusals: list[Any] = []
    d = tmp_path / "archive"
    d.mkdir()
    arch = Archive(d, trusted, on_refusal=refusals.append)
    try:
        arch.ingest([Incoming("evil:0", checkpoint_value(ORIGIN, forged.note))])
        arch.ingest(topic.incoming())
        (st,) = arch.status()
        assert (st.entries, st.pending) == (14, 0)
    finally:
        arch.close()
    assert [r.reason for r in refusals] == ["bad_signature"]
    assert_same_ledger(the_copy(d), ledger, keyfile)
