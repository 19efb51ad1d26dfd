"""Fuzz-run plumbing.

- A nightly fuzz run (TELESAFE_FUZZ_EXAMPLES set) takes longer than the suite's per-test
  timeout (pyproject: timeout = 300): lift it for these tests only.
- Every run has a recorded hypothesis seed: `--hypothesis-seed` if given, else a random one,
  printed with the tallies (rerun with `--hypothesis-seed=S` and the same budget).
- After the run: per fuzz test, examples, inputs (fuzzkit: what counts as one), decoder
  outcomes by rejection code, engine actions by kind; as JSON to $TELESAFE_FUZZ_REPORT.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest

from tests.fuzz import fuzzkit

HERE = os.path.dirname(__file__)
_T0 = time.monotonic()
_STARTED = dt.datetime.now(dt.UTC)
_LOAD0 = os.getloadavg()
_SEED: int | str | None = None
_OUTCOMES: dict[str, str] = {}
_DURATIONS: dict[str, float] = {}


def _ours(item: pytest.Item) -> bool:
    return str(item.path).startswith(HERE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    global _SEED
    seed = config.getoption("hypothesis_seed", None)
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    elif str(seed).isdigit():
        seed = int(seed)
    _SEED = seed
    nightly = bool(os.environ.get("TELESAFE_FUZZ_EXAMPLES"))
    for item in items:
        if not _ours(item):
            continue
        if nightly:
            item.add_marker(pytest.mark.timeout(0))
        obj = getattr(item, "obj", None)
        if obj is not None and getattr(obj, "is_hypothesis_test", False):
            hypothesis.seed(seed)(obj)


@pytest.fixture(autouse=True)
def _fuzz_tally(request: pytest.FixtureRequest) -> Iterator[None]:
    fuzzkit.begin(request.node.nodeid)
    yield


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.nodeid.startswith("tests/fuzz/"):
        return
    if report.when == "call" or report.outcome != "passed":
        _DURATIONS[report.nodeid] = _DURATIONS.get(report.nodeid, 0.0) + report.duration
        if _OUTCOMES.get(report.nodeid) != "failed":
            _OUTCOMES[report.nodeid] = report.outcome


def report() -> dict[str, Any]:
    tests = {}
    for nodeid, tally in sorted(fuzzkit.TALLIES.items()):
        tests[nodeid] = {
            "outcome": _OUTCOMES.get(nodeid, "not run"),
            "duration_s": round(_DURATIONS.get(nodeid, 0.0), 3),
            **tally.as_dict(),
        }
    return {
        "date": _STARTED.isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - _T0, 3),
        "hypothesis_seed": _SEED,
        "max_examples": fuzzkit.EXAMPLES,  # null: each test's CI default
        "python": platform.python_version(),
        "hypothesis": hypothesis.__version__,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in _LOAD0],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        },
        "examples": sum(t["examples"] for t in tests.values()),
        "inputs": sum(t["inputs"] for t in tests.values()),
        "failed": sorted(n for n, o in _OUTCOMES.items() if o == "failed"),
        "tests": tests,
    }


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not fuzzkit.TALLIES:
        return
    rep = report()
    tr = terminalreporter
    tr.section("fuzz inputs")
    for nodeid, t in rep["tests"].items():
        name = nodeid.rsplit("::", 1)[-1]
        tr.write_line(
            f"{name}: {t['outcome']}, {t['examples']:,} examples, {t['inputs']:,} inputs"
            f" ({t['duration_s']:.1f} s)"
        )
        for dec, c in t.get("decoders", {}).items():
            codes = ", ".join(f"{k} {n:,}" for k, n in c["rejected_by_code"].items())
            tr.write_line(
                f"    {dec}: accepted {c['accepted']:,}, rejected {c['rejected']:,}"
                + (f" ({codes})" if codes else "")
            )
        if "actions" in t:
            kinds = ", ".join(f"{k} {n:,}" for k, n in t["actions"].items())
            tr.write_line(f"    actions: {kinds}")
    tr.write_line(
        f"total {rep['inputs']:,} inputs in {rep['examples']:,} examples, "
        f"hypothesis seed {rep['hypothesis_seed']} (rerun: --hypothesis-seed="
        f"{rep['hypothesis_seed']}), {rep['elapsed_s']:.1f} s"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("TELESAFE_FUZZ_REPORT")
    if not path or not fuzzkit.TALLIES:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps({**report(), "exitstatus": int(exitstatus)}, indent=1) + "\n")
    tmp.replace(out)
