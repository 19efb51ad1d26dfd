"""`telesafe policy check|explain|schema`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from monitor.policy.loader import (
    DEFAULT_PACK,
    LoadedPack,
    PolicyError,
    Problem,
    check_dir,
    load_pack_file,
    schema,
)

CHECK_HELP = "validate pack files or directories; list every problem with its JSON path"
CHECK_DESCRIPTION = (
    "Validate policy packs and list every problem of each, with its JSON path. A DIR is "
    "checked exactly as `telesafe run --rules DIR` loads it: every *.yaml in it, names "
    "unique, a default pack present. Exit 1 if anything is invalid."
)
DEFAULT_PACK_HELP = (
    "for a DIR: the pack for procedures that name none, as `run --default-pack` "
    "(default %(default)s)"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "policy",
        help="validate and explain policy packs",
        description="Work with policy packs (rules/*.yaml).",
    )
    ps = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    c = ps.add_parser("check", help=CHECK_HELP, description=CHECK_DESCRIPTION)
    c.add_argument(
        "paths", nargs="+", metavar="FILE|DIR", help="pack files (*.yaml) or directories of them"
    )
    default = os.environ.get("TELESAFE_DEFAULT_PACK", DEFAULT_PACK)
    c.add_argument("--default-pack", default=default, help=DEFAULT_PACK_HELP)
    c.set_defaults(func=check)
    e = ps.add_parser(
        "explain",
        help="print a pack's rules as a readable table",
        description="Print each rule of a policy pack with its signal, warning and "
        "safe-stop thresholds, as the monitor applies them. Exit 1 if the pack is invalid.",
    )
    e.add_argument("file", metavar="FILE", help="a policy pack (*.yaml)")
    e.set_defaults(func=explain)
    s = ps.add_parser(
        "schema",
        help="print the JSON Schema of policy packs (rules/schema.json)",
        description="Print the JSON Schema every policy pack must match (for editors and "
        "CI); the same as the shipped rules/schema.json.",
    )
    s.set_defaults(func=print_schema)


def check(args: argparse.Namespace) -> int:
    bad = 0
    for arg in args.paths:
        path = Path(arg)
        if path.is_dir():
            bad += _check_dir(path, args.default_pack)
            continue
        try:
            lp = load_pack_file(path)
        except PolicyError as exc:
            _invalid(arg, exc.problems)
            bad += 1
            continue
        _ok(arg, lp)
    return 1 if bad else 0


def _ok(source: str, lp: LoadedPack) -> None:
    print(f"ok {source}: pack {lp.name} version {lp.version} sha256 {lp.sha256}")


def _invalid(source: str, problems: list[Problem]) -> None:
    n = len(problems)
    print(f"INVALID {source}: {n} problem{'s' if n > 1 else ''}", file=sys.stderr)
    for pr in problems:
        print(f"  {pr.where()}", file=sys.stderr)


def _check_dir(directory: Path, default: str) -> int:
    """One result per pack file, then the directory's own; 1 if `run --rules` would refuse."""
    result = check_dir(directory, default)
    for f in result.files:
        if f.pack is not None:
            _ok(str(f.path), f.pack)
        elif f.error is not None:
            _invalid(str(f.path), f.error.problems)
    if result.problems:
        _invalid(str(directory), result.problems)
    for stray in sorted(directory.glob("*.yml")):  # a likely slip for .yaml
        print(f"note {stray}: not loaded: `telesafe run --rules` reads *.yaml files only",
              file=sys.stderr)  # fmt: skip
    if not result.ok:
        print(f"{directory}: `telesafe run --rules {directory}` would refuse these packs",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"{directory}: {len(result.files)} pack(s), default {default!r}: "
          f"`telesafe run --rules {directory}` loads them")  # fmt: skip
    return 0


def rows(lp: LoadedPack) -> list[tuple[str, str, str, str]]:
    p = lp.pack
    hb, lat, link, ws, al = p.heartbeat, p.latency, p.link, p.workspace, p.alarms
    q = f"p{lat.quantile * 100:g} of the last {lat.window_ms:g} ms"

    def opt(v: float | None, unit: str) -> str:
        return "—" if v is None else f"> {v:g} {unit}"

    out = [
        (
            "heartbeat_silence",
            "per site, silence since the last fresh heartbeat",
            f"> {hb.warn_silence_ms:g} ms",
            f"> {hb.stop_silence_ms:g} ms",
        ),
        (
            "first_heartbeat",
            "each site's first fresh heartbeat after start",
            "—",
            f"none within {hb.first_heartbeat_ms:g} ms",
        ),
    ]
    for name, ch in (("control", lat.control), ("video", lat.video)):
        stop = "—" if ch.stop_ms is None else f"> {ch.stop_ms:g} ms held {ch.hold_ms:g} ms"
        if ch.max_sample_ms is not None:
            stop += f", or any sample > {ch.max_sample_ms:g} ms"
        out.append((f"{name}_latency", f"{name} latency, {q}", f"> {ch.warn_ms:g} ms", stop))
    out += [
        (
            "link_jitter",
            "link jitter, per site",
            opt(link.jitter.warn_ms, "ms"),
            opt(link.jitter.stop_ms, "ms"),
        ),
        (
            "link_loss",
            "link loss ratio, per site",
            opt(link.loss.warn_ratio, ""),
            opt(link.loss.stop_ratio, ""),
        ),
        (
            "workspace_box",
            "tool tip vs the arm's allowed box "
            f"(default x {ws.default_box.min[0]:g}..{ws.default_box.max[0]:g}, "
            f"y {ws.default_box.min[1]:g}..{ws.default_box.max[1]:g}, "
            f"z {ws.default_box.min[2]:g}..{ws.default_box.max[2]:g} mm"
            + (f"; {len(ws.arms)} arm override(s)" if ws.arms else "")
            + ")",
            f"within {ws.box_warn_mm:g} mm of a face",
            "outside",
        ),
        (
            "forbidden_zone",
            f"{len(ws.forbidden_zones)} zone(s): "
            + (", ".join(z.name for z in ws.forbidden_zones) or "none"),
            f"within {ws.zone_warn_mm:g} mm",
            "inside",
        ),
        (
            "tool_speed",
            "tool-tip speed",
            f"> {ws.speed_mm_s.warn:g} mm/s",
            f"> {ws.speed_mm_s.stop:g} mm/s",
        ),
        ("grip_force", "grip force", f"> {ws.grip_n.warn:g} N", f"> {ws.grip_n.stop:g} N"),
        (
            "safe-stop ack",
            "unacknowledged safe-stop",
            f"re-send every {al.resend_interval_ms:g} ms",
            f"page after {al.escalate_after_resends} re-sends",
        ),
        (
            "hysteresis",
            "a warning clears after its signal stays in band",
            "—",
            f"{al.clear_after_ms:g} ms",
        ),
        (
            "staleness",
            "a record is stale (no liveness evidence) when older than",
            "—",
            f"{p.stale_after_ms:g} ms",
        ),
    ]
    return out


def explain(args: argparse.Namespace) -> int:
    try:
        lp = load_pack_file(args.file)
    except PolicyError as exc:
        _invalid(args.file, exc.problems)
        return 1
    t = Table(title=f"{lp.name} {lp.version} — {lp.pack.description}\nsha256 {lp.sha256}")
    for col in ("rule", "signal", "warn", "safe-stop"):
        t.add_column(col)
    for r in rows(lp):
        t.add_row(*r)
    Console(width=140).print(t)
    return 0


def print_schema(args: argparse.Namespace) -> int:
    print(json.dumps(schema(), indent=2, sort_keys=True))
    return 0
