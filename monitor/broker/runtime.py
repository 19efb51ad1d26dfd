"""Locate Java and Maven, and resolve the Apache Kafka broker jars from Maven Central.

The jars land in ``<cache>/kafka/<version>/lib`` where ``<cache>`` is ``$TELESAFE_CACHE``
or ``~/.cache/telesafe``. A marker file is written only after Maven succeeded, so an
interrupted download is redone and a completed one is never repeated (the second
``start`` does not run Maven at all).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from string import Template

from monitor.errors import KafkaLayerError

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# Kafka 4.1.1 itself depends on log4j 2.24.3; use the same for the binding so the
# classpath holds one log4j version.
LOG4J_VERSION = "2.24.3"
# log4j-slf4j2-impl 2.24.3 is built against SLF4J 2.0.16.
SLF4J_VERSION = "2.0.16"
MIN_JAVA = 17
MARKER = ".telesafe-complete"

Progress = Callable[[str], None]


class BrokerError(KafkaLayerError):
    """An expected failure (missing tool, broker not answering...): shown without traceback."""


class PrerequisiteError(BrokerError):
    """Java or Maven is missing or too old."""


def _quiet(_msg: str) -> None:
    return None


def cache_root() -> Path:
    """``$TELESAFE_CACHE`` or ``~/.cache/telesafe``."""
    env = os.environ.get("TELESAFE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "telesafe"


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    """Folder holding the generated pom and ``lib/`` for one Kafka version."""
    return cache_root() / "kafka" / version


def lib_dir(version: str = KAFKA_VERSION) -> Path:
    return kafka_home(version) / "lib"


def is_resolved(version: str = KAFKA_VERSION) -> bool:
    lib = lib_dir(version)
    return (kafka_home(version) / MARKER).is_file() and any(lib.glob("kafka_*.jar"))


def classpath(lib: Path) -> str:
    # The JVM expands "dir/*" to every jar in dir; avoids a huge command line.
    return str(lib / "*")


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise PrerequisiteError(
            f"java not found: the Kafka broker needs Java {MIN_JAVA}+ "
            "(e.g. `apt-get install openjdk-17-jre-headless`, or set JAVA_HOME)"
        )
    return found


def parse_java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output ("1.8.0_392" -> 8, "17.0.15" -> 17)."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):
        return int(m.group(2))
    return major


def check_java() -> tuple[str, int]:
    """Return (java executable, major version); raise PrerequisiteError if unusable."""
    java = java_executable()
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PrerequisiteError(f"cannot run `{java} -version`: {exc}") from exc
    # java -version prints to stderr.
    major = parse_java_major(out.stderr + out.stdout)
    if major is None:
        raise PrerequisiteError(f"cannot read the Java version from `{java} -version`")
    if major < MIN_JAVA:
        raise PrerequisiteError(
            f"{java} is Java {major}; Kafka 4 needs Java {MIN_JAVA}+ (set JAVA_HOME)"
        )
    return java, major


def mvn_executable() -> str:
    found = shutil.which("mvn")
    if not found:
        raise PrerequisiteError(
            "mvn not found: Maven is needed once to fetch the Kafka jars from Maven Central "
            "(e.g. `apt-get install maven`)"
        )
    return found


def render_pom(version: str = KAFKA_VERSION) -> str:
    template = resources.files("monitor.broker").joinpath("pom-template.xml").read_text("utf-8")
    return Template(template).substitute(
        kafka_version=version,
        scala_version=SCALA_VERSION,
        log4j_version=LOG4J_VERSION,
        slf4j_version=SLF4J_VERSION,
    )


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so two processes (CLI + pytest) don't race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def resolve_jars(version: str = KAFKA_VERSION, progress: Progress = _quiet) -> Path:
    """Return the folder of broker jars, downloading them with Maven on first use."""
    if is_resolved(version):
        return lib_dir(version)
    home = kafka_home(version)
    with file_lock(home / ".lock"):
        if is_resolved(version):  # another process finished while we waited
            return lib_dir(version)
        mvn = mvn_executable()
        progress(
            f"resolving Kafka {version} jars from Maven Central into {home} "
            "(first run only, up to ~1 min)…"
        )
        (home / "pom.xml").write_text(render_pom(version), encoding="utf-8")
        staging = home / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn, "-q", "-B", "-f", str(home / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError("Maven did not finish within 15 min") from exc
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
            raise BrokerError(
                f"Maven could not resolve org.apache.kafka:kafka_{SCALA_VERSION}:{version} "
                f"(exit {proc.returncode}):\n{tail}"
            )
        jars = sorted(p.name for p in staging.glob("*.jar"))
        if not any(j.startswith("kafka_") for j in jars):
            raise BrokerError(f"Maven finished but no kafka_*.jar appeared in {staging}")
        lib = lib_dir(version)
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        (home / MARKER).write_text("\n".join(jars) + "\n", encoding="utf-8")
        progress(f"resolved {len(jars)} jars into {lib}")
        return lib
