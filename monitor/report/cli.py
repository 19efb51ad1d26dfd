"""`telesafe report`: the post-operative report of one procedure, from a verified ledger,
or from the ledgers of several instances (several --ledger, or the governance archive).

Exit codes: 0 written; 1 a ledger failed verification, the procedure is not in it, or its
history has a hole the ledgers given cannot explain; 2 bad arguments or unreadable input
(also: --pdf without WeasyPrint).
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from monitor.argtypes import positive_int
from monitor.audit.checkpoint import load_public_key
from monitor.audit.cli import require_ledger
from monitor.audit.verified import LedgerRefused, VerifiedLedger
from monitor.errors import EXIT_FAILED, EXIT_OK, UsageError
from monitor.report.model import ProcedureReport, ProofInfo, ReportError


class HoleRefusal(ReportError):
    """The history has a hole the ledgers given cannot explain (exit 1, like a ledger that
    fails verification)."""

    exit_code = EXIT_FAILED


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

    Across instances (a procedure taken over after a failover): give every instance's
    ledger (--ledger L --pubkey K, repeated; one --pubkey for all if they share the key),
    or the governance archive (--archive DIR --trusted-keys FILE). Every ledger is verified;
    the entries are merged in time order, the same input recorded by two instances is shown
    once, each row names its instance, hand-overs are marked (gap in supervision, latch
    carried across), every ledger's covering checkpoint is listed, and each safe-stop
    carries its inclusion proof. A history with a hole the ledgers cannot explain (e.g. a
    takeover with a latch from an instance whose ledger is missing) is refused.

    examples:
      telesafe report --ledger audit.db --pubkey audit.key.pub --procedure LDN-GIB-0001
      telesafe report --ledger audit.db --pubkey audit.key.pub --procedure LDN-GIB-0001 \\
          --out reports/LDN-GIB-0001.html --pdf reports/LDN-GIB-0001.pdf
      telesafe report --ledger m0.sqlite --ledger m1.sqlite --ledger m2.sqlite \\
          --pubkey fleet.pub --procedure LDN-GIB-0001 --proofs proofs/
      telesafe report --archive /var/lib/telesafe-archive --trusted-keys trusted-keys \\
          --procedure LDN-GIB-0001

    exit codes: 0 report written; 1 a ledger failed verification, unknown procedure
    (the procedures in the ledgers are listed) or a history with an unexplained hole;
    2 bad arguments or unreadable input.
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
        action="append",
        default=[],
        metavar="LEDGER",
        help="audit ledger file (SQLite) or an export bundle directory; repeat it for the "
        "ledgers of several instances",
    )
    p.add_argument(
        "--pubkey",
        action="append",
        default=[],
        metavar="KEY.pub",
        help="the ledger's Ed25519 public key (PEM, raw 32 bytes or signed-note vkey): one "
        "per --ledger, in the same order, or one for all",
    )
    p.add_argument(
        "--archive",
        metavar="DIR",
        help="the governance archive's directory (`telesafe audit archive`): every "
        "instance's verified copy, instead of --ledger",
    )
    p.add_argument(
        "--trusted-keys",
        metavar="FILE",
        help="with --archive: the origins' public keys (the archive's trusted-keys file)",
    )
    p.add_argument(
        "--proofs",
        metavar="DIR",
        help="also write the inclusion proof of each safe-stop and its acknowledgement "
        "(telesafe-inclusion-proof/v1, for `telesafe audit verify-proof`) into DIR",
    )
    p.add_argument(
        "--allow-holes",
        action="store_true",
        help="across instances: write the report even if the history has a hole the "
        "ledgers cannot explain (the holes are marked), instead of refusing",
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
    if args.proofs and not Path(args.proofs).is_dir():
        raise UsageError(f"--proofs {args.proofs}: not a directory")
    problem = _check_sources(args)
    if problem:
        raise UsageError(problem)
    try:
        ledgers, source = _load(args)
    except LedgerRefused as exc:
        raise LedgerRefused(f"refusing to report: {exc}") from None
    if len(ledgers) == 1 and not args.archive:
        report = build_report(ledgers[0], args.procedure, run=args.run, rules_dirs=args.rules)
        proofs = _single_proofs(ledgers[0], report) if args.proofs else []
    else:
        report = _fleet(ledgers, args, source)
        proofs = report.proofs
    html = render_html(report)
    if out is not None:
        out.write_text(html, encoding="utf-8")
        print(f"report: {out} ({len(html) // 1024} KiB)")
    if pdf is not None:
        write_pdf(html, pdf)
        print(f"report: {pdf}")
    if args.proofs:
        _write_proofs(Path(args.proofs), report, proofs)
    stops = len(report.stops)
    cp = report.checkpoint
    if report.multi:
        print(
            f"{report.procedure_id}: {report.entry_count} entries from "
            f"{len(report.monitor_ids)} instance(s) ({', '.join(report.monitor_ids)}), "
            f"{stops} safe-stop(s), {report.warnings_raised} warning(s), "
            f"{len(report.handovers)} hand-over(s), {report.duplicates} duplicate(s) shown "
            f"once; {len(ledgers)} ledgers verified"
            + (f"; {len(report.holes)} HOLE(S) in the history" if report.holes else "")
        )
        return EXIT_OK
    print(
        f"{report.procedure_id}: entries {report.first_index}–{report.last_index}, "
        f"{stops} safe-stop(s), {report.warnings_raised} warning(s); ledger verified, "
        f"covered by checkpoint size {cp.size if cp else '?'}"
    )
    return EXIT_OK


def _check_sources(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of --ledger/--pubkey/--archive, if anything."""
    if args.archive:
        if args.ledger or args.pubkey:
            return "give either --ledger (with --pubkey) or --archive, not both"
        if not args.trusted_keys:
            return "--archive needs --trusted-keys (the origins' public keys)"
        return None
    if args.trusted_keys:
        return "--trusted-keys goes with --archive"
    if not args.ledger:
        return "give --ledger LEDGER --pubkey KEY.pub (repeatable), or --archive DIR"
    if not args.pubkey:
        return "--ledger needs --pubkey (one per ledger, or one for all)"
    if len(args.pubkey) not in (1, len(args.ledger)):
        return (
            f"{len(args.ledger)} --ledger but {len(args.pubkey)} --pubkey: give one "
            f"--pubkey per --ledger, in the same order, or one for all"
        )
    return None


