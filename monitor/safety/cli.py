"""`telesafe safety trace`: hazard log -> traceability table (docs/safety/traceability.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.safety.trace import trace

ROOT = Path(__file__).resolve().parents[2]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "safety",
        help="safety case: hazard log traceability",
        description="Tools for the safety case (docs/safety/): `trace` ties each hazard "
        "to its controls, the tests that show them and their last result.",
    )
    ssub = p.add_subparsers(dest="safety_command", required=True)
    t = ssub.add_parser(
        "trace",
        help="hazard -> control -> tests -> last result; exit 1 if a hazard has no passing test",
        description="Read docs/safety/hazards.yaml, find tests marked "
        "@pytest.mark.hazard(ID) under tests/, take their results from a JUnit XML "
        "(pytest --junitxml) and write the traceability table.",
    )
    t.add_argument("--junit", type=Path, help="JUnit XML of the last test run")
    t.add_argument(
        "--hazards",
        type=Path,
        default=ROOT / "docs/safety/hazards.yaml",
        help="the hazard log (default: docs/safety/hazards.yaml of this checkout)",
    )
    t.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="repository root, holding tests/ (default: this checkout)",
    )
    t.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs/safety/traceability.md",
        help="where to write the table, '-' for stdout only (default: "
        "docs/safety/traceability.md of this checkout)",
    )
    t.set_defaults(func=_trace)


def _trace(args: argparse.Namespace) -> int:
    out = None if str(args.out) == "-" else args.out
    code, text = trace(args.root, args.hazards, args.junit, out)
    if out is None:
        sys.stdout.write(text)
    else:
        last = text.strip().splitlines()
        print(f"wrote {out}: " + next(x for x in last if "hazards have" in x))
    return code
