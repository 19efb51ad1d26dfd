"""A secured listener for the local broker: SASL_SSL + SCRAM-SHA-512 + ACLs.

What ``server.start(..., security=SecureBroker)`` runs (see docs/security.md):

* Client listener ``SASL_SSL`` (TLS 1.2+/1.3, server cert signed by a test CA generated
  here with ``cryptography``, SAN ``127.0.0.1`` and ``localhost``; no client certs).
  The only SASL mechanism is SCRAM-SHA-512; the credentials are written into the KRaft
  metadata log when storage is formatted (``kafka-storage format --add-scram
  'SCRAM-SHA-512=[name=admin,password=...]'``), so they exist before the first client
  connects. They can later be changed with ``KafkaAdminClient.alter_user_scram_credentials``.
* Controller listener ``SASL_PLAINTEXT`` with PLAIN on 127.0.0.1 only: the broker half
  of the JVM signs in to its controller half as ``admin`` with a static secret from the
  JAAS config. (A PLAINTEXT controller listener would make ``User:ANONYMOUS`` the
  broker's principal, which would then have to be a super user; anyone on the host
  could then administer the cluster through the controller port.)
* ``StandardAuthorizer``, ``super.users=User:admin``, ``allow.everyone.if.no.acl.found=
  false``: every principal other than ``admin`` can do exactly what the ACLs of
  ``telesafe_grants`` allow and nothing else.

The SCRAM passwords and the controller secret are generated once per data dir into
``<data dir>/secure/credentials.json`` (mode 0600) and reused on every start, because the
SCRAM credentials live in the formatted storage. The TLS material lives in the CA directory
(``<data dir>/secure/ca`` unless one is given): the broker's keystore ``server.p12`` and
its password in ``server.p12.password`` (both 0600).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from monitor.broker import topics as plain
from monitor.broker.runtime import BrokerError
from monitor.broker.topics import DEFAULT_PARTITIONS, TopicReport
from monitor.icd.topics import Topics
from monitor.kafka import AclGrant, Admin, TransportError
from monitor.kafka.settings import KafkaSettings

SCRAM_MECHANISM = "SCRAM-SHA-512"
ADMIN_USER = "admin"
# The principals of ICD §1: the two sites, the monitor, the operator tools.
SERVICE_USERS = ("monitor", "console", "robot", "operator", "archive")
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
DEFAULT_MONITOR_GROUP = "telesafe-monitor"
# A site's consumer groups for reading commands start with <prefix>telesafe-site-<site>.
SITE_GROUP_STEM = "telesafe-site-"

SECURE_SUBDIR = "secure"
CREDENTIALS_FILE = "credentials.json"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
SERVER_KEYSTORE = "server.p12"
CERT_DAYS = 30


# ------------------------------------------------------------------------ test CA


@dataclass(frozen=True)
class TestCA:
    """A throw-away certificate authority and a server certificate it signed.

    Files (PEM unless noted) in ``directory``: ``ca.crt`` (what clients trust,
    ``--ssl-cafile``), ``ca.key``, ``server.crt``, ``server.key`` and ``server.p12``
    (PKCS#12 keystore for the broker, protected by ``keystore_password``).
    """

    __test__ = False  # not a pytest test class, despite the name

    directory: Path
    keystore_password: str

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.directory / SERVER_KEY

    @property
    def keystore(self) -> Path:
        return self.directory / SERVER_KEYSTORE

    @property
    def password_file(self) -> Path:
        return self.directory / "server.p12.password"


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only (created 0600, never widened)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "telesafe test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_test_ca(
    directory: Path | str,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    *,
    days: int = CERT_DAYS,
) -> TestCA:
    """Create a CA and a server certificate for ``hosts`` (IPs and DNS names) in ``directory``.

    ECDSA P-256 keys; the CA certificate is ``CA:TRUE, pathlen 0``, the server one
    ``serverAuth`` only. For tests and local development: the CA key sits next to the
    certificates, unencrypted (0600).
    """
    out = Path(directory).resolve()
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before = now - dt.timedelta(minutes=5)  # tolerate small clock skew
    not_after = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("telesafe test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "telesafe broker"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    unencrypted = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8
    password = secrets.token_hex(16)
    ca = TestCA(out, password)
    ca.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    _write_private(ca.ca_key, ca_key.private_bytes(pem, pkcs8, unencrypted))
    ca.server_cert.write_bytes(server_cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    _write_private(ca.server_key, server_key.private_bytes(pem, pkcs8, unencrypted))
    # PKCS#12 (AES-256 + PBKDF2, which Java 17 reads) for the broker's keystore.
    p12 = pkcs12.serialize_key_and_certificates(
        b"telesafe-broker",
        server_key,
        server_cert,
        [ca_cert],
        serialization.BestAvailableEncryption(password.encode()),
    )
    _write_private(ca.keystore, p12)
    _write_private(ca.password_file, password.encode() + b"\n")
    return ca


def load_test_ca(directory: Path | str) -> TestCA:
    """A CA made earlier by ``make_test_ca`` in ``directory``."""
    out = Path(directory).resolve()
    try:
        password = (out / "server.p12.password").read_text().strip()
    except OSError as exc:
        raise BrokerError(f"no test CA in {out} (make one with make_test_ca): {exc}") from exc
    ca = TestCA(out, password)
    for path in (ca.ca_cert, ca.keystore):
        if not path.is_file():
            raise BrokerError(f"test CA in {out} is incomplete: {path.name} is missing")
    return ca


# ------------------------------------------------------------------- the listener


def _jaas_quote(value: str) -> str:
    if any(c in value for c in '"\\;\n'):
        raise BrokerError("secrets must not contain quotes, backslashes, ';' or newlines")
    return f'"{value}"'


@dataclass(frozen=True)
class SecureBroker:
    """What the secured broker needs: TLS material and the SCRAM users to create.

    ``passwords`` maps user name to password and must contain ``admin`` (the super
    user the broker itself and the admin tools use).
    """

    ca: TestCA
    passwords: Mapping[str, str] = field(repr=False)
    controller_secret: str = field(repr=False)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if ADMIN_USER not in self.passwords:
            raise BrokerError(f"the secured broker needs a {ADMIN_USER!r} user")
        for name, password in self.passwords.items():
            _jaas_quote(password)
            if not name or any(c in name for c in ",=[]\"' ") or any(c in password for c in ",]"):
                raise BrokerError(f"user name or password of {name!r} has characters "
                                  "kafka-storage --add-scram cannot take")  # fmt: skip
        _jaas_quote(self.controller_secret)

    @property
    def users(self) -> list[str]:
        return sorted(self.passwords)

    def property_overrides(self, port: int, controller_port: int) -> dict[str, str]:
        """server.properties keys that replace / extend the PLAINTEXT template's."""
        admin_pw = _jaas_quote(self.passwords[ADMIN_USER])
        ctl_pw = _jaas_quote(self.controller_secret)
        return {
            "listeners": f"SASL_SSL://{self.host}:{port},CONTROLLER://{self.host}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{self.host}:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            # Clients: SCRAM-SHA-512 over TLS.
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f"username={_jaas_quote(ADMIN_USER)} password={admin_pw};"
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.ca.keystore),
            "ssl.keystore.password": self.ca.keystore_password,
            "ssl.key.password": self.ca.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca.ca_cert),
            "ssl.client.auth": "none",
            "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
            "ssl.endpoint.identification.algorithm": "https",
            # Controller: PLAIN with a static user, loopback only.
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f"username={_jaas_quote(ADMIN_USER)} password={ctl_pw} "
                f"user_{ADMIN_USER}={ctl_pw};"
            ),
            # Authorisation: deny by default, admin is the only super user.
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "super.users": f"User:{ADMIN_USER}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM users."""
        args: list[str] = []
        for name in self.users:
            args += [
                "--add-scram",
                f"{SCRAM_MECHANISM}=[name={name},password={self.passwords[name]}]",
            ]
        return args

    def client_settings(self, bootstrap: str, user: str, prefix: str = "") -> KafkaSettings:
        """KafkaSettings for ``user`` (SASL_SSL, SCRAM-SHA-512, trusting the test CA)."""
        if user not in self.passwords:
            raise BrokerError(f"no SCRAM user {user!r} (known: {', '.join(self.users)})")
        return KafkaSettings(
            bootstrap_servers=bootstrap,
            topic_prefix=prefix,
            security_protocol="SASL_SSL",
            ssl_cafile=str(self.ca.ca_cert),
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=user,
            sasl_password=self.passwords[user],
        )

    def client_env(self, bootstrap: str, user: str, prefix: str = "") -> dict[str, str]:
        """The TELESAFE_* environment that makes `telesafe run/simulate/rearm` use ``user``."""
        s = self.client_settings(bootstrap, user, prefix)
        return {
            "TELESAFE_BOOTSTRAP": s.bootstrap_servers,
            "TELESAFE_TOPIC_PREFIX": s.topic_prefix,
            "TELESAFE_SECURITY_PROTOCOL": s.security_protocol,
            "TELESAFE_SSL_CAFILE": str(s.ssl_cafile),
            "TELESAFE_SASL_MECHANISM": str(s.sasl_mechanism),
            "TELESAFE_SASL_USERNAME": str(s.sasl_username),
            "TELESAFE_SASL_PASSWORD": str(s.sasl_password),
        }


