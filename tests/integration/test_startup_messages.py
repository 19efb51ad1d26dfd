"""`telesafe run` with a mistyped --topic-prefix: one telesafe line naming the missing
topics and the command that creates them, and that command (as printed) works."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

from monitor.broker.topics import admin_client
from monitor.icd.topics import Topics

REPO = Path(__file__).resolve().parents[2]


def _telesafe(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELESAFE_")}
    return subprocess.run(
        [sys.executable, "-m", "monitor", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
    )


def test_a_prefix_typo_is_one_line_whose_fix_works(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"typo{uuid.uuid4().hex[:6]}-"
    run = ["run", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "--operators", "op",
           "--http-port", "0", "--group-id", f"{prefix}g"]  # fmt: skip
    try:
        res = _telesafe(tmp_path, *run)
        assert res.returncode == 2
        [line] = res.stderr.splitlines()
        assert line.startswith(f"telesafe run: ICD topics missing: {prefix}telesafe."), line
        # Besides the allow-list warning, the monitor's log says nothing (no library lines).
        assert [ln for ln in res.stdout.splitlines() if "allow-list" not in ln] == []
        fix = line.rsplit("create them with `", 1)[1].rstrip("`")
        argv = shlex.split(fix)
        assert argv[:3] == ["telesafe", "broker", "topics"], fix
        made = _telesafe(tmp_path, *argv[1:], "--bootstrap", kafka_bootstrap)
        assert made.returncode == 0, made.stderr
        assert f"{prefix}telesafe.state" in made.stdout
    finally:
        with contextlib.suppress(Exception):
            admin = admin_client(kafka_bootstrap)
            try:
                admin.delete_topics(Topics(prefix).all(), 10)
            finally:
                admin.close()
