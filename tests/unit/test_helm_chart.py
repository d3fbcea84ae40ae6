"""The Helm chart agrees with the code: every setting reaches the pods and is accepted by `Settings`, probes
hit the ports the processes serve, the ScaledObject watches the workers' real group and topic, alerts and
the dashboard query metrics crm-bulk exposes, and values the platform cannot run with are refused.

Renders with the helm that `scripts/helm_tools.sh install` builds into .tools/ (`make lint` runs it first);
without it these tests fail on CI and are skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from crm_bulk.metrics import REGISTRY
from crm_bulk.queue.kafka.configuration import group_name
from crm_bulk.queue.protocol import CHUNKS_TOPIC, topic_name
from crm_bulk.settings import Settings
from crm_bulk.worker.metrics import WORKER_REGISTRY, restarts_counter
from tests.requirements import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "crm-bulk"
PRODUCTION = ROOT / "deploy" / "helm" / "values-production.yaml"
HELM = Path(os.environ.get("CRM_BULK_TOOLS_DIR", ROOT / ".tools")) / "bin" / "helm"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
# Settings the chart sets itself rather than from `config`/`secrets`.
CHART_MANAGED = {"worker_processes", "jwt_private_key_file", "jwt_public_key_file"}
# What the Secret would hold, by key: values the settings' validation accepts.
SECRET_VALUES = {
    "database-url": "postgresql://crm_bulk:pw@pg.internal:5432/crm_bulk",
    "clickhouse-url": "https://crm_bulk:pw@ch.internal:8443/crm_bulk",
    "redis-url": "rediss://:pw@redis.internal:6380/0",
    "jwt-secret": "j" * 40,
    "health-token": "h" * 24,
}
# Each process, the port setting its probes must use.
PROBED = {
    "api": "api_port",
    "scheduler": "scheduler_health_port",
    "worker": "worker_metrics_port",
    "webhooks": "webhooks_health_port",
}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        unavailable(f"{HELM} missing: run scripts/helm_tools.sh install")
    command = [
        str(HELM),
        "template",
        "crm-bulk",
        str(CHART),
        "--namespace",
        "crm",
        "--kube-version",
        "1.34.0",
    ]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=False)


def render(*args: str) -> list[dict[str, Any]]:
    done = helm_template(*args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod spec of every workload, by component label."""
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    }


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment a container starts with: its ConfigMaps, then its own entries (secrets resolved)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = SECRET_VALUES[entry["valueFrom"]["secretKeyRef"]["key"]]
    return env


def test_every_setting_is_a_value_or_a_secret() -> None:
    config = {snake(key) for key in VALUES["config"]}
    secrets = {snake(key) for key in VALUES["secrets"]["keys"]}
    names = {f.name for f in fields(Settings)}
    missing = names - config - secrets - CHART_MANAGED
    assert missing == set(), f"add these settings to deploy/helm/crm-bulk/values.yaml `config`: {missing}"
    assert config - names == set()
    assert secrets - names == set()
    # A secret never has a value in values.yaml, only the key it is read from.
    assert config & {"database_url", "clickhouse_url", "redis_url", "jwt_secret", "health_token"} == set()


@pytest.mark.parametrize("values", [[], ["-f", str(PRODUCTION)]], ids=["default", "production"])
def test_every_process_starts_with_settings_the_code_accepts(values: list[str]) -> None:
    docs = render(*values)
    specs = pod_specs(docs)
    assert set(specs) == {*PROBED, "migrate"}
    for component, spec in specs.items():
        [container] = spec["containers"]
        settings = Settings.from_env(container_env(docs, container))
        assert settings.queue_kind == "kafka" and not settings.clickhouse_embedded, component
        assert settings.redis_url is not None and settings.jwt_secret == SECRET_VALUES["jwt-secret"]
        if component in PROBED:
            # Reachable on the pod's address, by probes and by Prometheus.
            assert settings.api_host == settings.health_host == "0.0.0.0"
            port = getattr(settings, PROBED[component])
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("livenessProbe", "readinessProbe"):
                assert "exec" not in container[probe]
                assert ports[container[probe]["httpGet"]["port"]] == port
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    worker = pod_specs(docs)["worker"]["containers"][0]
    assert Settings.from_env(container_env(docs, worker)).worker_processes == 1


