"""A real local Apache Kafka 4.x broker (single-node KRaft) for development and tests.

Public API: ``start``, ``stop``, ``status`` (``monitor.broker.server``),
``ensure_topics`` (``monitor.broker.topics``), ``BrokerError``. CLI: ``telesafe broker``.
"""

from monitor.broker.runtime import KAFKA_VERSION, BrokerError, PrerequisiteError
from monitor.broker.server import (
    DEFAULT_CONTROLLER_PORT,
    DEFAULT_PORT,
    BrokerStatus,
    StartResult,
    bootstrap_address,
    broker_answers,
    default_data_dir,
    start,
    status,
    stop,
)
from monitor.broker.topics import TopicLayoutError, TopicReport, ensure_topics

__all__ = [
    "DEFAULT_CONTROLLER_PORT",
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerStatus",
    "PrerequisiteError",
    "StartResult",
    "TopicLayoutError",
    "TopicReport",
    "bootstrap_address",
    "broker_answers",
    "default_data_dir",
    "ensure_topics",
    "start",
    "status",
    "stop",
]
