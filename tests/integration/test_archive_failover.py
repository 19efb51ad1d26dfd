"""One post-operative report across a failover, on the real broker (issue 17).

Three `telesafe run` instances share the work; the governance archive (`telesafe audit
archive`) follows the audit topic. The owner of procedure P latches a safe-stop that the
robot acknowledges, and is SIGKILLed; a survivor takes P over with the latch restored, an
operator re-arms it there, and a new breach stops the robot again. The archive is itself
SIGKILLed and restarted on the way. At the end, the report built from the archive and the
one built from the three ledgers directly cover P end to end, show the hand-over and both
stops with inclusion proofs that `telesafe audit verify-proof` accepts, and match on every
count; a tampered archive copy is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from monitor.audit.checkpoint import generate_key_files
from monitor.audit.mirror import EntryRecord, parse_record
from monitor.audit.store import Store
from monitor.icd.models import RearmRequest
from monitor.icd.topics import Topics
from monitor.kafka.settings import KafkaSettings
from monitor.report.cli import _load_archive
from monitor.report.fleet import build_fleet_report
from monitor.report.model import ProcedureReport, fmt_utc
from monitor.sim.faults import parse_spec
from monitor.sim.runner import SimConfig, Simulation
from tests.integration.monitorkit import TopicWatcher, free_port, http_json, run_monitor

PID = "LDN-GIB-0001"
LATE_FAULT_S = 27.0  # sim time of the breach after the takeover
DURATION_S = 31.0


@contextlib.contextmanager
def run_archive(
    bootstrap: str, prefix: str, directory: Path, keys: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "monitor",
        "audit",
        "archive",
        "--dir",
        str(directory),
        "--trusted-keys",
        str(keys),
        "--bootstrap",
        bootstrap,
        "--topic-prefix",
        prefix,
        "--http-port",
        str(port),
        "--stall-after",
        "5",
    ]
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError):
                if http_json(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                    break
            assert time.monotonic() < deadline, "archive not ready:\n" + log.read_text()
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)


def audit_events(watch: TopicWatcher, event: str) -> list[dict[str, Any]]:
    """Ledger entries of P mirrored on the audit topic (the exact hashed bytes)."""
    out = []
    for s in watch.snapshot():
        rec = parse_record(s.value)
        if isinstance(rec, EntryRecord) and not rec.replay:
            e = json.loads(rec.body)
            if e.get("procedure_id") == PID and e.get("event") == event:
                out.append({**e, "_origin": rec.origin})
    return out


def rows(path: Path) -> tuple[list[bytes], list[tuple[int, str]]]:
    store = Store(path, readonly=True)
    try:
        return [bytes(b) for _, _, b in store.iter_entries()], store.checkpoints()
    finally:
        store.close()


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *argv], capture_output=True, text=True, timeout=180
    )


def counts(r: ProcedureReport) -> dict[str, Any]:
    return {
        "entries": r.entry_count,
        "duplicates": r.duplicates,
        "runs": r.runs,
        "stops": [
            (
                s.command_id,
                s.instance,
                s.rule,
                s.ack.result if s.ack else None,
                s.ack.instance if s.ack else None,
                s.rearm.instance if s.rearm else None,
            )
            for s in r.stops
        ],
        "handovers": [
            (
                h.from_instance,
                h.to_instance,
                h.opened_by,
                h.released,
                h.latch_before,
                h.latch_restored,
                h.gap_s,
            )
            for h in r.handovers
        ],
        "timeline": [(t.event, t.instance, t.index, t.command_id) for t in r.timeline],
        "instances": [
            (
                i.label,
                i.origin,
                i.entries,
                i.duplicates,
                i.first_index,
                i.last_index,
                i.checkpoint.size if i.checkpoint else None,
            )
            for i in r.instances
        ],
        "proofs": [(p.what, p.instance, p.index, p.size, p.verified, p.proof) for p in r.proofs],
        "holes": r.holes,
        "notes": r.notes,
        "warnings": r.warnings_raised,
        "opened": (r.opened_utc_ns, r.opened_by, r.started),
        "closed": (r.ended_utc_ns, r.end_reason, r.closed_utc_ns, r.final_state),
    }


@pytest.mark.hazard("H-04")
def test_report_across_a_failover_from_the_archive_and_from_the_ledgers(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    key, pub = generate_key_files(tmp_path / "fleet.key")  # one key, as the Helm chart does
    trusted = tmp_path / "trusted-keys"
    trusted.write_text(f"telesafe/itest-* {pub.name}\n")
    archive = tmp_path / "archive"
    archive.mkdir()
    alog = tmp_path / "archive.log"
    ports = [free_port() for _ in range(3)]
    ledgers = {f"itest-{p}": tmp_path / f"ledger-{p}.sqlite" for p in ports}

    def monitor(stack: contextlib.ExitStack, port: int) -> Any:
        return stack.enter_context(
            run_monitor(
                kafka_bootstrap,
                topic_prefix,
                tmp_path,
                "--ledger",
                str(ledgers[f"itest-{port}"]),
                "--signing-key",
                str(key),
                port=port,
            )
        )

    with contextlib.ExitStack() as stack:
        arch = stack.enter_context(
            run_archive(kafka_bootstrap, topic_prefix, archive, trusted, alog)
        )
        watch = TopicWatcher(kafka_bootstrap, [topics.commands, topics.audit])
        stack.callback(watch.close)
        mons = {f"itest-{p}": monitor(stack, p) for p in ports}
        time.sleep(2.0)  # let the group settle after the staggered joins
        faults = [
            parse_spec("heartbeat-stop:robot@4s,for=0.8s,procedure=0"),
            parse_spec(f"heartbeat-stop:robot@{LATE_FAULT_S}s,for=0.8s,procedure=0"),
        ]
        sim = Simulation(
            SimConfig(duration=DURATION_S, procedures=2, faults=faults, seed=5, kinematics=False),
            KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix),
        )
        sim.start()
        stack.callback(sim.stop)

        # The first stop, latched and acknowledged under P's first owner.
        assert watch.wait_for(lambda: audit_events(watch, "safe_stop_acknowledged"), 15), (
            "no acknowledged safe-stop before the kill"
        )
        (stop1,) = audit_events(watch, "safe_stop_issued")
        victim_id = stop1["monitor_id"]
        time.sleep(1.0)
        mons[victim_id].proc.send_signal(signal.SIGKILL)
        mons[victim_id].proc.wait(timeout=5)
        # The archive dies too, and comes back: it resumes where it was.
        arch.send_signal(signal.SIGKILL)
        arch.wait(timeout=5)
        arch = stack.enter_context(
            run_archive(kafka_bootstrap, topic_prefix, archive, trusted, alog)
        )

        # A survivor takes P over with the latch, and re-arms it for an operator.
        assert watch.wait_for(lambda: audit_events(watch, "latch_restored"), 25), (
            "P was not taken over with its latch"
        )
        (restored,) = audit_events(watch, "latch_restored")
        assert restored["data"]["command_id"] == stop1["data"]["command_id"]
        prod = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
        for _ in range(20):  # an operator retries while the site still looks unhealthy
            req = RearmRequest(
                v=1,
                type="rearm_request",
                procedure_id=PID,
                operator_id="dr-ok",
                reason="robot checked",
                requested_at=time.time_ns(),
                command_id=stop1["data"]["command_id"],
                request_id=str(uuid.uuid4()),
            )
            prod.send(topics.operator, key=PID.encode(), value=req.model_dump_json().encode())
            prod.flush()
            if watch.wait_for(lambda: audit_events(watch, "rearm_accepted"), 0.5):
                break
        prod.close()
        assert audit_events(watch, "rearm_accepted"), "the re-arm was never accepted"
        # The breach after the takeover, and the end of the procedure.
        assert watch.wait_for(
            lambda: len(audit_events(watch, "safe_stop_issued")) >= 2, LATE_FAULT_S + 15
        ), "no safe-stop after the takeover"
        assert watch.wait_for(lambda: audit_events(watch, "procedure_closed"), 30)
        sim.wait(timeout=30)
        survivor_id = restored["monitor_id"]
        assert survivor_id != victim_id

        # Stop the survivors (final checkpoints), then the killed instance comes back once:
        # it mirrors again what its producer had not delivered, and signs its tail.
        for mid, m in mons.items():
            if mid != victim_id:
                m.proc.terminate()
                m.proc.wait(timeout=20)
        with run_monitor(
            kafka_bootstrap,
            topic_prefix,
            tmp_path,
            "--ledger",
            str(ledgers[victim_id]),
            "--signing-key",
            str(key),
            port=int(victim_id.removeprefix("itest-")),
        ):
            time.sleep(1.0)
        arch.terminate()
        arch.wait(timeout=15)
    # The archive reads the rest of the topic.
    once = cli(
        "audit",
        "archive",
        "--dir",
        str(archive),
        "--trusted-keys",
        str(trusted),
        "--bootstrap",
        kafka_bootstrap,
        "--topic-prefix",
        topic_prefix,
        "--once",
    )
    assert once.returncode == 0, once.stdout + once.stderr + alog.read_text()[-4000:]
    assert "REFUSED" not in alog.read_text()

    # Every copy is the instance's ledger, byte for byte (entries and signed checkpoints).
    for mid, led in ledgers.items():
        copy = archive / "ledgers" / f"telesafe%2F{mid}.sqlite"
        assert rows(copy) == rows(led), mid

    # The report from the archive and the one from the three ledgers.
    from_archive = build_fleet_report(_load_archive(archive, trusted)[0], PID)
    ledger_args: list[str] = []
    for led in ledgers.values():
        ledger_args += ["--ledger", str(led)]
    from monitor.audit.checkpoint import load_public_key
    from monitor.audit.verified import load_verified

    direct = build_fleet_report(
        [load_verified(led, load_public_key(pub)) for led in ledgers.values()], PID
    )
    assert counts(from_archive) == counts(direct)

    r = direct
    story = "\n".join(
        f"{fmt_utc(t.t_utc_ns)} {t.instance} #{t.index} {t.event} {t.detail}" for t in r.timeline
    )
    why = f"{r.runs} run(s); the latest:\n{story}\n{r.notes}\n{r.instances}"
    assert r.runs == 1, why
    assert not r.holes and r.evidence_ok, why
    assert r.started and r.end_reason and r.closed_utc_ns is not None, why  # end to end
    assert r.final_state == "safe_stopped"  # closed with the second stop latched (acknowledged)
    assert r.monitor_ids[0] == victim_id and survivor_id in r.monitor_ids
    handover = next(h for h in r.handovers if h.from_instance == victim_id)
    assert handover.to_instance == survivor_id and handover.opened_by == "latch_state"
    assert not handover.released and handover.latch_carried is True
    assert handover.gap_s is not None and 0 < handover.gap_s < 30
    assert len(r.stops) == 2
    first, second = r.stops
    assert (first.instance, first.command_id) == (victim_id, stop1["data"]["command_id"])
    assert first.ack is not None and first.ack.instance == victim_id
    assert first.rearm is not None and first.rearm.instance == survivor_id
    assert second.instance == survivor_id
    issued = [p for p in r.proofs if p.what == "issued"]
    assert [p.instance for p in issued] == [victim_id, survivor_id]
    assert all(p.verified for p in r.proofs)

    # The command: both sources, proofs checked offline with verify-proof.
    for name, argv in (
        ("ledgers", [*ledger_args, "--pubkey", str(pub)]),
        ("archive", ["--archive", str(archive), "--trusted-keys", str(trusted)]),
    ):
        proofs = tmp_path / f"proofs-{name}"
        proofs.mkdir()
        out = cli(
            "report",
            *argv,
            "--procedure",
            PID,
            "--out",
            str(tmp_path / f"{name}.html"),
            "--proofs",
            str(proofs),
        )
        assert out.returncode == 0, out.stderr
        assert f"{len(r.handovers)} hand-over(s)" in out.stdout
        page = (tmp_path / f"{name}.html").read_text()
        assert "Hand-over at" in page and "carried across" in page
        files = sorted(proofs.glob("stop-*-issued.json"))
        assert len(files) == 2
        for f in sorted(proofs.iterdir()):
            ok = cli("audit", "verify-proof", str(f), "--pubkey", str(pub))
            assert ok.returncode == 0, (f.name, ok.stderr)
    same = sorted(p.name for p in (tmp_path / "proofs-ledgers").iterdir())
    assert same == sorted(p.name for p in (tmp_path / "proofs-archive").iterdir())
    for n in same:
        assert (tmp_path / "proofs-ledgers" / n).read_bytes() == (
            tmp_path / "proofs-archive" / n
        ).read_bytes()

    # A tampered archive copy is refused, by the report and by the archive itself.
    copy = archive / "ledgers" / f"telesafe%2F{victim_id}.sqlite"
    con = sqlite3.connect(copy)
    con.execute("DROP TRIGGER entries_no_update")
    con.execute(
        "UPDATE entries SET body = replace(body, 'heartbeat_silence', 'heartbeat_silencE')"
        f" WHERE idx = {first.index}"
    )
    con.commit()
    con.close()
    refused = cli(
        "report",
        "--archive",
        str(archive),
        "--trusted-keys",
        str(trusted),
        "--procedure",
        PID,
        "--out",
        str(tmp_path / "tampered.html"),
    )
    assert refused.returncode == 1
    assert f"refusing to report: archived copy of telesafe/{victim_id}" in refused.stderr
    assert f"entry {first.index}" in refused.stderr
    again = cli(
        "audit",
        "archive",
        "--dir",
        str(archive),
        "--trusted-keys",
        str(trusted),
        "--bootstrap",
        kafka_bootstrap,
        "--topic-prefix",
        topic_prefix,
        "--once",
    )
    assert again.returncode == 1 and "REFUSED" in again.stdout
    print(
        f"takeover gap {handover.gap_s:.1f} s; {r.entry_count} entries of {PID} from "
        f"{len(r.monitor_ids)} instances, {r.duplicates} duplicate(s) shown once"
    )
