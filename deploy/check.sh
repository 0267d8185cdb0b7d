#!/usr/bin/env bash
# Checks every file under deploy/ with the tool its users run, offline:
#   Prometheus rules  promtool check rules + promtool test rules
#   Kubernetes        kubectl kustomize, then kubernetes-validate --strict for each version below
#   systemd           systemd-analyze verify (warnings are errors) + security --offline
# The rest is checked by `cargo test --test it deploy` (tests/it/deploy.rs): metrics every rule
# and panel reads, a real Prometheus scraping pagerhook, `pagerhook check` of the Kubernetes
# configs, the Dockerfile. .ci/run installs the tools; run this from anywhere.
set -euo pipefail
cd "$(dirname "$0")"

# The Kubernetes versions the manifests are validated against (kubernetes-validate ships their
# schemas). 1.30 is the oldest: the preStop sleep action needs it.
K8S_VERSIONS="1.30.0 1.31.0 1.32.0 1.33.0 1.34.0 1.35.0 1.36.0"
# systemd-analyze security's exposure score, in tenths (1.4 today); above it fails.
SYSTEMD_EXPOSURE_MAX=20

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "deploy/check.sh: $1 is missing ($2)" >&2; exit 1; }
}
need promtool "apt-get install prometheus"
need kubectl "the Kubernetes client: https://kubernetes.io/docs/tasks/tools/"
# As a module of the python3 that pip installed it for: no console script or shim needed on PATH.
python3 -c "import kubernetes_validate" 2>/dev/null ||
    { echo "deploy/check.sh: kubernetes-validate is missing (pip install kubernetes-validate)" >&2; exit 1; }
need systemd-analyze "apt-get install systemd"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== Prometheus rules (promtool)"
promtool check rules prometheus/pagerhook.rules.yml
promtool test rules prometheus/pagerhook.tests.yml

echo "== Kubernetes (kustomize, kubernetes-validate)"
for overlay in kubernetes/overlays/*/; do
    name=$(basename "$overlay")
    kubectl kustomize "$overlay" >"$work/$name.yaml"
    for version in $K8S_VERSIONS; do
        python3 -m kubernetes_validate --strict --quiet --kubernetes-version "$version" "$work/$name.yaml"
    done
    echo "$name: $(grep -c '^kind:' "$work/$name.yaml") objects valid for Kubernetes $K8S_VERSIONS"
done

echo "== systemd (systemd-analyze)"
# verify insists that ExecStart's binary exists: a copy of the unit points at an executable of
# this machine instead of /usr/local/bin/pagerhook; nothing else changes.
sed "s#/usr/local/bin/pagerhook#$(command -v true)#" systemd/pagerhook.service >"$work/pagerhook.service"
# verify only warns about unknown keys and misspelt directives: any output fails.
if ! out=$(systemd-analyze verify "$work/pagerhook.service" 2>&1) || [ -n "$out" ]; then
    echo "$out" >&2
    echo "systemd-analyze verify: systemd/pagerhook.service is not clean" >&2
    exit 1
fi
systemd-analyze security --offline=yes --threshold="$SYSTEMD_EXPOSURE_MAX" systemd/pagerhook.service | tail -1
echo "deploy/check.sh: all checks passed"
