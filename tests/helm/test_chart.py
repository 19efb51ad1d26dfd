"""Offline checks of the Helm chart helm/telesafe.

Needs the `helm` v3 CLI (scripts/install-helm.sh builds it into ~/go/bin). Without it the
chart tests are skipped locally and FAIL in CI (CI set). The file-sync tests need no helm.
Rendered core manifests are validated against the Kubernetes JSON schemas shipped in the
PyPI package kubernetes-validate; the CRD objects (ServiceMonitor, PrometheusRule) are
checked structurally here.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "telesafe"
RULES = ROOT / "alerts" / "telesafe-rules.yml"
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
KUBE_VERSION = "1.30.0"
CORE_KINDS = {
    "StatefulSet",
    "Deployment",
    "PersistentVolumeClaim",
    "Service",
    "ServiceAccount",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ConfigMap",
    "Secret",
}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

# The values an install must provide (see helm/README.md).
BOOTSTRAP = "kafka-0.kafka:9092,kafka-1.kafka:9092"
REQUIRED = {
    "operators": "{dr-smith,dr-jones}",
    "kafka.bootstrapServers": BOOTSTRAP.replace(",", "\\,"),  # --set splits on bare commas
    "signingKey.existingSecret": "telesafe-signing-key",
}
WITH_CRDS = ["--api-versions", "monitoring.coreos.com/v1"]

# Every optional feature on: SASL_SSL with mutual TLS, inline policy packs, extras.
FULL_VALUES: dict[str, Any] = {
    "replicaCount": 4,
    "image": {"repository": "registry.example/telesafe", "tag": "0.1.0"},
    "kafka": {
        "topicPrefix": "prod.",
        "securityProtocol": "SASL_SSL",
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "username": "telesafe",
            "existingSecret": "kafka-telesafe-user",
        },
        "tls": {
            "existingSecret": "kafka-telesafe-tls",
            "caKey": "ca.crt",
            "certKey": "tls.crt",
            "keyKey": "tls.key",
        },
    },
    "policyPacks": {"default.yaml": (ROOT / "rules" / "default.yaml").read_text()},
    "persistence": {"storageClassName": "fast-ssd", "size": "5Gi"},
    "serviceMonitor": {"labels": {"release": "kps"}},
    "prometheusRule": {"labels": {"release": "kps"}},
    "dashboards": {"annotations": {"grafana_folder": "Surgery Safety"}},
    "podAntiAffinityPreset": "hard",
    "extraEnv": [{"name": "TELESAFE_TRUST_KEYS", "value": "robot:r1=/etc/keys/robot.pub"}],
    "extraVolumes": [{"name": "keys", "secret": {"secretName": "telesafe-trust-keys"}}],
    "extraVolumeMounts": [{"name": "keys", "mountPath": "/etc/keys", "readOnly": True}],
}


# --- helm ------------------------------------------------------------------------------


def _find_helm() -> str | None:
    for candidate in (shutil.which("helm"), str(Path.home() / "go" / "bin" / "helm")):
        if candidate and os.access(candidate, os.X_OK):
            out = subprocess.run(
                [candidate, "version", "--short"], capture_output=True, text=True, check=False
            )
            if out.returncode == 0 and out.stdout.startswith("v3."):
                return candidate
    return None


@pytest.fixture(scope="session")
def helm() -> str:
    path = _find_helm()
    if path is None:
        msg = (
            "helm v3 not found on PATH or in ~/go/bin: run scripts/install-helm.sh "
            "(builds it from the Go module proxy)"
        )
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


def _set_args(sets: dict[str, str]) -> list[str]:
    out: list[str] = []
    for key, value in sets.items():
        out += ["--set", f"{key}={value}"]
    return out


def run_helm(
    helm: str,
    *args: str,
    sets: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    tmp_path: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    cmd = [helm, *args]
    if values is not None:
        assert tmp_path is not None
        f = tmp_path / "values.yaml"
        f.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(f)]
    cmd += _set_args(sets if sets is not None else REQUIRED)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)


def render(
    helm: str,
    *extra: str,
    sets: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    tmp_path: Path | None = None,
) -> list[dict[str, Any]]:
    res = run_helm(
        helm,
        "template",
        "rel",
        str(CHART),
        "--namespace",
        "surgery",
        "--kube-version",
        KUBE_VERSION,
        *WITH_CRDS,
        *extra,
        sets=sets,
        values=values,
        tmp_path=tmp_path,
    )
    assert res.returncode == 0, f"helm template failed:\n{res.stderr}"
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def render_fails(helm: str, *extra: str, sets: dict[str, str] | None = None) -> str:
    res = run_helm(
        helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION, *extra, sets=sets
    )
    assert res.returncode != 0, "helm template should have failed but rendered:\n" + res.stdout
    return res.stderr


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def default_docs(helm: str) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def full_docs(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(helm, values=FULL_VALUES, tmp_path=tmp_path_factory.mktemp("full"))


@pytest.fixture(scope="module")
def dev_docs(helm: str) -> list[dict[str, Any]]:
    """Development settings: chart-made SASL Secret, generated key, no persistence."""
    sets = {
        "operators": "{dr-smith}",
        "kafka.bootstrapServers": "kafka:9092",
        "kafka.securityProtocol": "SASL_PLAINTEXT",
        "kafka.sasl.mechanism": "PLAIN",
        "kafka.sasl.username": "telesafe",
        "kafka.sasl.password": "dev-only",
        "signingKey.generateOnVolume": "true",
        "persistence.enabled": "false",
        "replicaCount": "1",
    }
    return render(helm, sets=sets)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    sts = one(docs, "StatefulSet")
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return c


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


# --- chart files in sync with the tested sources (no helm needed) ------------------------


def test_rules_copy_is_byte_identical() -> None:
    copy = CHART / "files" / "telesafe-rules.yml"
    assert copy.read_bytes() == RULES.read_bytes(), (
        "helm/telesafe/files/telesafe-rules.yml differs from alerts/telesafe-rules.yml: "
        "cp alerts/telesafe-rules.yml helm/telesafe/files/"
    )


@pytest.mark.parametrize("source", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_copy_is_byte_identical(source: Path) -> None:
    copy = CHART / "files" / "dashboards" / source.name
    assert copy.exists(), f"missing {copy}: cp dashboards/*.json helm/telesafe/files/dashboards/"
    assert filecmp.cmp(source, copy, shallow=False), (
        f"{copy} differs from dashboards/{source.name}: "
        "cp dashboards/*.json helm/telesafe/files/dashboards/"
    )


def test_chart_has_no_stale_dashboards() -> None:
    in_chart = {p.name for p in (CHART / "files" / "dashboards").glob("*.json")}
    assert in_chart == {p.name for p in DASHBOARDS}


# --- lint, required values, schema -----------------------------------------------------


def test_helm_lint(helm: str) -> None:
    res = run_helm(
        helm,
        "lint",
        "--strict",
        str(CHART),
        *_set_args({"serviceMonitor.requireCRD": "false", "prometheusRule.requireCRD": "false"}),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 chart(s) failed" in res.stdout


def test_helm_lint_full_values(helm: str, tmp_path: Path) -> None:
    values = FULL_VALUES | {
        "serviceMonitor": {"requireCRD": False},
        "prometheusRule": {"requireCRD": False},
    }
    res = run_helm(helm, "lint", "--strict", str(CHART), values=values, tmp_path=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_renders_expected_objects(default_docs: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == sorted(
        [
            "StatefulSet",
            "Service",
            "Service",
            "ServiceAccount",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ServiceMonitor",
            "PrometheusRule",
        ]
        + ["ConfigMap"] * len(DASHBOARDS)
    )
    for d in default_docs:
        assert "namespace" not in d["metadata"], "templates must not hard-code a namespace"
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == "rel"


def test_missing_operators_fails_clearly(helm: str) -> None:
    sets = {k: v for k, v in REQUIRED.items() if k != "operators"}
    err = render_fails(helm, *WITH_CRDS, sets=sets)
    assert "`operators` is REQUIRED" in err
    assert "re-arm" in err


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("kafka.bootstrapServers", "`kafka.bootstrapServers` is REQUIRED"),
        ("signingKey.existingSecret", "`signingKey.existingSecret` is REQUIRED"),
    ],
)
def test_other_required_values_fail_clearly(helm: str, drop: str, message: str) -> None:
    sets = {k: v for k, v in REQUIRED.items() if k != drop}
    assert message in render_fails(helm, *WITH_CRDS, sets=sets)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"kafka.securityProtocol": "SASL_SSL"}, "needs kafka.sasl.mechanism"),
        (
            {"kafka.securityProtocol": "SASL_SSL", "kafka.sasl.mechanism": "PLAIN"},
            "needs kafka.sasl.username",
        ),
        (
            {
                "kafka.securityProtocol": "SASL_SSL",
                "kafka.sasl.mechanism": "PLAIN",
                "kafka.sasl.username": "u",
            },
            "needs kafka.sasl.existingSecret",
        ),
        ({"kafka.sasl.mechanism": "PLAIN"}, "is not SASL_PLAINTEXT or SASL_SSL"),
        ({"kafka.tls.existingSecret": "tls"}, "does not use TLS"),
        (
            {
                "kafka.securityProtocol": "SSL",
                "kafka.tls.existingSecret": "t",
                "kafka.tls.certKey": "tls.crt",
            },
            "set both kafka.tls.certKey and kafka.tls.keyKey",
        ),
        ({"pdb.minAvailable": "1"}, "set only one of pdb.minAvailable"),
        ({"autoscaling.keda.enabled": "true"}, "autoscaling.keda.partitions is REQUIRED"),
        (
            {"autoscaling.keda.enabled": "true", "autoscaling.keda.partitions": "4"},
            "must not exceed autoscaling.keda.partitions (4)",
        ),
    ],
)
def test_inconsistent_settings_fail_clearly(helm: str, sets: dict[str, str], message: str) -> None:
    assert message in render_fails(helm, *WITH_CRDS, sets=REQUIRED | sets)


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        ({"replicaCount": "three"}, "replicaCount"),
        ({"replicaCount": "0"}, "replicaCount"),
        ({"kafka.securityProtocol": "TLS"}, "securityProtocol"),
        ({"kafka.sasl.mechanism": "GSSAPI"}, "mechanism"),
        ({"persistence.retentionPolicy.whenDeleted": "Keep"}, "whenDeleted"),
        ({"containerSecurityContext.allowPrivilegeEscalation": "true"}, "allowPrivilegeEscalation"),
        ({"operators": "{dr smith}"}, "/operators/0"),
        ({"replicas": "3"}, "replicas"),  # unknown key (typo of replicaCount)
    ],
)
def test_values_schema_rejects_bad_values(helm: str, sets: dict[str, str], needle: str) -> None:
    # --set-string keeps "three" a string (as a values file with replicaCount: "three" would).
    extra: list[str] = []
    for k, v in sets.items():
        extra += ["--set-string" if k == "replicaCount" else "--set", f"{k}={v}"]
    required = {k: v for k, v in REQUIRED.items() if k not in sets}
    err = render_fails(helm, *WITH_CRDS, *extra, sets=required)
    assert "values don't meet the specifications of the schema" in err
    assert needle in err


# --- offline validation of the rendered manifests --------------------------------------


def _validate_core(docs: list[dict[str, Any]]) -> set[str]:
    import kubernetes_validate

    seen = set()
    for d in docs:
        if d["kind"] in CRD_KINDS:
            continue
        assert d["kind"] in CORE_KINDS, f"unexpected kind {d['kind']}"
        try:
            kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{d['kind']}/{d['metadata']['name']}: {exc.message} at {list(exc.path)}")
        seen.add(d["kind"])
    return seen


def test_core_manifests_match_kubernetes_schemas(
    default_docs: list[dict[str, Any]],
    full_docs: list[dict[str, Any]],
    dev_docs: list[dict[str, Any]],
    archive_docs: list[dict[str, Any]],
) -> None:
    seen = _validate_core(default_docs) | _validate_core(full_docs) | _validate_core(dev_docs)
    seen |= _validate_core(archive_docs)
    assert seen == CORE_KINDS, f"kinds never validated: {CORE_KINDS - seen}"


def test_service_monitor_structure(full_docs: list[dict[str, Any]]) -> None:
    sm = one(full_docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) >= {"selector", "endpoints", "namespaceSelector"}
    assert sm["metadata"]["labels"]["release"] == "kps"
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "metrics" and ep["path"] == "/metrics"
    # It selects the metrics Service (and only it, not the headless one).
    services = by_kind(full_docs, "Service")
    selected = [
        s
        for s in services
        if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["rel-telesafe-metrics"]
    port = selected[0]["spec"]["ports"][0]
    assert port["name"] == "metrics" and port["port"] == 9108


def test_prometheus_rule_embeds_the_tested_rules(full_docs: list[dict[str, Any]]) -> None:
    pr = one(full_docs, "PrometheusRule")
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pr["spec"]) == {"groups"}
    assert pr["metadata"]["labels"]["release"] == "kps"
    assert pr["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    # Alert templates reach Prometheus untouched (not evaluated by Helm).
    text = json.dumps(pr["spec"])
    assert "{{ $labels.procedure_id }}" in text


def test_prometheus_rule_passes_promtool(full_docs: list[dict[str, Any]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/install-prometheus.sh)")
    f = tmp_path / "rules.yml"
    f.write_text(yaml.safe_dump(one(full_docs, "PrometheusRule")["spec"]))
    res = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_monitoring_crds_required_or_explicitly_disabled(helm: str) -> None:
    err = render_fails(helm, sets=REQUIRED)
    assert "does not serve monitoring.coreos.com/v1" in err
    docs = render(
        helm,
        sets=REQUIRED | {"serviceMonitor.enabled": "false", "prometheusRule.enabled": "false"},
    )
    assert not by_kind(docs, "ServiceMonitor") and not by_kind(docs, "PrometheusRule")


def test_dashboard_configmaps(full_docs: list[dict[str, Any]]) -> None:
    cms = [c for c in by_kind(full_docs, "ConfigMap") if "dashboard" in c["metadata"]["name"]]
    assert len(cms) == len(DASHBOARDS)
    rendered = {}
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "Surgery Safety"
        ((name, text),) = cm["data"].items()
        rendered[name] = json.loads(text)
    for src in DASHBOARDS:
        assert rendered[src.name] == json.loads(src.read_text())


# --- the StatefulSet -------------------------------------------------------------------


def test_security_context_is_restricted(full_docs: list[dict[str, Any]]) -> None:
    sts = one(full_docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    csc = container(full_docs)["securityContext"]
    assert csc["runAsNonRoot"] is True
    assert csc["runAsUser"] != 0
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["privileged"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in csc["capabilities"]
    assert csc["seccompProfile"]["type"] == "RuntimeDefault"
    # Writable paths: /tmp (emptyDir) and the ledger volume only.
    mounts = {m["mountPath"]: m for m in container(full_docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/data"]["name"] == "ledger"
    for path, m in mounts.items():
        if path not in ("/tmp", "/data"):
            assert m.get("readOnly") is True, f"{path} should be mounted read-only"


def test_probes(default_docs: list[dict[str, Any]]) -> None:
    c = container(default_docs)
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] == "metrics"
    assert {"name": "metrics", "containerPort": 9108, "protocol": "TCP"} in c["ports"]
    env = env_of(default_docs)
    assert env["TELESAFE_HTTP_HOST"] == "0.0.0.0"  # probes come from the kubelet, not loopback
    assert env["TELESAFE_HTTP_PORT"] == "9108"


def test_statefulset_identity_and_ledger(default_docs: list[dict[str, Any]]) -> None:
    sts = one(default_docs, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["serviceName"] == "rel-telesafe-headless"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    headless = [
        s
        for s in by_kind(default_docs, "Service")
        if s["metadata"]["name"] == "rel-telesafe-headless"
    ]
    assert headless and headless[0]["spec"]["clusterIP"] == "None"
    (vct,) = spec["volumeClaimTemplates"]
    assert vct["metadata"]["name"] == "ledger"
    assert vct["spec"]["resources"]["requests"]["storage"] == "2Gi"
    env = env_of(default_docs)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["TELESAFE_MONITOR_ID"] == "$(POD_NAME)"
    assert env["TELESAFE_GROUP_INSTANCE_ID"] == "$(POD_NAME)"
    assert env["TELESAFE_GROUP_ID"] == "telesafe-monitor"
    assert env["TELESAFE_OPERATORS"] == "dr-smith,dr-jones"
    assert env["TELESAFE_LEDGER"] == "/data/ledger.sqlite"
    assert env["TELESAFE_SIGNING_KEY"] == "/etc/telesafe/signing/signing.key"
    assert env["TELESAFE_BOOTSTRAP"] == BOOTSTRAP
    assert env["TELESAFE_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert "TELESAFE_SASL_PASSWORD" not in env and "TELESAFE_SSL_CAFILE" not in env
    assert container(default_docs)["args"] == ["run"]
    assert container(default_docs)["image"] == "telesafe:0.1.0"
    # POD_NAME must be defined before the variables that expand it.
    names = [e["name"] for e in container(default_docs)["env"]]
    assert names.index("POD_NAME") < names.index("TELESAFE_MONITOR_ID")


def test_kafka_sasl_ssl_settings(full_docs: list[dict[str, Any]]) -> None:
    env = env_of(full_docs)
    assert env["TELESAFE_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["TELESAFE_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["TELESAFE_SASL_USERNAME"] == "telesafe"
    assert env["TELESAFE_SASL_PASSWORD"] == {
        "secretKeyRef": {"name": "kafka-telesafe-user", "key": "password"}
    }
    assert env["TELESAFE_SSL_CAFILE"] == "/etc/telesafe/kafka-tls/ca.crt"
    assert env["TELESAFE_SSL_CERTFILE"] == "/etc/telesafe/kafka-tls/tls.crt"
    assert env["TELESAFE_SSL_KEYFILE"] == "/etc/telesafe/kafka-tls/tls.key"
    assert env["TELESAFE_TOPIC_PREFIX"] == "prod."
    assert env["TELESAFE_RULES"] == "/etc/telesafe/rules"
    pod = one(full_docs, "StatefulSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["kafka-tls"]["secret"]["secretName"] == "kafka-telesafe-tls"
    assert {i["key"] for i in volumes["kafka-tls"]["secret"]["items"]} == {
        "ca.crt",
        "tls.crt",
        "tls.key",
    }
    assert volumes["signing-key"]["secret"]["secretName"] == "telesafe-signing-key"
    # Secret files readable by the fsGroup only (the monitor runs as non-root).
    assert volumes["signing-key"]["secret"]["defaultMode"] == 0o440
    assert not by_kind(full_docs, "Secret"), "existing Secrets must not be re-created"
    packs = [
        c for c in by_kind(full_docs, "ConfigMap") if c["metadata"]["name"].endswith("policy-packs")
    ]
    assert yaml.safe_load(packs[0]["data"]["default.yaml"]) == yaml.safe_load(
        (ROOT / "rules" / "default.yaml").read_text()
    )


def test_policy_packs_parse_with_the_monitor(
    full_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    from monitor.policy.loader import PackRegistry

    (cm,) = [
        c for c in by_kind(full_docs, "ConfigMap") if c["metadata"]["name"].endswith("policy-packs")
    ]
    for name, text in cm["data"].items():
        (tmp_path / name).write_text(text)
    PackRegistry.from_dir(tmp_path, default="default")


def test_dev_settings(dev_docs: list[dict[str, Any]]) -> None:
    secret = one(dev_docs, "Secret")
    assert secret["metadata"]["name"] == "rel-telesafe-kafka-sasl"
    env = env_of(dev_docs)
    assert env["TELESAFE_SASL_PASSWORD"] == {
        "secretKeyRef": {"name": "rel-telesafe-kafka-sasl", "key": "password"}
    }
    assert "TELESAFE_SIGNING_KEY" not in env  # the monitor generates one on its volume
    spec = one(dev_docs, "StatefulSet")["spec"]
    assert "volumeClaimTemplates" not in spec
    assert {"name": "ledger", "emptyDir": {}} in spec["template"]["spec"]["volumes"]
    assert not by_kind(dev_docs, "PodDisruptionBudget"), "no PDB for a single instance"


def test_pdb_never_blocks_drains(full_docs: list[dict[str, Any]]) -> None:
    pdb = one(full_docs, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "telesafe",
                "app.kubernetes.io/instance": "rel",
            }
        },
    }


def test_network_policy(default_docs: list[dict[str, Any]]) -> None:
    np = one(default_docs, "NetworkPolicy")["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = np["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    (peer,) = ingress["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    kafka, dns = np["egress"]
    assert kafka["ports"] == [{"port": 9092, "protocol": "TCP"}, {"port": 9093, "protocol": "TCP"}]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_network_policy_selectors_configurable(helm: str) -> None:
    docs = render(
        helm,
        sets=REQUIRED
        | {
            "networkPolicy.metrics.namespaceSelector.matchLabels.team": "obs",
            "networkPolicy.kafka.ports": "{9094}",
        },
    )
    np = one(docs, "NetworkPolicy")["spec"]
    assert np["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["team"] == "obs"
    assert np["egress"][0]["ports"] == [{"port": 9094, "protocol": "TCP"}]


def _iter_env_names(docs: list[dict[str, Any]]) -> Iterator[str]:
    for e in container(docs)["env"]:
        yield e["name"]


def test_env_names_are_understood_by_the_monitor(full_docs: list[dict[str, Any]]) -> None:
    """Every TELESAFE_* variable the chart sets is read by `telesafe run`."""
    sources = (ROOT / "monitor" / "service" / "cli.py").read_text() + (
        ROOT / "monitor" / "kafka" / "settings.py"
    ).read_text()
    for name in _iter_env_names(full_docs):
        if name.startswith("TELESAFE_"):
            assert f'"{name}"' in sources, f"{name} is not read by the monitor"


# --- the governance archive (optional) ---------------------------------------------------

PUBLIC_KEY = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAHdIWaJ23rxRsPpbrRop8ruIAs3LnsorQHghLbG+CtLw=\n"
    "-----END PUBLIC KEY-----\n"
)


@pytest.fixture(scope="module")
def archive_docs(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    values = FULL_VALUES | {"archive": {"enabled": True, "publicKey": PUBLIC_KEY}}
    return render(helm, values=values, tmp_path=tmp_path_factory.mktemp("archive"))


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_archive_is_off_by_default(default_docs: list[dict[str, Any]]) -> None:
    assert not by_kind(default_docs, "Deployment")
    assert not by_kind(default_docs, "PersistentVolumeClaim")


def test_archive_deployment(archive_docs: list[dict[str, Any]]) -> None:
    dep = one(archive_docs, "Deployment")
    assert dep["metadata"]["name"] == "rel-telesafe-archive"
    spec = dep["spec"]
    # One writer per archive directory, also during an upgrade.
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][:2] == ["audit", "archive"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["TELESAFE_ARCHIVE_DIR"] == "/var/lib/telesafe-archive"
    assert env["TELESAFE_TRUSTED_KEYS"] == "/etc/telesafe/archive/trusted-keys"
    # The same Kafka connection as the monitors (SASL_SSL with mutual TLS here).
    monitor_env = env_of(archive_docs)
    for name in (
        "TELESAFE_BOOTSTRAP",
        "TELESAFE_TOPIC_PREFIX",
        "TELESAFE_SECURITY_PROTOCOL",
        "TELESAFE_SASL_PASSWORD",
        "TELESAFE_SSL_CAFILE",
        "TELESAFE_SSL_KEYFILE",
    ):
        assert env[name] == monitor_env[name], name
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/var/lib/telesafe-archive"]["name"]]["persistentVolumeClaim"] == {
        "claimName": "rel-telesafe-archive"
    }
    assert mounts["/etc/telesafe/archive"]["readOnly"] is True
    assert "kafka-tls" in volumes
    pvc = one(archive_docs, "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"


def test_archive_trusts_every_instance_of_the_statefulset(
    archive_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    from monitor.audit.archive.trusted import TrustedKeys
    from monitor.audit.checkpoint import load_public_key

    (cm,) = [
        c
        for c in by_kind(archive_docs, "ConfigMap")
        if c["metadata"]["name"] == "rel-telesafe-archive-trusted-keys"
    ]
    for name, text in cm["data"].items():
        (tmp_path / name).write_text(text)
    tk = TrustedKeys.load(tmp_path / "trusted-keys")
    key = load_public_key(tmp_path / "monitor.pub")
    sts = one(archive_docs, "StatefulSet")
    for i in range(sts["spec"]["replicas"]):  # monitor id = pod name; origin telesafe/<id>
        assert tk.key_for(f"telesafe/{sts['metadata']['name']}-{i}") == key
    assert tk.key_for("telesafe/someone-else") is None


def test_archive_is_selected_by_nothing_of_the_monitors(
    archive_docs: list[dict[str, Any]],
) -> None:
    labels = one(archive_docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    sts = one(archive_docs, "StatefulSet")
    monitor_selectors = [
        sts["spec"]["selector"]["matchLabels"],
        one(archive_docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    monitor_selectors += [
        s["spec"]["selector"]
        for s in by_kind(archive_docs, "Service")
        if not s["metadata"]["name"].endswith("-archive")
    ]
    monitor_selectors += [
        n["spec"]["podSelector"]["matchLabels"]
        for n in by_kind(archive_docs, "NetworkPolicy")
        if not n["metadata"]["name"].endswith("-archive")
    ]
    for sel in monitor_selectors:
        assert not _labels_match(sel, labels), sel
    # Its own Service, NetworkPolicy and ServiceMonitor select it.
    (svc,) = [
        s
        for s in by_kind(archive_docs, "Service")
        if s["metadata"]["name"] == "rel-telesafe-archive"
    ]
    assert _labels_match(svc["spec"]["selector"], labels)
    assert svc["spec"]["ports"][0]["port"] == 9110
    (np,) = [
        n
        for n in by_kind(archive_docs, "NetworkPolicy")
        if n["metadata"]["name"] == "rel-telesafe-archive"
    ]
    assert _labels_match(np["spec"]["podSelector"]["matchLabels"], labels)
    (sm,) = [
        m
        for m in by_kind(archive_docs, "ServiceMonitor")
        if m["metadata"]["name"] == "rel-telesafe-archive"
    ]
    assert _labels_match(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert sm["metadata"]["labels"]["release"] == "kps"


def test_archive_needs_its_trust_anchors(helm: str) -> None:
    err = render_fails(helm, *WITH_CRDS, sets=REQUIRED | {"archive.enabled": "true"})
    assert "archive.enabled=true needs its trust anchors" in err
    err = render_fails(
        helm,
        *WITH_CRDS,
        sets=REQUIRED | {"archive.enabled": "true", "archive.publicKey": "not a key"},
    )
    assert "must be a PEM public key" in err
    docs = render(
        helm, sets=REQUIRED | {"archive.enabled": "true", "archive.existingConfigMap": "fleet-keys"}
    )
    vols = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "trusted-keys", "configMap": {"name": "fleet-keys"}} in vols
    assert not [c for c in by_kind(docs, "ConfigMap") if "trusted-keys" in c["metadata"]["name"]]


def test_archive_values_are_checked_by_the_schema(helm: str) -> None:
    err = render_fails(helm, *WITH_CRDS, sets=REQUIRED | {"archive.replicas": "2"})
    assert "values don't meet the specifications of the schema" in err and "archive" in err


def test_keda_scales_on_the_groups_lag_within_the_partition_count(helm: str) -> None:
    """Issue (overload): scale before saturation, never beyond the partition count."""
    sets = REQUIRED | {
        "autoscaling.keda.enabled": "true",
        "autoscaling.keda.partitions": "12",
        "autoscaling.keda.maxReplicas": "12",
        "kafka.topicPrefix": "prod.",
        "kafka.groupId": "grp",
    }
    so = one(render(helm, *WITH_CRDS, sets=sets), "ScaledObject")
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "rel-telesafe",
    }
    assert spec["maxReplicaCount"] == 12 and spec["minReplicaCount"] == 2
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == "grp" and meta["topic"] == "prod.telesafe.telemetry.robot"
    assert meta["allowIdleConsumers"] == "false"
    assert not by_kind(render(helm, *WITH_CRDS, sets=REQUIRED), "ScaledObject")  # off by default


def test_archive_can_use_its_own_kafka_principal(
    helm: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Least privilege (docs/security.md): the archive reads the audit topic as `archive`,
    the monitors keep theirs."""
    own = {"username": "archive", "existingSecret": "archive-sasl", "passwordKey": "pw"}
    values = FULL_VALUES | {"archive": {"enabled": True, "publicKey": PUBLIC_KEY, "sasl": own}}
    docs = render(helm, values=values, tmp_path=tmp_path_factory.mktemp("archive-sasl"))
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["TELESAFE_SASL_USERNAME"] == "archive"
    assert env["TELESAFE_SASL_PASSWORD"] == {"secretKeyRef": {"name": "archive-sasl", "key": "pw"}}
    monitor_env = env_of(docs)
    assert monitor_env["TELESAFE_SASL_USERNAME"] != "archive"
    assert env["TELESAFE_SSL_CAFILE"] == monitor_env["TELESAFE_SSL_CAFILE"]


