"""Fixtures for tests against the real local Kafka broker (see docs/broker.md).

Everything collected under tests/integration is marked ``integration``, so
``pytest -m "not integration"`` runs without Java.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.broker import server
from monitor.broker.runtime import BrokerError, PrerequisiteError
from monitor.broker.topics import admin_client, ensure_topics
from monitor.icd.topics import Topics

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
# Another local broker can be used with TELESAFE_TEST_KAFKA_PORT (and TELESAFE_KAFKA_DIR).
PORT = int(os.environ.get("TELESAFE_TEST_KAFKA_PORT", server.DEFAULT_PORT))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_data_dir() -> Path:
    """The broker data dir: $TELESAFE_KAFKA_DIR or <repo>/.telesafe/kafka (not the cwd)."""
    env = os.environ.get("TELESAFE_KAFKA_DIR")
    return Path(env).resolve() if env else REPO_ROOT / ".telesafe" / "kafka"


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_data_dir: Path) -> Iterator[str]:
    """A broker answering on 127.0.0.1:9092; started here only if none answers.

    A broker that was already running is left running; one started by this fixture
    is stopped at the end of the session.
    """
    bootstrap = server.bootstrap_address(PORT)
    started = False
    if not server.broker_answers(bootstrap, timeout_s=3.0):
        try:
            res = server.start(kafka_data_dir, port=PORT, create_topics=False)
        except PrerequisiteError as exc:
            if os.environ.get("CI"):  # CI must run the real-broker tests, never skip them
                pytest.fail(f"cannot run the local Kafka broker: {exc}", pytrace=False)
            pytest.skip(f"cannot run the local Kafka broker: {exc}")
        except BrokerError as exc:
            pytest.fail(f"local Kafka broker did not start: {exc}", pytrace=False)
        started = not res.already_running
    yield bootstrap
    if started:
        server.stop(kafka_data_dir)


@pytest.fixture
def topic_prefix(kafka_bootstrap: str) -> Iterator[str]:
    """A unique prefix (``t<8 hex>.``) whose ICD topics exist; deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    yield prefix
    # Best effort: keeps the shared broker from accumulating thousands of partitions.
    with contextlib.suppress(Exception):
        admin = admin_client(kafka_bootstrap)
        try:
            admin.delete_topics(Topics(prefix).all(), 10)
        finally:
            admin.close()
