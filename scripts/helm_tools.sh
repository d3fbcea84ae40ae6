#!/usr/bin/env bash
# The chart's offline validation tools, installed once into .tools/ (git-ignored) and reused afterwards:
#   .tools/bin/helm         helm, built from its Go module (`go install`, through the Go module proxy)
#   .tools/validate/        a venv with kubernetes-validate (the Kubernetes OpenAPI schemas) and jsonschema
#   .tools/checkov/         a venv of its own for checkov (its pins clash with the project's)
#
#   scripts/helm_tools.sh install      install what is missing (idempotent; a stamp per tool and version)
#   scripts/helm_tools.sh keda-crd     re-extract deploy/helm/schemas/*.json from the KEDA and
#                                      prometheus-operator Go modules (only when bumping their versions)
#   scripts/helm_tools.sh lint         install if needed, then deploy/helm/validate_chart.py (helm lint,
#                                      schemas, checkov) in the validate venv
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

HELM_VERSION=v3.22.0
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
KEDA_VERSION=v2.21.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0

TOOLS=${CRM_BULK_TOOLS_DIR:-$ROOT/.tools}
PYTHON=${PYTHON:-python3}
# Go keeps its module and build caches inside the tools folder, so a second run (and `make clean`) find them.
export GOPATH=$TOOLS/go GOMODCACHE=$TOOLS/go/mod GOCACHE=$TOOLS/go/cache GOFLAGS=-modcacherw GOTOOLCHAIN=local

stamp_ok() { [ -f "$TOOLS/stamps/$1" ] && [ "$(cat "$TOOLS/stamps/$1")" = "$2" ]; }
stamp() { mkdir -p "$TOOLS/stamps" && echo "$2" > "$TOOLS/stamps/$1"; }

install_helm() {
    if stamp_ok helm "$HELM_VERSION" && [ -x "$TOOLS/bin/helm" ]; then return; fi
    command -v go >/dev/null || { echo "helm_tools: Go is required to build helm (https://go.dev/dl/)" >&2; exit 1; }
    echo "helm_tools: building helm $HELM_VERSION (go install, once)" >&2
    GOBIN=$TOOLS/bin go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    stamp helm "$HELM_VERSION"
}

install_venv() {  # name, version stamp, pip requirements...
    local name=$1 version=$2
    shift 2
    if stamp_ok "$name" "$version" && [ -x "$TOOLS/$name/bin/python" ]; then return; fi
    echo "helm_tools: installing $* into $TOOLS/$name (once)" >&2
    rm -rf "${TOOLS:?}/$name"
    "$PYTHON" -m venv "$TOOLS/$name"
    "$TOOLS/$name/bin/python" -m pip install -q --disable-pip-version-check "$@"
    stamp "$name" "$version"
}

install() {
    install_helm
    install_venv validate "$KUBERNETES_VALIDATE_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" pyyaml
    install_venv checkov "$CHECKOV_VERSION" "checkov==$CHECKOV_VERSION"
}

# The openAPIV3Schema of a CRD file inside a Go module, written as JSON with where it came from.
extract_crd() {  # module@version, path in the module, output file
    local dir
    dir=$(go mod download -json "$1" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    "$TOOLS/validate/bin/python" - "$dir/$2" "$3" "$1/$2" <<'EOF'
import json, sys, yaml
crd = yaml.safe_load(open(sys.argv[1]))
versions = {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}
out = {"source": sys.argv[3], "kind": crd["spec"]["names"]["kind"], "group": crd["spec"]["group"],
       "versions": versions}
with open(sys.argv[2], "w") as fh:
    json.dump(out, fh, indent=1, sort_keys=True)
    fh.write("\n")
EOF
}

keda_crd() {
    install_venv validate "$KUBERNETES_VALIDATE_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" pyyaml
    local out=deploy/helm/schemas
    mkdir -p "$out"
    extract_crd "github.com/kedacore/keda/v2@$KEDA_VERSION" config/crd/bases/keda.sh_scaledobjects.yaml \
        "$out/keda.sh_scaledobject.json"
    local po="github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION"
    extract_crd "$po" example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \
        "$out/monitoring.coreos.com_servicemonitor.json"
    extract_crd "$po" example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml \
        "$out/monitoring.coreos.com_prometheusrule.json"
}

lint() {
    install
    "$TOOLS/validate/bin/python" deploy/helm/validate_chart.py --helm "$TOOLS/bin/helm" \
        --checkov "$TOOLS/checkov/bin/checkov"
}

case "${1:-}" in
    install) install ;;
    keda-crd) keda_crd ;;
    lint) lint ;;
    *) echo "usage: $0 install|keda-crd|lint" >&2; exit 2 ;;
esac
