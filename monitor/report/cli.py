"""`telesafe report`: the post-operative report of one procedure, from a verified ledger.

Exit codes: 0 written; 1 the ledger failed verification, or the procedure is not in it;
2 bad arguments or unreadable input (also: --pdf without WeasyPrint).
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from monitor.argtypes import positive_int
from monitor.audit.checkpoint import load_public_key
from monitor.audit.cli import require_ledger
from monitor.audit.verified import LedgerRefused
from monitor.errors import EXIT_OK, UsageError

_EPILOG = textwrap.dedent(
    """\
    The ledger is verified first, exactly as `telesafe audit verify` does (entry hashes,
    Merkle roots, checkpoint signatures, the rollback sidecar). A ledger that fails is
    refused, naming the first bad entry. Only entries covered by the latest signed
    checkpoint are used.

    The HTML page is self-contained (inline CSS and SVG charts, no external assets):
    procedure facts, the policy pack in force, latency per channel with a chart,
    heartbeat gaps, a timeline of warnings / safe-stops / re-sends / acknowledgements /
    re-arms / notes, workspace excursions, per-site record counters, and the signed
    checkpoint that covers the procedure.

    examples:
      telesafe report --ledger audit.db --pubkey audit.key.pub --procedure LDN-GIB-0001
      telesafe report --ledger audit.db --pubkey audit.key.pub --procedure LDN-GIB-0001 \\
          --out reports/LDN-GIB-0001.html --pdf reports/LDN-GIB-0001.pdf

    exit codes: 0 report written; 1 ledger failed verification or unknown procedure
    (the procedures in the ledger are listed); 2 bad arguments or unreadable input.
    """
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="write the post-operative HTML (or PDF) report of a procedure from the ledger",
        description="Write the post-operative safety report of one procedure, built only "
        "from verified audit-ledger entries.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--ledger",
        required=True,
        metavar="LEDGER",
        help="audit ledger file (SQLite) or an export bundle directory",
    )
    p.add_argument(
        "--pubkey",
        required=True,
        metavar="KEY.pub",
        help="the ledger's Ed25519 public key (PEM, raw 32 bytes or signed-note vkey)",
    )
    p.add_argument("--procedure", required=True, metavar="ID", help="procedure id to report on")
    p.add_argument(
        "--out",
        metavar="FILE.html",
        help="HTML file to write (default: report-<ID>.html in the current directory, "
        "unless only --pdf is given)",
    )
    p.add_argument(
        "--pdf",
        metavar="FILE.pdf",
        help="also write a PDF (needs the optional WeasyPrint extra: pip install 'telesafe[pdf]')",
    )
    p.add_argument(
        "--run",
        type=positive_int,
        metavar="N",
        help="if the procedure id was opened more than once in the ledger, report on run N "
        "(1 = first; default: the latest)",
    )
    p.add_argument(
        "--rules",
        action="append",
        metavar="DIR",
        default=[],
        help="extra directory of policy packs, to find the pack whose content hash the ledger "
        "records (its thresholds are drawn on the charts); the shipped rules/ is always searched",
    )
    p.set_defaults(func=run_report)


def _safe_name(pid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in pid) or "procedure"


def run_report(args: argparse.Namespace) -> int:
    from monitor.audit.verified import load_verified
    from monitor.report.build import build_report
    from monitor.report.html import PdfUnavailable, pdf_available, render_html, write_pdf

    out = Path(args.out) if args.out else None
    pdf = Path(args.pdf) if args.pdf else None
    if out is None and pdf is None:
        out = Path(f"report-{_safe_name(args.procedure)}.html")
    for target in (out, pdf):
        if target is not None and not target.parent.exists():
            raise UsageError(f"{target.parent}: output directory does not exist")
    if out is not None and pdf is not None and out.resolve() == pdf.resolve():
        raise UsageError("--out and --pdf name the same file")
    if pdf is not None and not pdf_available():
        raise PdfUnavailable(
            "--pdf needs WeasyPrint, which is not installed (or its native libraries are "
            "missing). Install the optional extra: pip install 'telesafe[pdf]', or print the "
            "HTML report to PDF from a browser."
        )
    for d in args.rules:
        if not Path(d).is_dir():
            raise UsageError(f"--rules {d}: not a directory")
    require_ledger(Path(args.ledger))
    pub = load_public_key(args.pubkey)
    try:
        vl = load_verified(args.ledger, pub)
    except LedgerRefused as exc:
        raise LedgerRefused(f"refusing to report: {exc}") from None
    report = build_report(vl, args.procedure, run=args.run, rules_dirs=args.rules)
    html = render_html(report)
    if out is not None:
        out.write_text(html, encoding="utf-8")
        print(f"report: {out} ({len(html) // 1024} KiB)")
    if pdf is not None:
        write_pdf(html, pdf)
        print(f"report: {pdf}")
    stops = len(report.stops)
    cp = report.checkpoint
    print(
        f"{report.procedure_id}: entries {report.first_index}–{report.last_index}, "
        f"{stops} safe-stop(s), {report.warnings_raised} warning(s); ledger verified, "
        f"covered by checkpoint size {cp.size if cp else '?'}"
    )
    return EXIT_OK
