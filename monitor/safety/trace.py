"""Traceability: hazard -> risk control -> verifying tests -> last result.

Tests name the hazard they verify with ``@pytest.mark.hazard("H-xx")``; they are found by
an AST scan of the test tree (no import, no pytest run). Results come from a JUnit XML
written by ``pytest --junitxml``. A hazard is *verified* when at least one of its tests
passed in that report.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from monitor.errors import SafetyLayerError

PASSED, FAILED, SKIPPED, XFAILED, NOT_RUN = "passed", "failed", "skipped", "xfailed", "not run"


@dataclass(frozen=True)
class Hazard:
    id: str
    hazard: str
    cause: str
    severity: str
    probability_before: str
    probability_after: str
    control: str


@dataclass
class TestRef:
    """One test function: `tests/x/test_y.py::test_z`, with the hazards it names."""

    path: str
    name: str
    hazards: list[str] = field(default_factory=list)

    @property
    def nodeid(self) -> str:
        return f"{self.path}::{self.name}"


class HazardLogError(SafetyLayerError, ValueError):
    pass


def load_hazards(path: Path) -> list[Hazard]:
    data = yaml.safe_load(path.read_text())
    items = data.get("hazards") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise HazardLogError(f"{path}: expected a mapping with a 'hazards' list")
    out: list[Hazard] = []
    for i, h in enumerate(items):
        try:
            out.append(
                Hazard(
                    id=str(h["id"]),
                    hazard=str(h["hazard"]).strip(),
                    cause=str(h["cause"]).strip(),
                    severity=str(h["severity"]),
                    probability_before=str(h["probability"]["before"]),
                    probability_after=str(h["probability"]["after"]),
                    control=str(h["risk_control"]).strip(),
                )
            )
        except (KeyError, TypeError) as exc:
            raise HazardLogError(f"{path}: hazards[{i}]: missing or bad field {exc}") from exc
    ids = [h.id for h in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise HazardLogError(f"{path}: duplicate hazard ids {dupes}")
    return out


def _hazard_ids(dec: ast.expr) -> list[str]:
    """`pytest.mark.hazard("H-01", ...)` (or `mark.hazard`) -> ["H-01", ...]."""
    if not isinstance(dec, ast.Call):
        return []
    f = dec.func
    if not (isinstance(f, ast.Attribute) and f.attr == "hazard"):
        return []
    inner = f.value
    if not (
        (isinstance(inner, ast.Attribute) and inner.attr == "mark")
        or (isinstance(inner, ast.Name) and inner.id == "mark")
    ):
        return []
    return [a.value for a in dec.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def scan_tests(root: Path, tests_dir: str = "tests") -> list[TestRef]:
    """Every test function under root/tests_dir that carries a hazard marker."""
    out: list[TestRef] = []
    for file in sorted((root / tests_dir).rglob("test_*.py")):
        try:
            tree = ast.parse(file.read_text(), filename=str(file))
        except SyntaxError:
            continue
        rel = file.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test"
            ):
                ids = [i for d in node.decorator_list for i in _hazard_ids(d)]
                if ids:
                    out.append(TestRef(rel, node.name, ids))
    return out


def load_results(junit: Path) -> dict[str, str]:
    """nodeid-ish key `path::function` -> worst-first combined result of its cases."""
    rank = {FAILED: 0, PASSED: 1, XFAILED: 2, SKIPPED: 3}
    out: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        classname = case.get("classname", "")
        name = case.get("name", "").split("[", 1)[0]
        parts = classname.split(".")
        # pytest: classname "tests.unit.test_x" or "tests.unit.test_x.TestClass"
        while parts and not parts[-1].startswith("test_"):
            parts.pop()
        path = "/".join(parts) + ".py"
        if case.find("failure") is not None or case.find("error") is not None:
            res = FAILED
        else:
            sk = case.find("skipped")
            if sk is None:
                res = PASSED
            elif (sk.get("type") or "") == "pytest.xfail":
                res = XFAILED
            else:
                res = SKIPPED
        key = f"{path}::{name}"
        prev = out.get(key)
        out[key] = res if prev is None or rank[res] < rank[prev] else prev
    return out


@dataclass
class Row:
    hazard: Hazard
    tests: list[tuple[TestRef, str]]

    @property
    def verified(self) -> bool:
        return any(r == PASSED for _, r in self.tests)


def build(
    hazards: list[Hazard], tests: list[TestRef], results: dict[str, str] | None
) -> tuple[list[Row], list[str]]:
    """Rows per hazard, and problems (unknown hazard ids named by tests)."""
    known = {h.id for h in hazards}
    problems = [
        f"{t.nodeid} names unknown hazard {i}" for t in tests for i in t.hazards if i not in known
    ]
    rows = []
    for h in hazards:
        mine = [t for t in tests if h.id in t.hazards]
        rows.append(Row(h, [(t, (results or {}).get(t.nodeid, NOT_RUN)) for t in mine]))
    return rows, problems


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(rows: list[Row], problems: list[str], junit: str | None) -> str:
    lines = [
        "# Traceability: hazard → risk control → tests → last result",
        "",
        "Generated by `telesafe safety trace` from [hazards.yaml](hazards.yaml), the",
        "`@pytest.mark.hazard(...)` markers in `tests/` and "
        + (f"the JUnit report `{junit}`." if junit else "no JUnit report (results: not run)."),
        "Do not edit by hand.",
        "",
        "| hazard | severity | P before → after | risk control | tests | verified |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        h = r.hazard
        tests = "<br>".join(f"`{t.nodeid}`: {res}" for t, res in r.tests) or "**none**"
        lines.append(
            f"| **{h.id}** {_cell(h.hazard)} | {h.severity} | {h.probability_before} → "
            f"{h.probability_after} | {_cell(h.control)} | {tests} | "
            f"{'yes' if r.verified else '**NO**'} |"
        )
    lines += ["", "## Summary", ""]
    bad = [r.hazard.id for r in rows if not r.verified]
    lines.append(
        f"{len(rows) - len(bad)} of {len(rows)} hazards have at least one passing "
        "test." + (f" Not verified: {', '.join(bad)}." if bad else "")
    )
    for p in problems:
        lines.append(f"- problem: {p}")
    return "\n".join(lines) + "\n"


def trace(root: Path, hazards_path: Path, junit: Path | None, out: Path | None) -> tuple[int, str]:
    """Write the table; exit status 0 only if every hazard has a passing test."""
    hazards = load_hazards(hazards_path)
    tests = scan_tests(root)
    results = load_results(junit) if junit is not None else None
    rows, problems = build(hazards, tests, results)
    text = render(rows, problems, str(junit) if junit else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    ok = all(r.verified for r in rows) and not problems
    return (0 if ok else 1), text


def summary(rows: list[Row]) -> list[dict[str, Any]]:
    return [{"id": r.hazard.id, "tests": len(r.tests), "verified": r.verified} for r in rows]
