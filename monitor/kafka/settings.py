"""Kafka connection settings shared by the monitor, the simulator and the operator tools.

The low-latency defaults are deliberate (see docs/architecture.md, "Kafka settings"):
- producer `linger_ms=0`: a safe-stop leaves as soon as it is sent, never waiting to fill a batch;
- producer `acks="all"` + idempotence: a command is either on the broker or we know it failed;
- consumer `fetch_max_wait_ms=5`, `fetch_min_bytes=1`: the broker answers a fetch within 5 ms
  instead of the 500 ms default, so a record is handed to the rules engine within milliseconds;
- `max_block_ms` small: a producer that cannot reach the broker fails fast instead of freezing
  the engine thread.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

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

    def common(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.ssl_cafile:
            out["ssl_cafile"] = self.ssl_cafile
        if self.ssl_certfile:
            out["ssl_certfile"] = self.ssl_certfile
        if self.ssl_keyfile:
            out["ssl_keyfile"] = self.ssl_keyfile
        if self.sasl_mechanism:
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.sasl_username
            out["sasl_plain_password"] = self.sasl_password
        return out

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        cfg = self.common() | {
            "acks": "all",
            "linger_ms": 0,
            "max_block_ms": 2000,
            "request_timeout_ms": 5000,
            "retry_backoff_ms": 20,
            "max_request_size": 8 * 1024 * 1024,
        }
        return cfg | overrides

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        cfg = self.common() | {
            "fetch_max_wait_ms": 5,
            "fetch_min_bytes": 1,
            "max_poll_records": 2000,
            "max_partition_fetch_bytes": 8 * 1024 * 1024,
            "fetch_max_bytes": 32 * 1024 * 1024,
        }
        return cfg | overrides


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
    )
