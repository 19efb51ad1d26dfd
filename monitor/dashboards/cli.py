"""`telesafe dashboards generate|push`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from grafana_client.client import GrafanaException, GrafanaTimeoutError

from monitor.errors import EXIT_UNAVAILABLE, DashboardsLayerError, UsageError

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
            raise DashboardsLayerError(
                "out of date (run `telesafe dashboards generate`): " + ", ".join(stale)
            )
        print(f"{len(all_dashboards())} dashboards up to date in {out}")
        return 0
    for path in generate(out):
        print(path)
    return 0


class PushError(DashboardsLayerError):
    """Grafana refused the upload or answered something that is not Grafana's API."""


class GrafanaUnreachable(PushError):
    """Nothing answered at the Grafana URL in time."""

    exit_code = EXIT_UNAVAILABLE


def _push(args: argparse.Namespace) -> int:
    if not args.url:
        raise UsageError("--url (or GRAFANA_URL) is required")
    url = _without_password(args.url)
    try:
        results = push(args.url, args.token, folder=args.folder)
    except GrafanaTimeoutError:
        raise GrafanaUnreachable(f"Grafana at {url} did not answer in time") from None
    except GrafanaException as exc:
        raise PushError(f"Grafana at {url} answered {_http_reason(exc)}") from None
    except OSError as exc:  # the HTTP client's connection errors
        raise GrafanaUnreachable(f"cannot reach Grafana at {url}: {_root_cause(exc)}") from None
    except ValueError:  # a 2xx answer that is not JSON: not Grafana's HTTP API
        raise PushError(
            f"{url} does not answer like Grafana's HTTP API (is it the base URL?)"
        ) from None
    for r in results:
        print(f"{r.uid}\t{r.status or 'ok'}\tversion={r.version}\t{r.url}")
    return 0


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _http_reason(exc: GrafanaException) -> str:
    code = int(getattr(exc, "status_code", 0) or 0)
    if code == 404:
        return "HTTP 404 Not Found (is the URL Grafana's base URL?)"
    if code in (401, 403):
        return f"HTTP {code}: check --token (GRAFANA_TOKEN) or user:password in the URL"
    detail = exc.response.get("message") if isinstance(exc.response, dict) else None
    return f"HTTP {code}" + (f": {detail}" if detail else "") if code else str(exc.message)


def _root_cause(exc: BaseException) -> str:
    """The innermost reason ("Connection refused"), not the HTTP client's retry story."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return reason.rsplit("] ", 1)[-1]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "dashboards",
        help="generate or push the Grafana dashboards",
        description="The Grafana dashboards as code: `generate` writes their JSON (committed "
        "under dashboards/), `push` uploads them to a running Grafana.",
    )
    dsub = p.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)

    g = dsub.add_parser(
        "generate",
        help="write dashboards/*.json from monitor/dashboards",
        description="Write one JSON file per dashboard, built from monitor/dashboards and "
        "the default policy pack's thresholds.",
    )
    g.add_argument(
        "--out", default=str(DEFAULT_OUT_DIR), help="output directory (default %(default)s)"
    )
    g.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the files differ from the generator",
    )
    g.set_defaults(func=_generate)

    u = dsub.add_parser(
        "push",
        help="upload the dashboards to Grafana (grafana-client)",
        description="Upload (overwrite) every dashboard into a Grafana folder, then read "
        "them back. Exit 1 if Grafana refuses, 3 if it does not answer.",
    )
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
    u.add_argument(
        "--folder",
        default=DEFAULT_FOLDER,
        help="folder title, created if missing (default %(default)s)",
    )
    u.set_defaults(func=_push)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m monitor.dashboards {generate,push}``."""
    from monitor.cli import run_group

    return run_group("dashboards", argv)
