"""The traceability generator (monitor.safety.trace) on a tiny synthetic repository."""

from __future__ import annotations

from pathlib import Path

from monitor.safety.trace import load_results, scan_tests, trace

HAZARDS = """
hazards:
  - id: H-01
    hazard: link loss
    cause: cable
    severity: catastrophic
    probability: {before: probable, after: remote}
    risk_control: stop after 300 ms
  - id: H-02
    hazard: clock error
    cause: NTP
    severity: critical
    probability: {before: occasional, after: remote}
    risk_control: staleness
"""

TESTS = '''
import pytest

@pytest.mark.hazard("H-01")
def test_stop():
    pass

@pytest.mark.hazard("H-01")
@pytest.mark.hazard("H-02")
@pytest.mark.parametrize("x", [1, 2])
def test_both(x):
    pass

def test_unmarked():
    pass
'''

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.test_a" name="test_stop" time="0.1"/>
<testcase classname="tests.test_a" name="test_both[1]" time="0.1"/>
<testcase classname="tests.test_a" name="test_both[2]" time="0.1">
  <failure message="boom">boom</failure></testcase>
</testsuite></testsuites>
"""


def _repo(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(TESTS)
    (tmp_path / "hazards.yaml").write_text(HAZARDS)
    (tmp_path / "junit.xml").write_text(JUNIT)
    return tmp_path


def test_scan_finds_marked_tests_only(tmp_path: Path) -> None:
    refs = {t.nodeid: t.hazards for t in scan_tests(_repo(tmp_path))}
    assert refs == {"tests/test_a.py::test_stop": ["H-01"],
                    "tests/test_a.py::test_both": ["H-01", "H-02"]}


def test_a_failing_parametrisation_fails_the_test(tmp_path: Path) -> None:
    res = load_results(_repo(tmp_path) / "junit.xml")
    assert res == {"tests/test_a.py::test_stop": "passed",
                   "tests/test_a.py::test_both": "failed"}


def test_hazard_without_a_passing_test_fails_the_trace(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    out = root / "trace.md"
    code, text = trace(root, root / "hazards.yaml", root / "junit.xml", out)
    assert code == 1  # H-02's only test failed
    assert out.read_text() == text
    assert "**H-01**" in text and "| yes |" in text
    assert "Not verified: H-02" in text


def test_all_passing_exits_zero_and_no_junit_means_not_run(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "junit.xml").write_text(JUNIT.replace('<failure message="boom">boom</failure>', ""))
    assert trace(root, root / "hazards.yaml", root / "junit.xml", None)[0] == 0
    code, text = trace(root, root / "hazards.yaml", None, None)
    assert code == 1 and "not run" in text


def test_unknown_hazard_id_is_a_problem(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "tests" / "test_b.py").write_text(
        'import pytest\n\n@pytest.mark.hazard("H-99")\ndef test_x():\n    pass\n')
    code, text = trace(root, root / "hazards.yaml", root / "junit.xml", None)
    assert code == 1 and "unknown hazard H-99" in text
