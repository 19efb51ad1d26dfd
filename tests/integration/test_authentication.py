"""ICD §8 on the real broker: signed sites, unsigned/forged records, replayed heartbeats."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from monitor.audit.checkpoint import generate_key_files
from monitor.icd.topics import Topics
from monitor.security.signing import Signer
from tests.integration.monitorkit import TopicWatcher, http_text, run_monitor

PID = "AUTH-0001"


class SignedSites:
    """Both sites heartbeating at 50 Hz with signatures; the robot can stop or go unsigned."""

    def __init__(self, bootstrap: str, prefix: str, signers: dict[str, Signer]) -> None:
        self.topics = Topics(prefix)
        self.prod = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=0)
        self.signers = signers
        self.seq = {"console": 0, "robot": 0}
        self.robot_mode = "signed"  # signed | unsigned | silent
        self.captured: tuple[bytes, list[tuple[str, bytes]]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def value(self, site: str, **body: Any) -> bytes:
        self.seq[site] += 1
        rec = {"v": 1, "procedure_id": PID, "site": site, "seq": self.seq[site],
               "sent_at": time.time_ns(), **body}
        return json.dumps(rec).encode()

    def send(self, site: str, value: bytes, signed: bool = True) -> list[tuple[str, bytes]]:
        hdrs = self.signers[site].headers(value) if signed else []
        self.prod.send(self.topics.telemetry(site), key=PID.encode(), value=value,
                       headers=hdrs)  # type: ignore[arg-type]
        return hdrs

    def heartbeat(self, site: str) -> bytes:
        return self.value(site, type="heartbeat", state="operating",
                          clock={"source": "ptp", "offset_ns": 0, "max_error_ns": 1000})

    def _run(self) -> None:
        while not self._stop.is_set():
            self.send("console", self.heartbeat("console"))
            if self.robot_mode != "silent":
                v = self.heartbeat("robot")
                hdrs = self.send("robot", v, signed=self.robot_mode == "signed")
                if self.robot_mode == "signed" and self.captured is None and self.seq["robot"] > 5:
                    self.captured = (v, hdrs)
            time.sleep(0.02)

    def start(self) -> None:
        self.send("robot", self.value("robot", type="procedure_start", surgeon_id="s",
                                      robot={"model": "Toumai", "serial": "1"}, arms=["psm1"]))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.prod.flush()
        self.prod.close()


def _keys(tmp: Path) -> dict[str, Path]:
    out = {}
    for who in ("console", "robot", "dr-a", "dr-b", "monitor"):
        generate_key_files(tmp / f"{who}.key")
        out[who] = tmp / f"{who}.key"
    return out


@pytest.mark.hazard("H-06")
def test_signed_telemetry_forgery_and_replay(kafka_bootstrap: str, topic_prefix: str,
                                             tmp_path: Path) -> None:
    k = _keys(tmp_path)
    topics = Topics(topic_prefix)
    args = ["--trust-key", f"console:ldn-console={k['console']}.pub",
            "--trust-key", f"robot:gib-robot={k['robot']}.pub",
            "--trust-key", f"operator:dr-a={k['dr-a']}.pub",
            "--trust-key", f"operator:dr-b={k['dr-b']}.pub",
            "--command-key", f"telesafe-1={k['monitor']}",
            "--operators", "dr-a,dr-b"]
    signers = {"console": Signer.from_file("ldn-console", k["console"]),
               "robot": Signer.from_file("gib-robot", k["robot"])}
    with run_monitor(kafka_bootstrap, topic_prefix, tmp_path, *args) as mon:
        watch = TopicWatcher(kafka_bootstrap, [topics.commands, topics.deadletter, topics.audit])
        sites = SignedSites(kafka_bootstrap, topic_prefix, signers)
        try:
            sites.start()
            time.sleep(1.5)
            assert watch.of_type("safe_stop", PID) == [], "signed nominal traffic must pass"
            hb = watch.of_type("monitor_heartbeat", PID)
            # armed, or a transient warning if the loaded test machine stalled a sender
            assert hb and hb[-1]["status"] in ("armed", "warning"), hb[-1:]
            # Commands are signed by the monitor (ICD §8 last sentence).
            cmd = next(r for r in watch.snapshot() if r.topic == topics.commands)
            monitor_signer = Signer.from_file("telesafe-1", k["monitor"])
            assert cmd.headers["telesafe-key"] == b"telesafe-1"
            assert cmd.headers["telesafe-sig"] == monitor_signer.headers(cmd.value or b"")[0][1]

            # The robot's heartbeats go unsigned: rejected, so the robot is silent.
            t_unsigned = time.time()
            sites.robot_mode = "unsigned"
            assert watch.wait_for(lambda: bool(watch.of_type("safe_stop", PID)), 3.0), mon.log()
            stop = watch.of_type("safe_stop", PID)[0]
            assert stop["policy"]["rule"] == "heartbeat_silence"
            assert stop["_received_at"] - t_unsigned < 0.3 + 0.8
            dead = [r for r in watch.snapshot() if r.topic == topics.deadletter]
            assert any(b"unsigned" in r.headers["telesafe-error"] for r in dead)

            # A forged re-arm: signed by dr-a but claiming to be dr-b -> dead-lettered.
            req = {"v": 1, "type": "rearm_request", "procedure_id": PID, "operator_id": "dr-b",
                   "reason": "forged", "requested_at": time.time_ns(),
                   "command_id": stop["command_id"], "request_id": str(uuid.uuid4())}
            raw = json.dumps(req).encode()
            sites.robot_mode = "signed"
            time.sleep(0.5)  # sites healthy again, so only the forgery can stop the re-arm
            sites.prod.send(topics.operator, key=PID.encode(), value=raw,
                            headers=Signer.from_file("dr-a", k["dr-a"]).headers(raw))
            assert watch.wait_for(lambda: any(
                b"does not match" in r.headers.get("telesafe-error", b"")
                for r in watch.snapshot() if r.topic == topics.deadletter), 3.0)
            time.sleep(0.3)
            assert watch.of_type("rearm", PID) == []

            # The genuine dr-b re-arms; then a replay attack: the robot goes silent while an
            # attacker replays a captured, validly signed heartbeat (old seq): no liveness.
            raw = json.dumps({**req, "reason": "link checked", "requested_at": time.time_ns(),
                              "request_id": str(uuid.uuid4())}).encode()
            sites.prod.send(topics.operator, key=PID.encode(), value=raw,
                            headers=Signer.from_file("dr-b", k["dr-b"]).headers(raw))
            assert watch.wait_for(lambda: bool(watch.of_type("rearm", PID)), 3.0), mon.log()
            time.sleep(0.5)
            assert sites.captured is not None
            value, hdrs = sites.captured
            sites.robot_mode = "silent"
            t_silent = time.time()
            for _ in range(40):
                sites.prod.send(topics.telemetry_robot, key=PID.encode(), value=value,
                                headers=hdrs)
                time.sleep(0.02)
            stops = watch.of_type("safe_stop", PID)
            second = [s for s in stops if s["command_id"] != stop["command_id"]]
            assert second, "a replayed heartbeat must not keep a silent robot alive"
            assert second[0]["_received_at"] - t_silent < 0.3 + 0.8
            # The replayed copies were counted as duplicates (ICD §7: ignored and counted).
            time.sleep(0.6)  # a gauge refresh carries the engine's counts into the counters
            metrics = http_text(mon.url + "/metrics")
            dup = [ln for ln in metrics.splitlines()
                   if ln.startswith('telesafe_records_duplicate_total{site="robot"}')]
            assert dup and float(dup[0].split()[-1]) >= 30, dup
        finally:
            sites.stop()
            watch.close()