def test_archive_principal_needs_its_password_secret(helm: str) -> None:
    err = render_fails(
        helm,
        *WITH_CRDS,
        sets={
            **REQUIRED,
            "archive.enabled": "true",
            "archive.existingConfigMap": "archive-keys",
            "archive.sasl.username": "archive",
            "kafka.securityProtocol": "SASL_SSL",
            "kafka.sasl.mechanism": "SCRAM-SHA-512",
            "kafka.sasl.username": "monitor",
            "kafka.sasl.existingSecret": "monitor-sasl",
        },
    )
    assert "archive.sasl.username needs archive.sasl.existingSecret" in err


def test_runbook_links_follow_the_runbook_url(helm: str, tmp_path: Path) -> None:
    base = "https://wiki.hospital.example/telesafe/runbook"
    sets = {**REQUIRED, "prometheusRule.runbookURL": base}
    docs = render(helm, *WITH_CRDS, sets=sets, tmp_path=tmp_path)
    rules = [
        r for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"] if "alert" in r
    ]
    urls = [r["annotations"]["runbook_url"] for r in rules]
    assert len(urls) == len(rules) > 10
    assert all(u == f"{base}#{r['alert'].lower()}" for u, r in zip(urls, rules, strict=True))
    default = render(helm, *WITH_CRDS, sets=REQUIRED, tmp_path=tmp_path)
    relative = [
        r["annotations"]["runbook_url"]
        for g in one(default, "PrometheusRule")["spec"]["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    assert all(u.startswith("docs/runbook.md#") for u in relative)


def test_a_runbook_url_must_be_a_url(helm: str) -> None:
    err = render_fails(helm, *WITH_CRDS, sets={**REQUIRED, "prometheusRule.runbookURL": "wiki"})
    assert "runbookURL" in err
