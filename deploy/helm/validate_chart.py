"""Offline validation of the crm-bulk chart, run by `make lint` (scripts/helm_tools.sh lint) in its venv.

For each values set (the defaults, values-production.yaml, the plain-HPA variant) it runs `helm lint`,
renders the chart with `helm template`, validates every manifest against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail) of the oldest and newest Kubernetes the chart supports,
validates the custom resources against the vendored CRD schemas in deploy/helm/schemas/ (KEDA's
ScaledObject, prometheus-operator's ServiceMonitor and PrometheusRule), and scans the rendered manifests with
checkov, which must report no failed check (skips are annotations next to the resource, each with a reason).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

# kubernetes-validate reads and parses its definitions file (megabytes of JSON) on every call; they are
# only read, so one parse per file serves all the manifests.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(
    kubernetes_validate.utils.schema_contents
)

HERE = Path(__file__).resolve().parent
CHART = HERE / "crm-bulk"
SCHEMAS = HERE / "schemas"
# The chart's kubeVersion floor, and the newest release kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "production": ["-f", str(HERE / "values-production.yaml")],
    "plain-hpa": ["--set", "keda.enabled=false", "--set", "metrics.prometheusRule.enabled=true"],
}
CRD_FILES = {
    ("keda.sh", "ScaledObject"): "keda.sh_scaledobject.json",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com_servicemonitor.json",
    ("monitoring.coreos.com", "PrometheusRule"): "monitoring.coreos.com_prometheusrule.json",
}


def run(command: list[str]) -> str:
    """Run a tool; its output on failure, and exit 1."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(f"chart: {' '.join(command)} failed:\n{done.stdout}{done.stderr}")
        raise SystemExit(1)
    return done.stdout


def render(helm: str, name: str, args: list[str]) -> list[dict[str, Any]]:
    """`helm lint` then `helm template` of one values set; the manifests."""
    kube = ["--kube-version", KUBERNETES_VERSIONS[-1]]
    run([helm, "lint", str(CHART), "--strict", *kube, *args])
    text = run([helm, "template", "crm-bulk", str(CHART), "--namespace", "crm-bulk", *kube, *args])
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    if not docs:
        raise SystemExit(f"chart: values set {name} rendered nothing")
    return docs


def crd_schema(group: str, kind: str, version: str) -> dict[str, Any] | None:
    """The vendored openAPIV3Schema of a custom resource kind, or None for a built-in kind."""
    file = CRD_FILES.get((group, kind))
    if file is None:
        return None
    vendored = json.loads((SCHEMAS / file).read_text())
    schema: dict[str, Any] = vendored["versions"][version]
    return schema


def validate(doc: dict[str, Any]) -> list[str]:
    """Problems of one manifest (empty when valid)."""
    group, _, version = doc["apiVersion"].rpartition("/")
    where = f"{doc['kind']} {doc['metadata']['name']}"
    schema = crd_schema(group, doc["kind"], version)
    if schema is not None:
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
        ]
    problems = []
    for kubernetes in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, kubernetes, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            problems.append(f"{where} (Kubernetes {kubernetes}): {getattr(exc, 'message', exc)}")
    return problems


def self_check(docs: list[dict[str, Any]]) -> None:
    """The validators must reject broken manifests, or a pass above proves nothing: a ScaledObject without
    its target and with a trigger missing its type, and a Deployment with an unknown field."""
    scaled = copy.deepcopy(next(doc for doc in docs if doc["kind"] == "ScaledObject"))
    del scaled["spec"]["scaleTargetRef"]
    del scaled["spec"]["triggers"][0]["type"]
    deployment = copy.deepcopy(next(doc for doc in docs if doc["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    for broken in (scaled, deployment):
        if not validate(broken):
            raise SystemExit(f"chart: the validators accepted a broken {broken['kind']}")


def scan(checkov: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    """checkov over every rendered values set; exit 1 on any failed check."""
    with tempfile.TemporaryDirectory(prefix="crm-bulk-chart-") as folder:
        for name, docs in rendered.items():
            (Path(folder) / f"{name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        done = subprocess.run(
            [checkov, "-d", folder, "--framework", "kubernetes", "--compact", "--quiet", "--skip-download"],
            capture_output=True,
            text=True,
            check=False,
            # Offline: no guideline mapping or policy download from the vendor's platform.
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
        )
    if done.returncode != 0:
        sys.stderr.write(f"chart: checkov found failed checks:\n{done.stdout}{done.stderr}")
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", required=True)
    parser.add_argument("--checkov", required=True)
    options = parser.parse_args()
    started = time.monotonic()
    rendered = {name: render(options.helm, name, args) for name, args in VALUE_SETS.items()}
    self_check(rendered["default"])
    problems = [problem for docs in rendered.values() for doc in docs for problem in validate(doc)]
    if problems:
        sys.stderr.write("chart: invalid manifests:\n  " + "\n  ".join(problems) + "\n")
        raise SystemExit(1)
    scan(options.checkov, rendered)
    count = sum(len(docs) for docs in rendered.values())
    print(
        f"chart: {count} manifests of {len(rendered)} values sets valid for Kubernetes "
        f"{' and '.join(KUBERNETES_VERSIONS)}, CRDs and checkov ({time.monotonic() - started:.1f} s)"
    )


if __name__ == "__main__":
    main()
