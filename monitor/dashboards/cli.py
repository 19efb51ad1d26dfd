"""`telesafe dashboards generate|push`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import DEFAULT_OUT_DIR, all_dashboards, file_name, generate, render_json
from .push import DEFAULT_FOLDER, push


def _generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.check:
        stale = []
        for d in all_dashboards():
            path = out / file_name(d)
            if not path.exists() or path.read_text(encoding="utf-8") != render_json(d):
                stale.append(str(path))
        if stale:
            print(
                "out of date (run `telesafe dashboards generate`): " + ", ".join(stale),
                file=sys.stderr,
            )
            return 1
        print(f"{len(all_dashboards())} dashboards up to date in {out}")
        return 0
    for path in generate(out):
        print(path)
    return 0


def _push(args: argparse.Namespace) -> int:
    if not args.url:
        print("dashboards push: --url (or GRAFANA_URL) is required", file=sys.stderr)
        return 2
    for r in push(args.url, args.token, folder=args.folder):
        print(f"{r.uid}\t{r.status or 'ok'}\tversion={r.version}\t{r.url}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dashboards", help="generate or push the Grafana dashboards")
    dsub = p.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)

    g = dsub.add_parser("generate", help="write dashboards/*.json from monitor/dashboards")
    g.add_argument("--out", default=str(DEFAULT_OUT_DIR), help="output directory")
    g.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the files differ from the generator",
    )
    g.set_defaults(func=_generate)

    u = dsub.add_parser("push", help="upload the dashboards to Grafana (grafana-client)")
    u.add_argument(
        "--url",
        default=os.environ.get("GRAFANA_URL"),
        help="Grafana base URL (default: $GRAFANA_URL); may carry user:password@",
    )
    u.add_argument(
        "--token",
        default=os.environ.get("GRAFANA_TOKEN"),
        help="service-account token (default: $GRAFANA_TOKEN)",
    )
    u.add_argument("--folder", default=DEFAULT_FOLDER, help="folder title (created if missing)")
    u.set_defaults(func=_push)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m monitor.dashboards {generate,push}``."""
    parser = argparse.ArgumentParser(prog="telesafe")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["dashboards", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))
