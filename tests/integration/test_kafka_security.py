"""A secured broker (SASL_SSL + SCRAM-SHA-512 + ACLs) with the real monitor on it.

One broker for the module, on free loopback ports with its own data dir (the shared
PLAINTEXT broker on 9092/9093 is not touched), stopped at the end even on failure:

* (a) clients without valid credentials are refused: PLAINTEXT, TLS without SASL,
  a wrong password, an unknown user, a CA the client does not know;
* (b) ACLs: a site may write only its own telemetry topic (ICD §2); a site reads the
  commands topic with kafka-python (no group) and with confluent-kafka (a group id from
  its own ``telesafe-site-<site>`` prefix, as docs/icd.md tells robot vendors);
* (c) end to end over SASL_SSL: the monitor signs in as ``monitor``, the sites as
  ``console`` and ``robot``; a robot heartbeat stop yields a ``safe_stop`` that the
  ``robot`` principal reads from the commands topic.

Runtime: about 40-60 s (broker start ~10 s, the refusal cases ~15 s, the loop ~15 s).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.errors import GroupAuthorizationFailedError, KafkaError, TopicAuthorizationFailedError

from monitor.audit.checkpoint import load_public_key
from monitor.audit.verified import load_verified
from monitor.broker import secure, server
from monitor.broker.runtime import BrokerError, PrerequisiteError
from monitor.icd.topics import Topics
from monitor.kafka.settings import KafkaSettings
from monitor.report.build import build_report
from tests.integration.monitorkit import free_port, run_monitor

pytestmark = pytest.mark.integration

HEARTBEAT_PERIOD_S = 0.020


@dataclass(frozen=True)
class SecuredEnv:
    bootstrap: str
    prefix: str
    broker: secure.SecureBroker
    data_dir: Path

    @property
    def broker_log(self) -> Path:
        return self.data_dir / server.BROKER_LOG

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    def settings(self, user: str) -> KafkaSettings:
        return self.broker.client_settings(self.bootstrap, user, self.prefix)


def _wait_until_enforced(admin: KafkaSettings, count: int, timeout_s: float = 15.0) -> None:
    """create_acls returns once the controller has the ACLs; the broker's authorizer gets
    them a moment later (a test that runs first would otherwise see them missing)."""
    anything = ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)
    every = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY, anything)
    client = KafkaAdminClient(**admin.common(), bootstrap_timeout_ms=10000)
    try:
        deadline = time.monotonic() + timeout_s
        while len(client.describe_acls(every)[0]) < count:
            assert time.monotonic() < deadline, "the broker does not enforce the ACLs yet"
            time.sleep(0.1)
    finally:
        client.close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredEnv]:
    root = tmp_path_factory.mktemp("secured-kafka")
    ca = secure.make_test_ca(root / "ca")
    data_dir = root / "kafka"
    broker = secure.prepare(data_dir, ca_dir=ca.directory)
    prefix = f"s{uuid.uuid4().hex[:8]}."
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    try:
        try:
            res = server.start(
                data_dir,
                port=port,
                controller_port=controller_port,
                prefix=prefix,
                security=broker,
                timeout_s=90,
            )
        except PrerequisiteError as exc:
            pytest.skip(f"cannot run the local Kafka broker: {exc}")
        except BrokerError as exc:
            pytest.fail(f"secured Kafka broker did not start: {exc}", pytrace=False)
        admin = broker.client_settings(res.bootstrap, secure.ADMIN_USER)
        grants = secure.telesafe_grants(prefix, monitor_group=f"{prefix}monitor")
        secure.create_acls(admin, grants)
        _wait_until_enforced(admin, len(grants))
        yield SecuredEnv(res.bootstrap, prefix, broker, data_dir)
    finally:
        server.stop(data_dir)  # always: also when start or a test failed


# ------------------------------------------------------------------- (a) refusals


@dataclass
class Refusal:
    client_log: str  # what kafka-python logged (its view can be a bare disconnect)
    broker_log: str  # what the broker logged meanwhile: the authoritative reason


def _refused(
    env: SecuredEnv, settings: dict[str, Any], caplog: pytest.LogCaptureFixture, reason: str
) -> Refusal:
    """Connect and list topics; assert it fails and the broker logged ``reason``."""
    caplog.clear()
    mark = env.broker_log.stat().st_size
    with caplog.at_level(logging.WARNING, logger="kafka"), pytest.raises(KafkaError) as err:
        admin = KafkaAdminClient(**settings, bootstrap_timeout_ms=3000, request_timeout_ms=3000)
        try:
            admin.list_topics()
        finally:
            admin.close()
    assert "Unable to bootstrap" in str(err.value), repr(err.value)
    deadline = time.monotonic() + 5.0
    while True:  # the broker's log line may trail the client's give-up by a moment
        with env.broker_log.open("rb") as fh:
            fh.seek(mark)
            broker = fh.read().decode(errors="replace")
        if reason in broker or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reason in broker, f"broker did not log {reason!r}:\n{broker[-3000:]}"
    return Refusal(caplog.text, broker)


def test_clients_without_valid_credentials_are_refused(
    secured: SecuredEnv, caplog: pytest.LogCaptureFixture
) -> None:
    good = secured.settings("robot")
    cafile = str(secured.broker.ca.ca_cert)

    # PLAINTEXT to the TLS port: the broker fails the TLS handshake (its alert reaches
    # the plaintext client as an absurd frame length, or as a hang-up).
    r = _refused(secured, {"bootstrap_servers": secured.bootstrap}, caplog, "SSL handshake failed")
    assert "Invalid frame length" in r.client_log or "disconnected" in r.client_log, r.client_log

    # TLS (trusted) but no SASL: the broker wants a SASL handshake and hangs up.
    ssl_only = {"bootstrap_servers": secured.bootstrap, "security_protocol": "SSL",
                "ssl_cafile": cafile}  # fmt: skip
    r = _refused(secured, ssl_only, caplog, "during SASL handshake")
    assert "CERTIFICATE_VERIFY_FAILED" not in r.client_log, r.client_log

    # SASL_SSL with a wrong password / an unknown user: SCRAM fails. (kafka-python
    # mostly logs SaslAuthenticationFailedError, sometimes only the hang-up after it.)
    for bad in (
        dataclasses.replace(good, sasl_password="not-the-password"),
        dataclasses.replace(good, sasl_username="mallory"),
    ):
        _refused(secured, bad.common(), caplog,
                 "invalid credentials with SASL mechanism SCRAM-SHA-512")  # fmt: skip

    # Right password, but the client does not trust the broker's CA: TLS fails first,
    # so the password is never sent to an unverified server.
    other_ca = secure.make_test_ca(Path(cafile).parent.parent / "other-ca")
    untrusting = dataclasses.replace(good, ssl_cafile=str(other_ca.ca_cert)).common()
    r = _refused(secured, untrusting, caplog, "SSL handshake failed")
    assert "CERTIFICATE_VERIFY_FAILED" in r.client_log, r.client_log

    # Control: the same client with its real credentials gets in and sees only what its
    # ACLs describe.
    admin = KafkaAdminClient(**good.common(), bootstrap_timeout_ms=10000)
    try:
        visible = set(admin.list_topics())
    finally:
        admin.close()
    t = secured.topics
    assert {t.telemetry_robot, t.commands} <= visible, visible
    assert not visible & {t.telemetry_console, t.operator, t.audit, t.state}, visible


# ------------------------------------------------------------------------ (b) ACLs


def test_each_site_writes_only_its_own_telemetry_topic(secured: SecuredEnv) -> None:
    t = secured.topics
    key, value = b"ACL-0001", b'{"v": 1}'
    for user, own, foreign in (
        ("robot", t.telemetry_robot, t.telemetry_console),
        ("console", t.telemetry_console, t.telemetry_robot),
    ):
        producer = KafkaProducer(**secured.settings(user).producer_config(client_id=user))
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                producer.send(foreign, key=key, value=value).get(timeout=10)
            md = producer.send(own, key=key, value=value).get(timeout=10)
            assert md.topic == own
            # Nor may a site impersonate the monitor or an operator.
            for other in (t.commands, t.operator):
                with pytest.raises(TopicAuthorizationFailedError):
                    producer.send(other, key=key, value=value).get(timeout=10)
        finally:
            producer.close(timeout=5)

    # Nor may the robot join a group outside its own telesafe-site-robot prefix.
    consumer = KafkaConsumer(
        t.operator,
        **secured.settings("robot").consumer_config(group_id=f"{secured.prefix}robot"),
        consumer_timeout_ms=5000,
    )
    try:
        with pytest.raises((TopicAuthorizationFailedError, GroupAuthorizationFailedError)):
            consumer.poll(timeout_ms=5000)
            consumer.poll(timeout_ms=1000)
    finally:
        consumer.close()


def _librdkafka_settings(env: SecuredEnv, user: str) -> dict[str, Any]:
    """The librdkafka spelling of ``env.settings(user)`` (docs/icd.md, "Reading commands")."""
    s = env.settings(user)
    return {"bootstrap.servers": s.bootstrap_servers, "security.protocol": s.security_protocol,
            "ssl.ca.location": s.ssl_cafile, "sasl.mechanisms": s.sasl_mechanism,
            "sasl.username": s.sasl_username, "sasl.password": s.sasl_password}  # fmt: skip


def _read_commands_with_librdkafka(
    env: SecuredEnv, group_id: str, procedure_id: str
) -> tuple[list[bytes], list[str]]:
    """As the robot: assign() every commands partition, commit nothing; return the values
    for ``procedure_id`` and the names of every error librdkafka reported meanwhile."""
    errors: list[str] = []
    consumer = confluent_kafka.Consumer(
        {
            **_librdkafka_settings(env, "robot"),
            "group.id": group_id,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
            "error_cb": lambda e: errors.append(e.name()),
        }
    )
    topic = env.topics.commands
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assert parts, f"the robot cannot see {topic}"
        start = confluent_kafka.OFFSET_BEGINNING
        consumer.assign([confluent_kafka.TopicPartition(topic, p, start) for p in sorted(parts)])
        found: list[bytes] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                errors.append(err.name())
            elif msg.key() == procedure_id.encode():
                found.append(bytes(msg.value() or b""))
                # Poll on a little, so an error that trails the first fetch is seen too.
                deadline = min(deadline, time.monotonic() + 2)
        return found, errors
    finally:
        consumer.close()


def test_confluent_kafka_site_reads_commands_with_its_own_group(secured: SecuredEnv) -> None:
    """librdkafka needs a group.id; the robot's own group prefix makes it work cleanly."""
    pid = f"CK-{uuid.uuid4().hex[:6]}"
    command = json.dumps({"v": 1, "type": "monitor_heartbeat", "procedure_id": pid, "seq": 0,
                          "issued_at": time.time_ns(), "monitor_id": "itest",
                          "status": "armed"}).encode()  # fmt: skip
    producer = KafkaProducer(**secured.settings("monitor").producer_config(client_id="itest-mon"))
    try:
        producer.send(secured.topics.commands, key=pid.encode(), value=command).get(timeout=10)
    finally:
        producer.close(timeout=5)

    # Without a group.id librdkafka will not even make a consumer.
    with pytest.raises((ValueError, confluent_kafka.KafkaException), match=r"group\.id"):
        confluent_kafka.Consumer(_librdkafka_settings(secured, "robot"))

    # The documented group id: <prefix>telesafe-site-robot-<unit>. No error at all.
    own = secure.site_group(secured.prefix, "robot") + "-TM-ITEST"
    found, errors = _read_commands_with_librdkafka(secured, own, pid)
    assert found == [command]
    assert errors == [], errors

    # Control: a group outside the robot's prefix (the console's). Fetching still works,
    # but the coordinator lookup is refused: the grant is what makes the clean case clean.
    foreign = secure.site_group(secured.prefix, "console") + "-1"
    found, errors = _read_commands_with_librdkafka(secured, foreign, pid)
    assert found == [command]
    assert "GROUP_AUTHORIZATION_FAILED" in errors, errors


