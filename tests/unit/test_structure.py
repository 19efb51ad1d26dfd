"""The house rules of docs/architecture.md, checked: small modules in the engine and the
service, one package that speaks Kafka, a pure engine, and no reaching into another
module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MONITOR = ROOT / "monitor"
MAX_LINES = 400

# Private names of the standard library's argparse, which has no public way to walk
# subcommands or format one argument (monitor/cli.py), and namedtuple's public `_replace`.
STDLIB_PRIVATE = {"_SubParsersAction", "_actions", "_option_string_actions", "_format_args"}
PUBLIC_UNDERSCORE = {"_replace", "_asdict", "_fields"}


def _modules(*parts: str) -> list[Path]:
    return sorted(MONITOR.joinpath(*parts).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def test_no_engine_or_service_module_is_over_400_lines() -> None:
    long = {
        p.relative_to(ROOT).as_posix(): n
        for p in _modules("engine") + _modules("service")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_only_monitor_kafka_imports_a_kafka_client() -> None:
    offenders = [
        p.relative_to(ROOT).as_posix()
        for p in _modules()
        if "kafka" not in p.relative_to(MONITOR).parts[:1]
        and any(m.split(".")[0] in ("confluent_kafka", "kafka") for m in _imports(p))
    ]
    assert not offenders


def test_the_engine_is_pure() -> None:
    """Records and a clock in, decisions out: no I/O, threads, Kafka or service."""
    forbidden = ("monitor.service", "monitor.kafka", "monitor.audit", "socket", "threading")
    for p in _modules("engine"):
        if p.name == "clock.py":
            continue  # SystemClock reads the real clocks; everything else takes a Clock
        bad = {m for m in _imports(p) if m.startswith(forbidden) or m in ("time", "random")}
        assert not bad, (p.name, bad)


def test_no_module_reaches_into_another_modules_private_names() -> None:
    """`x._name` only on `self`/`cls` (monitor/kafka and monitor/audit wrap libraries and
    are exempt, as the issue that set this rule says)."""
    found = []
    for p in _modules():
        rel = p.relative_to(MONITOR).parts
        if rel[0] in ("kafka", "audit"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or name.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if name in STDLIB_PRIVATE | PUBLIC_UNDERSCORE:
                continue
            found.append(f"{'/'.join(rel)}:{node.lineno} {ast.unparse(node)}")
    assert not found, found
