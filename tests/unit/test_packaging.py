"""An installed telesafe (a wheel, not a checkout) carries everything `run` needs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_policy_packs_and_templates(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("telesafe-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "monitor/rules/default.yaml",
        "monitor/rules/demo-forbidden-zone.yaml",
        "monitor/rules/schema.json",
        "monitor/broker/pom-template.xml",
        "monitor/broker/server-template.properties",
        "monitor/report/report.html",
    ):
        assert needed in names, f"{needed} missing from {wheel.name}"
    # The packaged packs are the checkout's packs, byte for byte.
    z = zipfile.ZipFile(wheel)
    assert z.read("monitor/rules/default.yaml") == (ROOT / "rules" / "default.yaml").read_bytes()
