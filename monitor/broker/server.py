"""Run a real single-node Apache Kafka 4.x broker locally, from Maven Central jars.

Choices:

* KRaft combined mode (``process.roles=broker,controller``, ``node.id=1``): Kafka 4
  has no ZooKeeper, and one JVM acting as both broker and its own metadata
  controller is the smallest real cluster. Storage is formatted once with
  ``kafka.tools.StorageTool format --standalone`` (dynamic quorum, KIP-853).
* Ports: PLAINTEXT on 127.0.0.1:9092 (clients), CONTROLLER on 127.0.0.1:9093 (the
  KRaft quorum). Bound to 127.0.0.1 only: an unauthenticated broker must not be
  reachable from the network.
* Heap ``-Xms256m -Xmx512m``: ample for development/test traffic and leaves room for
  the monitor, the simulators and the tests on a laptop or CI runner.
* ``auto.create.topics.enable=false``: a typo in a topic name then fails loudly
  (UnknownTopicOrPartition) instead of silently creating a topic nobody reads. The
  consequence is that telesafe creates the ICD topics itself (``topics.ensure_topics``,
  called by ``start`` and by ``telesafe broker topics``).
* Data dir: ``$TELESAFE_KAFKA_DIR`` or ``./.telesafe/kafka``. It holds the generated
  ``server.properties``, ``log4j2.properties``, ``broker.log`` (JVM stdout/stderr),
  ``kafka.pid`` and the Kafka log segments under ``data/``. It survives restarts:
  storage is formatted only while ``data/meta.properties`` is absent. Delete the
  folder (broker stopped) to reset.
* Starting is idempotent: if a broker already answers on the port, ``start`` only
  ensures the topics.
* ``security=SecureBroker`` (``monitor.broker.secure``) replaces the PLAINTEXT client
  listener by SASL_SSL (SCRAM-SHA-512, TLS from a test CA), signs the controller link
  in with SASL PLAIN and turns on the StandardAuthorizer (deny unless an ACL allows).
  Probes and topic creation then sign in as the ``admin`` super user. See
  docs/security.md.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

from monitor.broker import runtime
from monitor.broker import secure as secure_mod
from monitor.broker.runtime import BrokerError, Progress
from monitor.broker.secure import SecureBroker
from monitor.broker.topics import DEFAULT_PARTITIONS, TopicReport, admin_client, ensure_topics

HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
NODE_ID = 1
HEAP_OPTS = ("-Xms256m", "-Xmx512m")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
LOG_ROTATE_BYTES = 20 * 1024 * 1024

PROPERTIES = "server.properties"
LOG4J = "log4j2.properties"
BROKER_LOG = "broker.log"
PID_FILE = "kafka.pid"
# Written when storage is formatted with SCRAM users: this data dir is a secured broker
# and must never be started with the unauthenticated PLAINTEXT listener (and a data dir
# formatted without users cannot become a secured one: it would have no credentials).
SECURED_MARKER = "secured-storage"
DATA_SUBDIR = "data"
START_MARKER = "==== telesafe: starting Kafka"


def _quiet(_msg: str) -> None:
    return None


def default_data_dir() -> Path:
    """``$TELESAFE_KAFKA_DIR`` or ``.telesafe/kafka`` under the current directory."""
    env = os.environ.get("TELESAFE_KAFKA_DIR")
    return Path(env).expanduser() if env else Path.cwd() / ".telesafe" / "kafka"


def _resolve_dir(data_dir: Path | str | None) -> Path:
    # Absolute, because the JVM runs with the data dir as its working directory.
    return (Path(data_dir) if data_dir is not None else default_data_dir()).resolve()


def bootstrap_address(port: int = DEFAULT_PORT) -> str:
    return f"{HOST}:{port}"


@dataclass(frozen=True)
class BrokerConfig:
    data_dir: Path
    port: int = DEFAULT_PORT
    controller_port: int = DEFAULT_CONTROLLER_PORT
    partitions: int = DEFAULT_PARTITIONS
    host: str = HOST
    node_id: int = NODE_ID
    security: SecureBroker | None = None

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / DATA_SUBDIR

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def render_properties(self) -> str:
        if self.port == self.controller_port:
            raise BrokerError("port and controller port must differ")
        template = resources.files("monitor.broker").joinpath("server-template.properties")
        text = Template(template.read_text("utf-8")).substitute(
            node_id=self.node_id,
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            # Properties files treat backslashes as escapes; paths here are POSIX.
            log_dirs=str(self.log_dirs.resolve()),
            partitions=self.partitions,
        )
        if self.security is None:
            return text
        return override_properties(
            text, self.security.property_overrides(self.port, self.controller_port)
        )

    def answers(self, timeout_s: float = 5.0) -> bool:
        """A metadata request succeeds (as ``admin`` over SASL_SSL when secured)."""
        if self.security is None:
            return broker_answers(self.bootstrap, timeout_s=timeout_s)
        if not port_open(self.port, self.host):
            return False
        settings = self.security.client_settings(self.bootstrap, secure_mod.ADMIN_USER)
        return secure_mod.answers(settings, timeout_s=timeout_s)


def override_properties(text: str, overrides: dict[str, str]) -> str:
    """Replace ``key=value`` lines of a properties text; append keys it lacks."""
    out: list[str] = []
    done: set[str] = set()
    for line in text.splitlines():
        key = (
            line.split("=", 1)[0].strip()
            if "=" in line and not line.lstrip().startswith("#")
            else ""
        )
        if key in overrides:
            out.append(f"{key}={overrides[key]}")
            done.add(key)
        else:
            out.append(line)
    extra = [f"{k}={v}" for k, v in overrides.items() if k not in done]
    if extra:
        out += ["", "# Secured listener (monitor/broker/secure.py)", *extra]
    return "\n".join(out) + "\n"


@dataclass
class StartResult:
    bootstrap: str
    already_running: bool
    pid: int | None
    elapsed_s: float
    formatted: bool = False
    topics: TopicReport | None = None


@dataclass
class BrokerStatus:
    data_dir: Path
    bootstrap: str
    pid: int | None
    running: bool  # our pid file points at a live Kafka JVM
    answers: bool  # a Kafka broker answers on the port (ours or not)
    topics: list[str] = field(default_factory=list)
    log_file: Path | None = None


def random_cluster_id() -> str:
    """Same format as Kafka's Uuid.randomUuid(): 22-char URL-safe base64, no padding."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):  # Kafka rejects ids that look like CLI flags
            return cid


