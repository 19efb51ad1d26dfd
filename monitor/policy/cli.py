"""`telesafe policy check|explain|schema`."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from monitor.policy.loader import LoadedPack, PolicyError, load_pack_file, schema


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "policy",
        help="validate and explain policy packs",
        description="Work with policy packs (rules/*.yaml).",
    )
    ps = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    c = ps.add_parser("check", help="validate pack files; exit 1 naming the JSON path of a problem")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.set_defaults(func=check)
    e = ps.add_parser("explain", help="print a pack's rules as a readable table")
    e.add_argument("file", metavar="FILE")
    e.set_defaults(func=explain)
    s = ps.add_parser("schema", help="print the JSON Schema of policy packs (rules/schema.json)")
    s.set_defaults(func=print_schema)


def check(args: argparse.Namespace) -> int:
    bad = 0
    for f in args.files:
        try:
            lp = load_pack_file(f)
        except PolicyError as exc:
            print(f"INVALID {exc}", file=sys.stderr)
            bad += 1
            continue
        print(f"ok {f}: pack {lp.name} version {lp.version} sha256 {lp.sha256}")
    return 1 if bad else 0


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
        print(f"INVALID {exc}", file=sys.stderr)
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
