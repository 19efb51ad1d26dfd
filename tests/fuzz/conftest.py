"""A nightly fuzz run (TELESAFE_FUZZ_EXAMPLES set) takes longer than the suite's per-test
timeout (pyproject: timeout = 300): lift it for these tests only."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("TELESAFE_FUZZ_EXAMPLES"):
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.timeout(0))