# --------------------------------------------------------------------------- probes


def port_open(port: int, host: str = HOST, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True if a Kafka broker answers a metadata request (not merely an open port)."""
    host, _, port = bootstrap.rpartition(":")
    if not port_open(int(port), host or HOST):
        return False
    try:
        admin = admin_client(bootstrap, timeout_s=timeout_s)
    except BrokerError:
        return False
    try:
        admin.partition_counts([], timeout_s)
        return True
    except Exception:  # any failure means "not answering yet"
        return False
    finally:
        admin.close()


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _is_kafka_process(pid: int) -> bool:
    """Alive, not a zombie, and really our Kafka JVM (pid files outlive reboots)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        # No /proc (macOS): fall back to a signal-0 probe.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and b"kafka.Kafka" in cmdline


def _reap(pid: int) -> None:
    # When the broker is our own child (e.g. the pytest fixture), collect the zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(data_dir: Path, lines: int = 30) -> str:
    """Last lines of broker.log, from the latest start only (the log is appended to)."""
    try:
        text = (data_dir / BROKER_LOG).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no broker.log)"
    current = text.rsplit(START_MARKER, 1)[-1].split("\n", 1)[-1]
    return "\n".join(current.rstrip().splitlines()[-lines:]) or "(broker.log is empty)"


# ------------------------------------------------------------------------ lifecycle


def _write_config(cfg: BrokerConfig) -> None:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    props = cfg.data_dir / PROPERTIES
    if cfg.security is not None:  # holds secrets: owner-only, before the write
        props.touch(mode=0o600, exist_ok=True)
        props.chmod(0o600)
    props.write_text(cfg.render_properties(), encoding="utf-8")
    log4j = resources.files("monitor.broker").joinpath(LOG4J).read_text("utf-8")
    (cfg.data_dir / LOG4J).write_text(log4j, encoding="utf-8")


def _java_cmd(
    java: str, lib: Path, data_dir: Path, main: str, *args: str, heap: tuple[str, ...] = HEAP_OPTS
) -> list[str]:
    return [
        java,
        *heap,
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={data_dir / LOG4J}",
        f"-Dkafka.logs.dir={data_dir}",
        "-cp",
        runtime.classpath(lib),
        main,
        *args,
    ]


