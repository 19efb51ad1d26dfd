"""Broker config rendering and helpers (no Java, no broker)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor.broker import runtime, server
from monitor.broker.runtime import BrokerError
from monitor.broker.topics import DEADLETTER_MAX_MESSAGE_BYTES, topic_configs
from monitor.icd.topics import Topics


def _props(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_server_properties_defaults(tmp_path: Path) -> None:
    p = _props(server.BrokerConfig(data_dir=tmp_path).render_properties())
    assert p["process.roles"] == "broker,controller"
    assert p["node.id"] == "1"
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert p["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert p["controller.quorum.bootstrap.servers"] == "127.0.0.1:9093"
    assert p["controller.listener.names"] == "CONTROLLER"
    assert p["auto.create.topics.enable"] == "false"
    assert p["group.initial.rebalance.delay.ms"] == "0"
    assert p["num.partitions"] == "6"
    assert p["log.dirs"] == str((tmp_path / "data").resolve())
    for key, value in p.items():
        if key.endswith("replication.factor"):
            assert value == "1", key


def test_server_properties_custom_ports(tmp_path: Path) -> None:
    cfg = server.BrokerConfig(data_dir=tmp_path, port=19092, controller_port=19093, partitions=3)
    p = _props(cfg.render_properties())
    assert p["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert p["num.partitions"] == "3"
    assert cfg.bootstrap == "127.0.0.1:19092"
    assert "0.0.0.0" not in cfg.render_properties()


def test_same_ports_rejected(tmp_path: Path) -> None:
    with pytest.raises(BrokerError):
        server.BrokerConfig(data_dir=tmp_path, port=9092, controller_port=9092).render_properties()


def test_pom_pins_kafka_and_log4j_binding() -> None:
    pom = runtime.render_pom("4.1.1")
    assert "<packaging>pom</packaging>" in pom
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<version>4.1.1</version>" in pom
    assert "log4j-slf4j2-impl" in pom and "log4j-core" in pom
    assert "${" not in pom


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", None),
    ],
)
def test_parse_java_major(text: str, major: int | None) -> None:
    assert runtime.parse_java_major(text) == major


def test_cache_and_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELESAFE_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("TELESAFE_KAFKA_DIR", str(tmp_path / "k"))
    assert runtime.lib_dir("4.1.1") == tmp_path / "c" / "kafka" / "4.1.1" / "lib"
    assert server.default_data_dir() == tmp_path / "k"
    assert not runtime.is_resolved("4.1.1")


def test_default_data_dir_is_under_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TELESAFE_KAFKA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert server.default_data_dir() == tmp_path / ".telesafe" / "kafka"


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(runtime.PrerequisiteError, match="java not found"):
        runtime.check_java()
    with pytest.raises(runtime.PrerequisiteError, match="mvn not found"):
        runtime.mvn_executable()


def test_cluster_id_format() -> None:
    for _ in range(50):
        cid = server.random_cluster_id()
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid) and not cid.startswith("-")


def test_deadletter_config() -> None:
    t = Topics("x.")
    assert topic_configs(t)[t.deadletter] == {"max.message.bytes": "8388608"}
    assert topic_configs(t)[t.state]["cleanup.policy"] == "compact"
    assert DEADLETTER_MAX_MESSAGE_BYTES == 8 * 1024 * 1024
