"""telesafe's Kafka transport: the only package that imports a Kafka client library.

`open_consumer`, `open_producer` and `open_admin` build a client of the backend named in
`KafkaSettings.client` (confluent-kafka by default, kafka-python as the second backend),
configured for its role (`profiles.py`). Everything else uses the `api` types.
"""

from __future__ import annotations

from typing import Any

from monitor.kafka.api import (
    BACKENDS,
    DEFAULT_BACKEND,
    OFFSET_END,
    Admin,
    Backend,
    Consumer,
    Producer,
    RebalanceListener,
    Record,
    TopicPartition,
    TopicSpec,
    TransportError,
    TransportFatal,
)
from monitor.kafka.profiles import AclGrant, Role
from monitor.kafka.settings import KafkaSettings

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "OFFSET_END",
    "AclGrant",
    "Admin",
    "Backend",
    "Consumer",
    "KafkaSettings",
    "Producer",
    "RebalanceListener",
    "Record",
    "Role",
    "TopicPartition",
    "TopicSpec",
    "TransportError",
    "TransportFatal",
    "client_version",
    "open_admin",
    "open_consumer",
    "open_producer",
]


def open_consumer(settings: KafkaSettings, role: Role, client_id: str, **options: Any) -> Consumer:
    """A consumer for `role`. `options` (backend-neutral): group_id, group_instance_id.

    A reader without a group_id gets a private, never-committed group under librdkafka
    (which needs one); kafka-python reads without any group.
    """
    group = options.pop("group_id", None)
    instance = options.pop("group_instance_id", None)
    if options:
        raise TypeError(f"unknown consumer options: {sorted(options)}")
    if settings.client == "kafka-python":
        from monitor.kafka.kafkapython import KafkaPythonConsumer

        kp: dict[str, Any] = {"client_id": client_id, "group_id": group}
        if instance:
            kp["group_instance_id"] = instance
        return KafkaPythonConsumer(settings, role, **kp)
    from monitor.kafka.confluent import ConfluentConsumer

    cc: dict[str, Any] = {"client.id": client_id, "group.id": group or f"{client_id}-reader"}
    if instance:
        cc["group.instance.id"] = instance
    return ConfluentConsumer(settings, role, **cc)


def open_producer(
    settings: KafkaSettings, role: Role, client_id: str, linger_ms: float | None = None
) -> Producer:
    """A producer for `role`; `linger_ms` overrides the role's batching window."""
    if settings.client == "kafka-python":
        from monitor.kafka.kafkapython import KafkaPythonProducer

        kp: dict[str, Any] = {"client_id": client_id}
        if linger_ms is not None:
            kp["linger_ms"] = int(linger_ms)
        return KafkaPythonProducer(settings, role, **kp)
    from monitor.kafka.confluent import ConfluentProducer

    cc: dict[str, Any] = {"client.id": client_id}
    if linger_ms is not None:
        cc["linger.ms"] = linger_ms
    return ConfluentProducer(settings, role, **cc)


def open_admin(settings: KafkaSettings, timeout_s: float = 10.0) -> Admin:
    """An admin client; TransportError if no broker answers within `timeout_s`."""
    if settings.client == "kafka-python":
        from monitor.kafka.kafkapython import KafkaPythonAdmin

        return KafkaPythonAdmin(settings, timeout_s)
    from monitor.kafka.confluent import ConfluentAdmin

    admin = ConfluentAdmin(settings)
    admin.partition_counts([], timeout_s)  # librdkafka connects lazily: fail here, clearly
    return admin


def client_version(settings: KafkaSettings) -> str:
    if settings.client == "kafka-python":
        from monitor.kafka.kafkapython import version
    else:
        from monitor.kafka.confluent import version
    return version()
