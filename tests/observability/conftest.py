"""Fixtures for the observability tests: the Debian Prometheus/Alertmanager binaries."""

from __future__ import annotations

import pytest

from .promstack import ensure_binaries, missing_binaries


@pytest.fixture(scope="session")
def prom_binaries() -> None:
    """prometheus, promtool, prometheus-alertmanager and amtool on PATH (installed if not)."""
    if missing_binaries():
        try:
            ensure_binaries()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