def test_the_migrations_hook_runs_with_the_pods_settings() -> None:
    docs = render()
    job = one(docs, "Job", "crm-bulk-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["crm-bulk", "migrate"]
    [api] = pod_specs(docs)["api"]["containers"]
    # Inline (the ConfigMap does not exist yet at pre-install), but the same settings.
    assert Settings.from_env(container_env(docs, container)) == Settings.from_env(container_env(docs, api))


def test_the_scaled_object_watches_the_workers_group_and_topic() -> None:
    docs = render("-f", str(PRODUCTION))
    scaled = one(docs, "ScaledObject", "crm-bulk-worker")
    [trigger] = scaled["spec"]["triggers"]
    namespace = "crm-bulk-prod"
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == group_name(namespace)
    assert trigger["metadata"]["topic"] == topic_name(namespace, CHUNKS_TOPIC)
    settings = Settings(queue_url="kafka://" + trigger["metadata"]["bootstrapServers"])
    assert settings.kafka_bootstrap.count(",") == 2
    assert scaled["spec"]["maxReplicaCount"] <= 12  # the production partitions
    assert int(trigger["metadata"]["activationLagThreshold"]) >= 0
    assert scaled["spec"]["scaleTargetRef"]["name"] == "crm-bulk-worker"
    assert not [
        d for d in docs if d["kind"] == "HorizontalPodAutoscaler" and "worker" in d["metadata"]["name"]
    ]


def test_without_keda_the_workers_get_a_plain_hpa() -> None:
    docs = render("--set", "keda.enabled=false")
    assert not [d for d in docs if d["kind"] == "ScaledObject"]
    hpa = one(docs, "HorizontalPodAutoscaler", "crm-bulk-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "crm-bulk-worker"
    assert hpa["spec"]["maxReplicas"] == VALUES["worker"]["autoscaling"]["maxReplicas"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "worker.autoscaling.maxReplicas=7"], "exceeds config.kafkaPartitions (6)"),
        (["--set", "worker.processesPerPod=2"], "exceeds config.kafkaPartitions (6)"),
        (
            ["--set", "config.queueUrl=postgres"],
            "/config/queueUrl': 'postgres' does not match pattern '^kafka://'",
        ),
        (["--set", "keda.lagThreshold=0"], "/keda/lagThreshold': minimum: got 0, want 1"),
        (["--set", "image.digest=latest"], "/image/digest"),
        (["--set", "secrets.existingSecret="], "secrets.existingSecret must name an existing Secret"),
        (["--set", "secrets.keys.databaseUrl="], "secrets.keys.databaseUrl is required"),
        (["--set", "secrets.keys.jwtSecret="], "secrets.keys.jwtSecret is required"),
        (["--set", "config.jwtAlgorithm=EdDSA"], "jwtKeys.existingSecret is required"),
    ],
)
def test_values_the_platform_cannot_run_with_are_refused(values: list[str], message: str) -> None:
    done = helm_template(*values)
    assert done.returncode != 0
    assert message in done.stderr


def test_asymmetric_keys_are_mounted_files() -> None:
    docs = render("--set", "config.jwtAlgorithm=EdDSA", "--set", "jwtKeys.existingSecret=crm-bulk-jwt")
    spec = pod_specs(docs)["api"]
    [container] = spec["containers"]
    env = container_env(docs, container)
    assert env["CRM_BULK_JWT_PRIVATE_KEY_FILE"] == "/etc/crm-bulk/jwt/private.pem"
    [volume] = [v for v in spec["volumes"] if v["name"] == "jwt-keys"]
    assert volume["secret"]["secretName"] == "crm-bulk-jwt"
    assert {"name": "jwt-keys", "mountPath": "/etc/crm-bulk/jwt", "readOnly": True} in container[
        "volumeMounts"
    ]


def test_every_pod_is_hardened() -> None:
    for component, spec in pod_specs(render()).items():
        assert spec["automountServiceAccountToken"] is False, component
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        [container] = spec["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert set(container["resources"]) == {"requests", "limits"}


def test_each_component_may_reach_only_its_backends() -> None:
    docs = render()
    policies = {
        policy["metadata"]["labels"]["app.kubernetes.io/component"]: policy["spec"]
        for policy in docs
        if policy["kind"] == "NetworkPolicy"
    }
    ports = {
        component: {p["port"] for rule in spec["egress"] for p in rule.get("ports", [])}
        for component, spec in policies.items()
    }
    assert ports == {
        "api": {53, 5432, 9092, 8123, 8443, 6379, 6380},
        "worker": {53, 5432, 9092, 8123, 8443, 6379, 6380},
        "scheduler": {53, 5432, 9092, 6379, 6380},
        "webhooks": {53, 5432},
        "migrate": {53, 5432},
    }
    # Only the webhook deliverer has a rule without ports: public receivers, private ranges excluded.
    [open_rule] = [rule for spec in policies.values() for rule in spec["egress"] if "ports" not in rule]
    assert open_rule == policies["webhooks"]["egress"][-1]
    assert "10.0.0.0/8" in open_rule["to"][0]["ipBlock"]["except"]
    # Nothing may connect to the migrations; each other component on its own port only.
    assert policies["migrate"]["ingress"] == []
    assert policies["worker"]["ingress"][0]["ports"] == [{"port": 9101, "protocol": "TCP"}]
    assert policies["webhooks"]["ingress"][0]["ports"] == [{"port": 9103, "protocol": "TCP"}]


def exposed_metric_names() -> set[str]:
    """Every series name crm-bulk's registries can expose (counters' `_total`, histograms' parts)."""
    families = [*REGISTRY.collect(), *WORKER_REGISTRY.collect(), *restarts_counter().collect()]
    names: set[str] = set()
    for family in families:
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_alerts_and_dashboard_query_only_metrics_crm_bulk_exposes() -> None:
    docs = render("--set", "metrics.prometheusRule.enabled=true")
    rules = one(docs, "PrometheusRule", "crm-bulk")["spec"]["groups"][0]["rules"]
    dashboard = json.loads((CHART / "dashboards" / "crm-bulk.json").read_text())
    expressions = [rule["expr"] for rule in rules] + [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ]
    used = {name for expr in expressions for name in re.findall(r"\bcrm_bulk_[a-z_]+", expr)}
    assert used - exposed_metric_names() == set()
    alerts = {rule["alert"] for rule in rules}
    assert {
        "CrmBulkDeadLetters",
        "CrmBulkQueueLagGrowing",
        "CrmBulkNoProgress",
        "CrmBulkLogShippingBehind",
    } <= alerts
    dashboards = one(docs, "ConfigMap", "crm-bulk-dashboard")
    assert json.loads(dashboards["data"]["crm-bulk.json"]) == dashboard