def _check_secured(cfg: BrokerConfig) -> None:
    """Refuse to mix a secured data dir with a PLAINTEXT start, and vice versa."""
    if not (cfg.log_dirs / "meta.properties").exists():
        return
    secured = (cfg.data_dir / SECURED_MARKER).exists()
    if cfg.security is None and secured:
        raise BrokerError(
            f"{cfg.data_dir} holds a secured (SASL_SSL) broker; refusing to start it "
            "with an unauthenticated PLAINTEXT listener (pass the security options)"
        )
    if cfg.security is not None and not secured:
        raise BrokerError(
            f"{cfg.data_dir} was formatted without SCRAM users, so a secured broker "
            "started from it would accept nobody; use another data dir"
        )


def _format_storage(cfg: BrokerConfig, java: str, lib: Path) -> bool:
    """Format KRaft storage once; False if it was already formatted."""
    _check_secured(cfg)
    if (cfg.log_dirs / "meta.properties").exists():
        return False
    cmd = _java_cmd(
        java, lib, cfg.data_dir, "kafka.tools.StorageTool", "format",
        "--standalone", "--ignore-formatted",
        "--cluster-id", random_cluster_id(),
        "--config", str(cfg.data_dir / PROPERTIES),
        *(cfg.security.format_args() if cfg.security is not None else []),
        heap=("-Xmx256m",),  # short-lived tool JVM
    )  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        if cfg.security is not None:  # never echo SCRAM passwords
            for pw in cfg.security.passwords.values():
                tail = tail.replace(pw, "***")
        raise BrokerError(f"formatting Kafka storage in {cfg.log_dirs} failed:\n{tail}")
    if cfg.security is not None:
        users = "\n".join(cfg.security.users) + "\n"
        (cfg.data_dir / SECURED_MARKER).write_text(users, encoding="utf-8")
    return True


def _rotate_log(data_dir: Path) -> None:
    log = data_dir / BROKER_LOG
    with contextlib.suppress(OSError):
        if log.stat().st_size > LOG_ROTATE_BYTES:
            log.replace(data_dir / (BROKER_LOG + ".1"))


def _wait_answering(
    cfg: BrokerConfig, proc: subprocess.Popen[bytes] | None, pid: int, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(
                f"the Kafka JVM exited with code {proc.returncode} during startup; "
                f"last lines of {cfg.data_dir / BROKER_LOG}:\n{log_tail(cfg.data_dir)}"
            )
        if proc is None and not _is_kafka_process(pid):
            raise BrokerError(
                f"the Kafka JVM (pid {pid}) died during startup; last lines of "
                f"{cfg.data_dir / BROKER_LOG}:\n{log_tail(cfg.data_dir)}"
            )
        if port_open(cfg.port) and cfg.answers(timeout_s=3.0):
            return
        time.sleep(0.25)
    raise BrokerError(
        f"the broker (pid {pid}) did not answer on {cfg.bootstrap} within {timeout_s:.0f} s; "
        f"it is left running for inspection (`telesafe broker stop` to end it). "
        f"Last lines of {cfg.data_dir / BROKER_LOG}:\n{log_tail(cfg.data_dir)}"
    )


def start(
    data_dir: Path | str | None = None,
    port: int = DEFAULT_PORT,
    controller_port: int = DEFAULT_CONTROLLER_PORT,
    partitions: int = DEFAULT_PARTITIONS,
    *,
    prefix: str = "",
    create_topics: bool = True,
    timeout_s: float = START_TIMEOUT_S,
    version: str = runtime.KAFKA_VERSION,
    progress: Progress = _quiet,
    security: SecureBroker | None = None,
) -> StartResult:
    """Start the local broker (or reuse one already answering) and ensure the ICD topics.

    Returns once a metadata request succeeds and the topics exist. Raises BrokerError
    (PrerequisiteError for missing java/mvn) with a human-readable message. With
    ``security`` the client listener is SASL_SSL (``monitor.broker.secure``); the SCRAM
    users are created when the storage is formatted, i.e. on the first start of a data
    dir only.
    """
    t0 = time.monotonic()
    cfg = BrokerConfig(
        data_dir=_resolve_dir(data_dir),
        port=port,
        controller_port=controller_port,
        partitions=partitions,
        security=security,
    )
    cfg.data_dir.mkdir(parents=True, exist_ok=True)

    def finish(already: bool, pid: int | None, formatted: bool = False) -> StartResult:
        report: TopicReport | None = None
        if create_topics and cfg.security is not None:
            admin = cfg.security.client_settings(cfg.bootstrap, secure_mod.ADMIN_USER)
            report = secure_mod.ensure_topics(admin, prefix, partitions)
        elif create_topics:
            report = ensure_topics(cfg.bootstrap, prefix, partitions)
        return StartResult(cfg.bootstrap, already, pid, time.monotonic() - t0, formatted, report)

    # Serialise concurrent starts (CLI and pytest fixture): the loser sees a running broker.
    with runtime.file_lock(cfg.data_dir / ".start.lock"):
        _check_secured(cfg)
        if cfg.answers(timeout_s=3.0):
            progress(f"a broker already answers on {cfg.bootstrap}; ensuring topics only")
            return finish(True, _read_pid(cfg.data_dir))

        old_pid = _read_pid(cfg.data_dir)
        if old_pid is not None and _is_kafka_process(old_pid):
            # Ours, still booting (or wedged): wait for it rather than start a second JVM.
            progress(f"broker pid {old_pid} is running but not answering yet; waiting…")
            _wait_answering(cfg, None, old_pid, timeout_s)
            return finish(True, old_pid)
        if port_open(cfg.port):
            raise BrokerError(
                f"{cfg.bootstrap} is in use by something that does not answer as Kafka"
            )
        if port_open(cfg.controller_port):
            raise BrokerError(f"controller port {HOST}:{cfg.controller_port} is already in use")

        java, _major = runtime.check_java()
        lib = runtime.resolve_jars(version, progress)
        _write_config(cfg)
        formatted = _format_storage(cfg, java, lib)
        if formatted:
            progress(f"formatted new KRaft storage in {cfg.log_dirs}")

        _rotate_log(cfg.data_dir)
        cmd = _java_cmd(java, lib, cfg.data_dir, "kafka.Kafka", str(cfg.data_dir / PROPERTIES))
        with (cfg.data_dir / BROKER_LOG).open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"{START_MARKER} {version} at {stamp} ====\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cfg.data_dir,
                start_new_session=True,  # survives the CLI's terminal / Ctrl-C
            )
        (cfg.data_dir / PID_FILE).write_text(f"{proc.pid}\n")
        progress(f"started Kafka {version} (pid {proc.pid}); waiting for {cfg.bootstrap}…")
        _wait_answering(cfg, proc, proc.pid, timeout_s)
        progress(f"broker answering on {cfg.bootstrap} after {time.monotonic() - t0:.1f} s")
        return finish(False, proc.pid, formatted)


