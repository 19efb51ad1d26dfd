"""What a monitor is configured with, and the Kafka clients it runs on."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from monitor.errors import EXIT_USAGE, ServiceLayerError
from monitor.kafka import (
    Admin,
    Consumer,
    KafkaSettings,
    Producer,
    Record,
    open_admin,
    open_consumer,
    open_producer,
)


class StartupError(ServiceLayerError):
    """The monitor cannot start as configured (one line, with the fix)."""

    exit_code = EXIT_USAGE


@dataclass
class MonitorOptions:
    monitor_id: str = "telesafe-1"
    group_id: str = "telesafe-monitor"
    group_instance_id: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 9108
    heartbeat_interval_ms: float = 20.0
    operators: frozenset[str] | None = None
    startup_lookback_s: float = 10.0
    summary_interval_ms: float = 1000.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Transport:
    """The Kafka clients of one monitor: its group consumer, an admin client and the
    commands, heartbeats and bookkeeping producers (in that order). Tests hand in fakes."""

    consumer: Consumer
    admin: Admin
    producers: tuple[Producer, Producer, Producer]
    read_state: Callable[[list[int]], Iterable[Record]] | None = None

    @classmethod
    def open(cls, settings: KafkaSettings, options: MonitorOptions) -> Transport:
        cid = options.monitor_id
        return cls(
            open_consumer(
                settings,
                "monitor",
                f"{cid}-consumer",
                group_id=options.group_id,
                group_instance_id=options.group_instance_id,
            ),
            open_admin(settings),
            (
                open_producer(settings, "commands", f"{cid}-commands"),
                open_producer(settings, "heartbeats", f"{cid}-heartbeats"),
                open_producer(settings, "bookkeeping", f"{cid}-bookkeeping"),
            ),
        )