def _load(args: argparse.Namespace) -> tuple[list[VerifiedLedger], str]:
    """The verified ledgers to report from, and where they came from."""
    from monitor.audit.verified import load_verified

    if args.archive:
        return _load_archive(Path(args.archive), Path(args.trusted_keys))
    for path in args.ledger:
        require_ledger(Path(path))
    keys = [load_public_key(k) for k in args.pubkey]
    if len(keys) == 1:
        keys *= len(args.ledger)
    out = []
    for path, key in zip(args.ledger, keys, strict=True):
        try:
            out.append(load_verified(path, key))
        except LedgerRefused as exc:
            if len(args.ledger) == 1:
                raise
            raise LedgerRefused(f"{path}: {exc}") from None
    source = str(args.ledger[0]) if len(out) == 1 else f"{len(out)} ledgers"
    return out, source


def _load_archive(directory: Path, trusted_file: Path) -> tuple[list[VerifiedLedger], str]:
    from monitor.audit.archive.copies import COPY_SUFFIX, origin_of_copy
    from monitor.audit.archive.core import LEDGERS_DIR
    from monitor.audit.archive.trusted import TrustedKeys, TrustedKeysError
    from monitor.audit.store import Store
    from monitor.audit.verified import load_verified

    try:
        trusted = TrustedKeys.load(trusted_file)
    except TrustedKeysError as exc:
        raise ReportError(str(exc)) from None
    copies = sorted((directory / LEDGERS_DIR).glob("*" + COPY_SUFFIX))
    if not directory.is_dir():
        raise UsageError(f"--archive {directory}: not a directory")
    out = []
    for path in copies:
        origin = origin_of_copy(path)
        key = trusted.key_for(origin)
        if key is None:
            raise ReportError(
                f"the archive holds a copy of {origin}, which {trusted_file} does not name"
            )
        store = Store(path, readonly=True)
        try:
            empty = store.count() == 0 and not store.checkpoints()
        finally:
            store.close()
        if empty:
            continue
        try:
            out.append(load_verified(path, key))
        except LedgerRefused as exc:
            raise LedgerRefused(f"archived copy of {origin} ({path}): {exc}") from None
    if not out:
        raise ReportError(f"the archive {directory} holds no archived ledger yet")
    return out, f"archive {directory}"


def _fleet(ledgers: list[VerifiedLedger], args: argparse.Namespace, source: str) -> ProcedureReport:
    from monitor.report.fleet import HistoryHole, build_fleet_report

    try:
        return build_fleet_report(
            ledgers,
            args.procedure,
            run=args.run,
            rules_dirs=args.rules,
            source=source,
            allow_holes=args.allow_holes,
        )
    except HistoryHole as exc:
        raise HoleRefusal(f"refusing to report: {exc}") from None


def _single_proofs(vl: VerifiedLedger, report: ProcedureReport) -> list[ProofInfo]:
    from monitor.report.fleet import stop_proofs

    return stop_proofs(vl, report.stops)


def _write_proofs(directory: Path, report: ProcedureReport, proofs: list[ProofInfo]) -> None:
    stop_of = {id(p): n for n, s in enumerate(report.stops, 1) for p in s.proofs}
    written = []
    for i, p in enumerate(proofs):
        if not p.verified:
            print(f"proof of entry {p.index} ({p.instance}) not written: {p.message}")
            continue
        n = stop_of.get(id(p), i + 1)
        f = directory / f"stop-{n}-{p.what}.json"
        f.write_text(p.json_text, encoding="utf-8")
        written.append(f)
    if written:
        print(
            f"proofs: {len(written)} in {directory} (check each with `telesafe audit "
            f"verify-proof FILE --pubkey KEY.pub`)"
        )
