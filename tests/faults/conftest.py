"""Fault tests run against the real local Kafka broker: reuse the integration fixtures.

Everything collected under tests/faults is marked ``integration`` (and ``faults``-style
tests are selected with ``pytest tests/faults``), so ``pytest -m "not integration"`` still
runs without Java.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import kafka_bootstrap, kafka_data_dir, topic_prefix

__all__ = ["kafka_bootstrap", "kafka_data_dir", "topic_prefix"]

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)