def stop(data_dir: Path | str | None = None, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM the broker started from ``data_dir``; SIGKILL after ``timeout_s``.

    Returns the pid that was stopped, or None if none was running. Raises BrokerError
    if it could not be stopped.
    """
    ddir = _resolve_dir(data_dir)
    pid = _read_pid(ddir)
    if pid is None or not _is_kafka_process(pid):
        (ddir / PID_FILE).unlink(missing_ok=True)  # stale
        return None
    os.kill(pid, signal.SIGTERM)  # Kafka does a controlled shutdown on SIGTERM
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not _is_kafka_process(pid):
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        _reap(pid)
        if _is_kafka_process(pid):
            raise BrokerError(f"broker pid {pid} survived SIGKILL")
    (ddir / PID_FILE).unlink(missing_ok=True)
    return pid


def status(
    data_dir: Path | str | None = None,
    port: int = DEFAULT_PORT,
    *,
    security: SecureBroker | None = None,
) -> BrokerStatus:
    """Pid, liveness and topics; with ``security`` the probe signs in as ``admin``."""
    ddir = _resolve_dir(data_dir)
    bootstrap = bootstrap_address(port)
    pid = _read_pid(ddir)
    running = pid is not None and _is_kafka_process(pid)
    topics: list[str] = []
    answers = False
    if port_open(port):
        try:
            if security is not None:
                admin_settings = security.client_settings(bootstrap, secure_mod.ADMIN_USER)
                admin = secure_mod.admin_client(admin_settings, timeout_s=3.0)
            else:
                admin = admin_client(bootstrap, timeout_s=3.0)
            try:
                topics = admin.list_topics(3.0)
                answers = True
            finally:
                admin.close()
        except Exception:
            answers = False
    log = ddir / BROKER_LOG
    return BrokerStatus(
        data_dir=ddir,
        bootstrap=bootstrap,
        pid=pid if running else None,
        running=running,
        answers=answers,
        topics=topics,
        log_file=log if log.exists() else None,
    )


def reset(data_dir: Path | str | None = None) -> Path:
    """Delete the data dir (all topics and records). Refuses while the broker runs."""
    ddir = _resolve_dir(data_dir)
    pid = _read_pid(ddir)
    if pid is not None and _is_kafka_process(pid):
        raise BrokerError(f"broker pid {pid} is running from {ddir}; stop it first")
    shutil.rmtree(ddir, ignore_errors=True)
    return ddir