# ------------------------------------------------------------------ (c) the loop


class Site:
    """One site's 50 Hz heartbeats through its own signed-in producer."""

    def __init__(self, settings: KafkaSettings, site: str, procedure_id: str) -> None:
        self.site = site
        self.procedure_id = procedure_id
        self.topic = Topics(settings.topic_prefix).telemetry(site)  # type: ignore[arg-type]
        self.producer = KafkaProducer(**settings.producer_config(client_id=f"itest-{site}"))
        self.seq = 0
        self.sent = 0
        self.running = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"site-{site}", daemon=True)
        self._thread.start()

    def send(self, rtype: str, **fields: Any) -> None:
        with self._lock:
            rec = {"v": 1, "type": rtype, "procedure_id": self.procedure_id, "site": self.site,
                   "seq": self.seq, "sent_at": time.time_ns(), **fields}  # fmt: skip
            self.seq += 1
            self.producer.send(self.topic, key=self.procedure_id.encode(),
                               value=json.dumps(rec).encode())  # fmt: skip

    def heartbeat(self) -> None:
        self.send("heartbeat", state="operating",
                  clock={"source": "ptp", "offset_ns": 0, "max_error_ns": 100_000})  # fmt: skip
        self.sent += 1

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            if self.running.is_set():
                self.heartbeat()
            next_t = max(next_t + HEARTBEAT_PERIOD_S, time.monotonic())
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.producer.flush(timeout=5)
        self.producer.close(timeout=5)


