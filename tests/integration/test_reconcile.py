"""A safe-stop published just before a crash (so never audited) is recorded at restart."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from monitor.audit.checkpoint import generate_key_files, load_public_key
from monitor.audit.ledger import Ledger
from monitor.icd.models import PolicyRef, SafeStop
from monitor.icd.topics import Topics
from tests.integration.monitorkit import free_port, run_monitor


@pytest.mark.hazard("H-08")
def test_restart_records_a_command_the_ledger_missed(kafka_bootstrap: str, topic_prefix: str,
                                                     tmp_path: Path) -> None:
    key = tmp_path / "ledger.key"
    generate_key_files(key)
    ledger_path = tmp_path / "ledger.sqlite"
    port = free_port()
    monitor_id = f"itest-{port}"
    cmd = SafeStop(command_id=str(uuid.uuid4()), procedure_id="CRASH-1",
                   issued_at=time.time_ns(), monitor_id=monitor_id,
                   policy=PolicyRef(pack="default", version="1.0.0", rule="heartbeat_silence"),
                   observed=301.0, threshold=300, reason="robot heartbeat silent for 301 ms")
    other = cmd.model_copy(update={"command_id": str(uuid.uuid4()), "monitor_id": "someone-else"})
    prod = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
    for c in (cmd, other):  # the crash: on the wire, never audited
        prod.send(Topics(topic_prefix).commands, key=b"CRASH-1",
                  value=c.model_dump_json().encode()).get(10)
    prod.close()

    with run_monitor(kafka_bootstrap, topic_prefix, tmp_path, "--ledger", str(ledger_path),
                     "--signing-key", str(key), port=port):
        time.sleep(0.5)
    ledger = Ledger.open(ledger_path, None, origin=f"telesafe/{monitor_id}")
    try:
        entries = [json.loads(ledger.entry_bytes(i)) for i in range(ledger.size())]
    finally:
        ledger.close()
    rec = [e for e in entries if e["event"] == "command_reconciled"]
    assert [e["data"]["command_id"] for e in rec] == [cmd.command_id], rec
    assert rec[0]["procedure_id"] == "CRASH-1"
    assert load_public_key(f"{key}.pub") is not None

    # A second restart finds it in the ledger and does not record it twice.
    with run_monitor(kafka_bootstrap, topic_prefix, tmp_path, "--ledger", str(ledger_path),
                     "--signing-key", str(key), port=port):
        time.sleep(0.5)
    ledger = Ledger.open(ledger_path, None, origin=f"telesafe/{monitor_id}")
    try:
        again = [json.loads(ledger.entry_bytes(i)) for i in range(ledger.size())]
    finally:
        ledger.close()
    assert len([e for e in again if e["event"] == "command_reconciled"]) == 1
