"""Kafka connection settings shared by the monitor, the simulator and the operator tools.

`KafkaSettings` says where the cluster is, how to authenticate and which client library to
use (`client`: confluent-kafka by default, kafka-python as the second backend). What each
client is configured with follows from its role: `monitor/kafka/profiles.py`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

from monitor.kafka.api import BACKENDS, DEFAULT_BACKEND, Backend

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    client: Backend = DEFAULT_BACKEND

    def common(self) -> dict[str, Any]:
        """kafka-python connection keyword arguments (for tests that act as a site)."""
        from monitor.kafka.profiles import kafka_python_config

        return kafka_python_config(self, "admin")

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """kafka-python producer keyword arguments (for tests that act as a site)."""
        from monitor.kafka.profiles import kafka_python_config

        return kafka_python_config(self, "tool", **overrides)

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        """kafka-python consumer keyword arguments (for tests that act as a reader)."""
        from monitor.kafka.profiles import kafka_python_config

        return kafka_python_config(self, "reader", **overrides)


def env(name: str, default: str | None = None) -> str | None:
    """A TELESAFE_* environment variable: the default of a command-line flag."""
    return os.environ.get(name, default)


def add_kafka_arguments(parser: argparse.ArgumentParser) -> None:
    """Connection flags, each defaulting to a TELESAFE_* environment variable."""
    g = parser.add_argument_group("Kafka connection (flags override TELESAFE_* environment)")
    g.add_argument(
        "--bootstrap",
        default=env("TELESAFE_BOOTSTRAP", "127.0.0.1:9092"),
        help="bootstrap servers, comma-separated (env TELESAFE_BOOTSTRAP; default %(default)s)",
    )
    g.add_argument(
        "--topic-prefix",
        default=env("TELESAFE_TOPIC_PREFIX", ""),
        help="prefix added to every ICD topic name (env TELESAFE_TOPIC_PREFIX)",
    )
    g.add_argument(
        "--security-protocol",
        choices=SECURITY_PROTOCOLS,
        default=env("TELESAFE_SECURITY_PROTOCOL", "PLAINTEXT"),
        help="env TELESAFE_SECURITY_PROTOCOL (default %(default)s)",
    )
    g.add_argument("--ssl-cafile", default=env("TELESAFE_SSL_CAFILE"), help="CA bundle (PEM)")
    g.add_argument("--ssl-certfile", default=env("TELESAFE_SSL_CERTFILE"), help="client cert")
    g.add_argument("--ssl-keyfile", default=env("TELESAFE_SSL_KEYFILE"), help="client key")
    g.add_argument(
        "--sasl-mechanism",
        choices=SASL_MECHANISMS,
        default=env("TELESAFE_SASL_MECHANISM"),
        help="env TELESAFE_SASL_MECHANISM",
    )
    g.add_argument(
        "--kafka-client",
        choices=BACKENDS,
        default=env("TELESAFE_KAFKA_CLIENT", DEFAULT_BACKEND),
        help="Kafka client library (env TELESAFE_KAFKA_CLIENT; default %(default)s)",
    )
    g.add_argument("--sasl-username", default=env("TELESAFE_SASL_USERNAME"))
    g.add_argument(
        "--sasl-password",
        default=env("TELESAFE_SASL_PASSWORD"),
        help="prefer the environment variable TELESAFE_SASL_PASSWORD over the flag",
    )


def settings_from_args(args: argparse.Namespace) -> KafkaSettings:
    if args.security_protocol not in SECURITY_PROTOCOLS:
        raise ValueError(f"--security-protocol must be one of {', '.join(SECURITY_PROTOCOLS)}")
    if args.security_protocol.startswith("SASL") and not args.sasl_mechanism:
        raise ValueError(f"--security-protocol {args.security_protocol} needs --sasl-mechanism")
    return KafkaSettings(
        bootstrap_servers=args.bootstrap,
        topic_prefix=args.topic_prefix or "",
        security_protocol=args.security_protocol,
        ssl_cafile=args.ssl_cafile,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        sasl_mechanism=args.sasl_mechanism,
        sasl_username=args.sasl_username,
        sasl_password=args.sasl_password,
        client=_backend(getattr(args, "kafka_client", DEFAULT_BACKEND)),
    )


def _backend(name: str) -> Backend:
    for b in BACKENDS:
        if b == name:
            return b
    raise ValueError(f"--kafka-client must be one of {', '.join(BACKENDS)}, not {name!r}")
