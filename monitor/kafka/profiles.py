"""Client settings for each role, for both backends, each chosen on purpose.

A *role* is what a client is for; its settings follow from that. The reasons are in
docs/architecture.md ("Kafka settings"); the short form is next to each value here.
librdkafka's defaults that would hurt a safety monitor (linger 5 ms, fetch wait 500 ms,
a 1 s fetch back-off after a burst, a 300 s message timeout, the CRC32 partitioner,
read_committed, 45 s sessions) are all overridden explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from monitor.kafka.settings import KafkaSettings

Role = Literal[
    "monitor",  # the monitor's group consumer (telemetry + operator topics)
    "reader",  # an assign()-only reader: tools, latch restore, reconciliation, tests
    "commands",  # safe_stop / rearm: each one leaves at once, ordered, never behind others
    "heartbeats",  # monitor_heartbeat, 50 Hz per procedure: late is worthless, never block
    "bookkeeping",  # audit mirror, dead letters, latch state: reliable, may batch a little
    "tool",  # one-shot producers of operator tools
    "site",  # the simulator's sites: many records a second, ordered per procedure
    "admin",
]

# How long the group coordinator waits for a silent member before moving its partitions.
# KIP-848 groups (confluent-kafka): a group config the monitor sets at start-up; the
# broker's group.consumer.min.session.timeout.ms / min.heartbeat.interval.ms must allow it
# (telesafe's local broker does; on a cluster see docs/deploy-kubernetes.md). librdkafka
# heartbeats from its own thread, so a busy Python loop does not miss them.
GROUP_CONFIG = {"consumer.session.timeout.ms": "2000", "consumer.heartbeat.interval.ms": "500"}
# Classic groups (kafka-python): client-side; 6 s is the broker's default minimum.
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_000


@dataclass(frozen=True)
class AclGrant:
    """ALLOW `principal` to `operation` (READ, WRITE, DESCRIBE) a TOPIC or GROUP."""

    principal: str  # "User:robot"
    operation: str
    resource_type: str
    resource_name: str
    prefixed: bool = False

    def row(self) -> str:
        name = self.resource_name + ("*" if self.prefixed else "")
        return f"{self.principal:<15} {self.operation:<9} {self.resource_type:<6} {name}"


def _security_confluent(s: KafkaSettings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bootstrap.servers": s.bootstrap_servers,
        "security.protocol": s.security_protocol,
    }
    if s.ssl_cafile:
        out["ssl.ca.location"] = s.ssl_cafile
    if s.ssl_certfile:
        out["ssl.certificate.location"] = s.ssl_certfile
    if s.ssl_keyfile:
        out["ssl.key.location"] = s.ssl_keyfile
    if s.security_protocol in ("SSL", "SASL_SSL") and s.ssl_cafile:
        # The local test CA names the broker by IP; hostname checks stay on elsewhere.
        out["ssl.endpoint.identification.algorithm"] = (
            "none" if s.bootstrap_servers.startswith("127.0.0.1") else "https"
        )
    if s.sasl_mechanism:
        out["sasl.mechanism"] = s.sasl_mechanism
        out["sasl.username"] = s.sasl_username
        out["sasl.password"] = s.sasl_password
    return out


_CONFLUENT: dict[Role, dict[str, Any]] = {
    "monitor": {
        "enable.auto.commit": False,  # offsets are committed once their audit is durable
        "enable.auto.offset.store": False,
        "auto.offset.reset": "latest",  # a new group starts from a short lookback instead
        "isolation.level": "read_uncommitted",  # no transactional writers; never wait on LSO
        "fetch.wait.max.ms": 10,  # bounds how long a just-assigned partition waits
        "fetch.min.bytes": 1,  # the broker answers as soon as one record is there
        "fetch.queue.backoff.ms": 10,  # default 1000: a burst could stall a partition 1 s
        "fetch.error.backoff.ms": 50,
        "queued.max.messages.kbytes": 16_384,  # the prefetch bound (back-pressure beyond it)
        "socket.nagle.disable": True,
        # KIP-848: incremental by design, so a membership change moves only the partitions
        # that change hands; the broker's sticky `uniform` assignor keeps each member's
        # partitions, and co-partitioning is kept by the consumer (confluent.py subscribe).
        # Session and heartbeat are the group's (set by the monitor: GROUP_CONFIG below).
        "group.protocol": "consumer",
        "group.remote.assignor": "uniform",
        "max.poll.interval.ms": 30_000,  # a hung loop leaves the group
        "allow.auto.create.topics": False,
        "enable.partition.eof": False,
        "statistics.interval.ms": 0,
    },
    "reader": {
        "enable.auto.commit": False,  # readers never commit: they own no group position
        "auto.offset.reset": "latest",
        "isolation.level": "read_uncommitted",
        "fetch.wait.max.ms": 10,
        "fetch.queue.backoff.ms": 10,
        "socket.nagle.disable": True,
        "allow.auto.create.topics": False,
        "enable.partition.eof": False,
    },
    "commands": {
        "linger.ms": 0,  # a safe-stop never waits to fill a batch
        "acks": "all",  # on the broker, or we count a failure
        "partitioner": "murmur2_random",  # ICD 1.1 §2: the Java client's partition
        # No idempotence: its drain after a leader change could hold a stop back; a re-sent
        # command keeps its id, so a duplicate is harmless. One in flight keeps order
        # (safe_stop before rearm) without it.
        "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1,
        "message.timeout.ms": 5_000,  # fail loudly; the robot's own watchdog is primary
        "socket.nagle.disable": True,
        "allow.auto.create.topics": False,
    },
    "heartbeats": {
        "linger.ms": 0,
        "acks": "all",
        "partitioner": "murmur2_random",
        "enable.idempotence": False,
        "message.timeout.ms": 1_000,  # a dead-man signal older than this is worthless
        "queue.buffering.max.messages": 100_000,  # ~10 s at 200 procedures, then dropped
        "socket.nagle.disable": True,
        "allow.auto.create.topics": False,
    },
    "bookkeeping": {
        "linger.ms": 5,  # audit and state may batch; nothing waits on them
        "acks": "all",
        "partitioner": "murmur2_random",
        "enable.idempotence": True,  # in order and once: the compacted state keeps the last
        "message.timeout.ms": 120_000,
        "allow.auto.create.topics": False,
    },
    "tool": {
        "linger.ms": 0,
        "acks": "all",
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "message.timeout.ms": 30_000,
        "socket.nagle.disable": True,
        "allow.auto.create.topics": False,
    },
    "site": {
        "linger.ms": 5,
        "acks": "all",
        "partitioner": "murmur2_random",  # ICD 1.1 §2, as a real site's client must
        "enable.idempotence": True,
        "message.timeout.ms": 30_000,
        "socket.nagle.disable": True,
        "allow.auto.create.topics": False,
    },
    "admin": {},
}


def confluent_config(s: KafkaSettings, role: Role, **overrides: Any) -> dict[str, Any]:
    """librdkafka configuration for `role`; `overrides` use librdkafka names."""
    return _security_confluent(s) | _CONFLUENT[role] | overrides


def _security_kafka_python(s: KafkaSettings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "bootstrap_servers": s.bootstrap_servers.split(","),
        "security_protocol": s.security_protocol,
    }
    if s.ssl_cafile:
        out["ssl_cafile"] = s.ssl_cafile
    if s.ssl_certfile:
        out["ssl_certfile"] = s.ssl_certfile
    if s.ssl_keyfile:
        out["ssl_keyfile"] = s.ssl_keyfile
    if s.sasl_mechanism:
        out["sasl_mechanism"] = s.sasl_mechanism
        out["sasl_plain_username"] = s.sasl_username
        out["sasl_plain_password"] = s.sasl_password
    return out


_PRODUCER_KP = {
    "acks": "all",
    "linger_ms": 0,
    "max_block_ms": 2000,  # a dead broker cannot freeze the caller for a minute
    "request_timeout_ms": 5000,
    "retry_backoff_ms": 20,
    "max_request_size": 8 * 1024 * 1024,
}
_CONSUMER_KP = {
    # kafka-python keeps one fetch in flight per broker and leaves just-handed-over
    # partitions out of it: 5 ms bounds how long such a partition's next record waits.
    "fetch_max_wait_ms": 5,
    "fetch_min_bytes": 1,
    "max_poll_records": 2000,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_bytes": 32 * 1024 * 1024,
}
_KAFKA_PYTHON: dict[Role, dict[str, Any]] = {
    "monitor": _CONSUMER_KP
    | {
        "enable_auto_commit": False,
        "auto_offset_reset": "latest",
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
    },
    "reader": _CONSUMER_KP | {"enable_auto_commit": False, "auto_offset_reset": "latest"},
    "commands": _PRODUCER_KP
    | {"enable_idempotence": False, "max_in_flight_requests_per_connection": 1},
    "heartbeats": _PRODUCER_KP | {"enable_idempotence": False},
    "bookkeeping": _PRODUCER_KP | {"linger_ms": 5},
    "tool": _PRODUCER_KP,
    "site": _PRODUCER_KP | {"linger_ms": 5},
    "admin": {},
}


def kafka_python_config(s: KafkaSettings, role: Role, **overrides: Any) -> dict[str, Any]:
    """kafka-python keyword arguments for `role`; `overrides` use kafka-python names."""
    return _security_kafka_python(s) | _KAFKA_PYTHON[role] | overrides