def secure_dir(data_dir: Path | str) -> Path:
    return Path(data_dir).resolve() / SECURE_SUBDIR


def prepare(
    data_dir: Path | str,
    *,
    ca_dir: Path | str | None = None,
    users: Iterable[str] = SERVICE_USERS,
) -> SecureBroker:
    """Load, or create on first use, the secured broker's material for ``data_dir``.

    ``<data dir>/secure/credentials.json`` keeps the generated passwords (mode 0600):
    the SCRAM users are created only when storage is first formatted, so their
    passwords must not change between starts. Without ``ca_dir`` a test CA is made in
    ``<data dir>/secure/ca`` (once). Users missing from an existing file are added to
    the file, but an already formatted broker will not know them (create them with
    ``KafkaAdminClient.alter_user_scram_credentials`` as admin).
    """
    sdir = secure_dir(data_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    os.chmod(sdir, 0o700)
    cred_path = sdir / CREDENTIALS_FILE
    stored: dict[str, Any] = {}
    if cred_path.exists():
        try:
            stored = json.loads(cred_path.read_text())
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot read {cred_path}: {exc}") from exc
    passwords: dict[str, str] = dict(stored.get("users", {}))
    changed = not stored
    for name in (ADMIN_USER, *users):
        if name not in passwords:
            passwords[name] = secrets.token_hex(24)
            changed = True
    controller_secret = str(stored.get("controller_secret") or secrets.token_hex(24))
    chosen_ca = (
        Path(ca_dir).resolve() if ca_dir is not None else Path(stored.get("ca_dir") or sdir / "ca")
    )
    if (chosen_ca / "server.p12.password").exists():
        ca = load_test_ca(chosen_ca)
    else:
        ca = make_test_ca(chosen_ca)
    if changed or stored.get("ca_dir") != str(chosen_ca) or "controller_secret" not in stored:
        body = {
            "users": passwords,
            "controller_secret": controller_secret,
            "ca_dir": str(chosen_ca),
        }
        _write_private(cred_path, (json.dumps(body, indent=2) + "\n").encode())
    return SecureBroker(ca=ca, passwords=passwords, controller_secret=controller_secret)


def load(data_dir: Path | str) -> SecureBroker | None:
    """The material ``prepare`` stored for ``data_dir``, or None if it has none."""
    if not (secure_dir(data_dir) / CREDENTIALS_FILE).exists():
        return None
    return prepare(data_dir, users=())


# ------------------------------------------------------------------------ clients


def admin_client(settings: KafkaSettings, timeout_s: float = 10.0) -> Admin:
    """An admin client for `settings` (any security protocol); BrokerError if unreachable."""
    try:
        return plain.admin_client(settings, timeout_s)
    except BrokerError as exc:
        raise BrokerError(
            f"{exc} (as {settings.sasl_username or 'anonymous'}, {settings.security_protocol})"
        ) from None


def answers(settings: KafkaSettings, timeout_s: float = 5.0) -> bool:
    """True if the broker answers a metadata request from this (authenticated) client."""
    try:
        admin = admin_client(settings, timeout_s=timeout_s)
    except BrokerError:
        return False
    try:
        admin.partition_counts([], timeout_s)
        return True
    except Exception:  # any failure means "not answering yet"
        return False
    finally:
        admin.close()


def ensure_topics(
    settings: KafkaSettings,
    prefix: str = "",
    partitions: int = DEFAULT_PARTITIONS,
    *,
    timeout_s: float = 30.0,
) -> TopicReport:
    """Create the missing ICD topics as a super user: the same path and the same layout
    check as the plain broker (`monitor.broker.topics.ensure_topics`)."""
    return plain.ensure_topics(settings, prefix, partitions, timeout_s=timeout_s)


# --------------------------------------------------------------------------- ACLs


Grant = AclGrant  # one row of the ACL table: `principal` may `operation` on a resource


def site_group(prefix: str, site: str) -> str:
    """The group-id prefix a site may use to read commands, e.g. ``telesafe-site-robot``."""
    return f"{prefix}{SITE_GROUP_STEM}{site}"


# Group-id prefixes of each principal's reader consumers (a PREFIXED group ACL each).
READER_GROUPS = (
    ("operator", "telesafe-operator-"),
    ("archive", "telesafe-archive"),
    ("monitor", "telesafe-latch-restore"),
    ("monitor", "telesafe-reconcile"),
)


def telesafe_grants(prefix: str = "", monitor_group: str = DEFAULT_MONITOR_GROUP) -> list[Grant]:
    """Least-privilege ALLOW grants for the ICD principals (everything else is denied).

    * ``console``: WRITE its telemetry topic (ICD §2: a site writes only its own
      telemetry topic); READ the commands topic (the console displays them, ICD §2).
    * ``robot``: WRITE its telemetry topic; READ the commands topic.
    * both sites: READ on the groups whose id starts with ``<prefix>telesafe-site-<site>``
      (a PREFIXED ACL). A site assigns the commands partitions itself and commits
      nothing, but librdkafka (confluent-kafka) insists on a ``group.id`` and looks up its
      coordinator, which needs this grant; kafka-python with ``group_id=None`` does not.
    * ``monitor``: READ both telemetry topics and the operator topic, in its consumer
      group; WRITE commands, audit, deadletter and state; READ commands (start-up
      reconciliation reads back its own recent commands) and state (latch restore).
    * ``operator``: WRITE the operator topic; READ the state topic (`telesafe rearm` and
      `latch close` look up the latch) and the audit topic (they wait for the monitor's
      decision there), in reader groups named ``telesafe-operator-*``.
    * ``archive``: READ the audit topic (`telesafe audit archive`), in reader groups
      named ``telesafe-archive*``.

    Each WRITE/READ comes with DESCRIBE (metadata, offsets). Idempotent producers need no
    extra grant: WRITE on a topic implies IDEMPOTENT_WRITE since Kafka 2.8.
    """
    t = Topics(prefix)
    topic, group = "TOPIC", "GROUP"
    read, write, describe = "READ", "WRITE", "DESCRIBE"
    plan: list[tuple[str, str, str]] = [
        ("console", write, t.telemetry_console),
        ("console", read, t.commands),
        ("robot", write, t.telemetry_robot),
        ("robot", read, t.commands),
        ("operator", write, t.operator),
        ("operator", read, t.state),
        ("operator", read, t.audit),
        ("archive", read, t.audit),
        *(("monitor", read, name) for name in (t.telemetry_console, t.telemetry_robot, t.operator)),
        *(("monitor", write, name) for name in (t.commands, t.audit, t.deadletter, t.state)),
        ("monitor", read, t.commands),
        ("monitor", read, t.state),
    ]
    grants: list[Grant] = []
    described: set[tuple[str, str]] = set()
    for user, op, name in plan:
        grants.append(Grant(f"User:{user}", op, topic, name))
        if (user, name) not in described:
            described.add((user, name))
            grants.append(Grant(f"User:{user}", describe, topic, name))
    grants.append(Grant("User:monitor", read, group, monitor_group))
    # The monitor sets its group's session timeout (KIP-848 group config) at start-up.
    grants.append(Grant("User:monitor", "ALTER_CONFIGS", group, monitor_group))
    grants.append(Grant("User:monitor", "DESCRIBE_CONFIGS", group, monitor_group))
    # librdkafka (confluent-kafka) needs a group.id even for assign(), and then asks for
    # the group's coordinator: without a group ACL the site gets GROUP_AUTHORIZATION_FAILED
    # (fetching still works). Each site may use the groups named <prefix>telesafe-site-<site>*
    # for its own command readers; never the monitor's group, never the other site's.
    for site in ("console", "robot"):
        grants.append(Grant(f"User:{site}", read, group, site_group(prefix, site), prefixed=True))
    # The same for the tools' and the monitor's own assign()-only readers (their group ids
    # are `<client id>-reader`, monitor/kafka/__init__.py).
    for user, stem in READER_GROUPS:
        grants.append(Grant(f"User:{user}", read, group, stem, prefixed=True))
    return grants


def create_acls(settings: KafkaSettings, grants: Sequence[Grant], timeout_s: float = 10.0) -> int:
    """Create the ALLOW ACLs (idempotent); returns how many were submitted."""
    admin = admin_client(settings, timeout_s=timeout_s)
    try:
        admin.create_acls(grants, timeout_s)
    except TransportError as exc:
        raise BrokerError(str(exc)) from None
    finally:
        admin.close()
    return len(grants)