class CommandReader:
    """The robot's view of the commands topic: assign() every partition, no group."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.topic = Topics(settings.topic_prefix).commands
        self.consumer = KafkaConsumer(
            **settings.consumer_config(group_id=None, enable_auto_commit=False)
        )
        parts = self.consumer.partitions_for_topic(self.topic)
        assert parts, f"the robot cannot see {self.topic}"
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_end(*tps)
        for tp in tps:
            self.consumer.position(tp)
        self.seen: list[dict[str, Any]] = []

    def wait_for(self, ctype: str, procedure_id: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            for c in self.seen:
                if c.get("type") == ctype and c.get("procedure_id") == procedure_id:
                    return c
            if time.monotonic() >= deadline:
                return None
            for recs in self.consumer.poll(timeout_ms=50).values():
                for r in recs:
                    value = json.loads(r.value)
                    value["_received_at"] = time.monotonic()
                    self.seen.append(value)

    def close(self) -> None:
        self.consumer.close()


def test_safe_stop_end_to_end_over_sasl_ssl(
    secured: SecuredEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mon_settings = secured.settings("monitor")
    # The password through the environment, as docs/security.md recommends.
    monkeypatch.setenv("TELESAFE_SASL_PASSWORD", str(mon_settings.sasl_password))
    flags = ("--security-protocol", "SASL_SSL", "--ssl-cafile", str(mon_settings.ssl_cafile),
             "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "monitor")  # fmt: skip
    pid = f"SEC-{uuid.uuid4().hex[:6]}"
    with run_monitor(secured.bootstrap, secured.prefix, tmp_path, *flags) as mon:
        reader = CommandReader(secured.settings("robot"))
        console = Site(secured.settings("console"), "console", pid)
        robot = Site(secured.settings("robot"), "robot", pid)
        stop: dict[str, Any] | None = None
        try:
            robot.send("procedure_start", surgeon_id="surgeon-itest",
                       robot={"model": "Toumai", "serial": "TM-ITEST"},
                       arms=["psm1", "psm2", "psm3", "ecm"])  # fmt: skip
            console.running.set()
            robot.running.set()
            # The monitor hears both sites and vouches for the procedure.
            hb = reader.wait_for("monitor_heartbeat", pid, timeout=15)
            assert hb is not None, f"no monitor_heartbeat for {pid}\n{mon.log()[-4000:]}"
            time.sleep(1.0)  # a steady state well past the first-heartbeat grace
            assert reader.wait_for("safe_stop", pid, timeout=0) is None, reader.seen[-5:]

            robot.running.clear()
            stopped_at = time.monotonic()
            stop = reader.wait_for("safe_stop", pid, timeout=10)
            assert stop is not None, f"no safe_stop for {pid}\n{mon.log()[-4000:]}"
            assert stop["policy"]["rule"] == "heartbeat_silence", stop
            assert stop["procedure_id"] == pid
            # ICD §7: > 300 ms of silence; generous bound for a busy CI box over TLS.
            assert stop["_received_at"] - stopped_at < 3.0, stop
            assert console.sent > 20 and robot.sent > 20
            log = mon.log()
            assert "AuthorizationFailed" not in log, log[-4000:]
            assert "SaslAuthenticationFailed" not in log, log[-4000:]
            # The operator's own tool, as User:operator: it finds the latch on the state
            # topic (no monitor URL) and sees the decision on the audit mirror. The robot
            # is silent, so the re-arm is refused: exit 1 (3 would be "no decision seen").
            op = secured.settings("operator")
            rearm = subprocess.run(
                [sys.executable, "-m", "monitor", "rearm", "--procedure", pid,
                 "--operator", "dr-itest", "--reason", "robot checked",
                 "--monitor", "http://127.0.0.1:1", "--timeout", "20",
                 "--bootstrap", secured.bootstrap, "--topic-prefix", secured.prefix,
                 "--security-protocol", "SASL_SSL", "--ssl-cafile", str(op.ssl_cafile),
                 "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "operator"],
                capture_output=True, text=True, timeout=90,
                env={**os.environ, "TELESAFE_SASL_PASSWORD": str(op.sasl_password)},
            )  # fmt: skip
            out = rearm.stdout + rearm.stderr
            assert rearm.returncode == 1, out
            assert stop["command_id"] in out and "rejected" in out.lower(), out
        finally:
            if stop is not None:  # the robot obeys, so the monitor stops re-sending
                robot.send("safe_stop_ack", command_id=stop["command_id"],
                           result="safe_stopped", at=time.time_ns())  # fmt: skip
            console.send("procedure_end", reason="aborted")
            console.close()
            robot.close()
            reader.close()


# ------------------------------------------------------ (d) forged operator requests


@pytest.mark.hazard("H-17")
def test_forged_rearms_are_audited_and_page(
    secured: SecuredEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ICD §5.1 "either outcome is audited", also for requests that fail authentication:
    a re-arm signed by dr-a claiming dr-b, an unsigned one and one signed by an unknown key
    each reach the verified ledger as operator_request_refused, and ForgedOperatorRequest
    fires in a real Prometheus scraping the monitor."""
    from monitor.audit.checkpoint import generate_key_files
    from monitor.audit.store import Store
    from monitor.security.signing import Signer
    from tests.observability.promstack import PromStack, wait_until, webhook_alerts

    keys = {}
    for name in ("dr-a", "dr-b", "mallory"):
        keys[name] = tmp_path / f"{name}.key"
        generate_key_files(keys[name])
    ledger_key = tmp_path / "ledger.key"
    generate_key_files(ledger_key)
    ledger = tmp_path / "ledger.sqlite"
    mon_settings = secured.settings("monitor")
    monkeypatch.setenv("TELESAFE_SASL_PASSWORD", str(mon_settings.sasl_password))
    flags = ("--security-protocol", "SASL_SSL", "--ssl-cafile", str(mon_settings.ssl_cafile),
             "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "monitor",
             "--ledger", str(ledger), "--signing-key", str(ledger_key),
             "--trust-key", f"operator:dr-a={keys['dr-a']}.pub",
             "--trust-key", f"operator:dr-b={keys['dr-b']}.pub")  # fmt: skip
    pid = f"SEC-{uuid.uuid4().hex[:6]}"
    op_settings = secured.settings("operator")
    with run_monitor(secured.bootstrap, secured.prefix, tmp_path, *flags) as mon, \
            PromStack(targets=[f"127.0.0.1:{mon.port}"]) as stack:  # fmt: skip
        wait_until(stack.targets_up, 30, what="monitor scraped")
        producer = KafkaProducer(**op_settings.producer_config())
        sent = []
        try:
            for how in ("forged", "unsigned", "unknown-key"):
                req = {"v": 1, "type": "rearm_request", "procedure_id": pid,
                       "operator_id": "dr-b", "reason": f"attempt {how}",
                       "requested_at": time.time_ns(),
                       "command_id": "5385a9e6-e433-5d4c-b70d-7c27669ca37a",
                       "request_id": str(uuid.uuid4())}  # fmt: skip
                raw = json.dumps(req).encode()
                headers = {"forged": Signer.from_file("dr-a", keys["dr-a"]).headers(raw),
                           "unsigned": [],
                           "unknown-key": Signer.from_file("mallory", keys["mallory"])
                           .headers(raw)}[how]  # fmt: skip
                md = producer.send(
                    secured.topics.operator, key=pid.encode(), value=raw, headers=headers
                ).get(timeout=10)
                sent.append((how, f"{md.topic}:{md.partition}:{md.offset}"))
        finally:
            producer.close()
        try:
            page = stack.receiver.wait_for(
                lambda d: any(
                    a["labels"].get("alertname") == "ForgedOperatorRequest"
                    and a["status"] == "firing"
                    for a in webhook_alerts(d)
                ),
                60,
            )
        except TimeoutError:
            raise AssertionError(f"no ForgedOperatorRequest page\n{mon.log()[-5000:]}") from None
        assert page.path == "/webhook/telesafe-webhook"
    # The monitor stopped cleanly; its ledger verifies and holds all three refusals.
    verify = subprocess.run([sys.executable, "-m", "monitor", "audit", "verify", str(ledger),
                             "--pubkey", f"{ledger_key}.pub"], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    store = Store(ledger, readonly=True)
    try:
        refused = [json.loads(b) for _i, _h, b in store.iter_entries()]
    finally:
        store.close()
    refused = [e for e in refused if e["event"] == "operator_request_refused"]
    by_source = {e["source"]: e for e in refused}
    assert {src for _, src in sent} <= set(by_source), (sent, list(by_source))
    reasons = {how: by_source[src]["data"]["reason_class"] for how, src in sent}
    assert reasons == {"forged": "operator_key_mismatch", "unsigned": "unsigned",
                       "unknown-key": "unknown_key"}, reasons  # fmt: skip
    forged = by_source[dict(sent)["forged"]]["data"]
    assert forged["claimed"]["operator_id"] == "dr-b" and forged["key_id_presented"] == "dr-a"
    # The post-operative report lists the three as security events of the procedure.
    report = build_report(load_verified(ledger, load_public_key(f"{ledger_key}.pub")), pid)
    listed = {(s.source, s.reason_class) for s in report.security_events}
    assert listed == {(src, reasons[how]) for how, src in sent}, listed
