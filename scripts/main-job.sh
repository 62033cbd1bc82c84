#!/usr/bin/env bash
# kwire's main job on this one machine: the seed's relay A -> B -> C, end to end.
#
# Installs what is missing, builds kwire and the local Kubernetes control plane
# (from Go modules; the first build takes a while), then runs the sandbox: a real
# kube-apiserver, the chart installed with helm, one network namespace per node,
# the operator and a node daemon per namespace, examples/seed/relay.yaml applied
# with kubectl, and pings through every link and route (`kwire sandbox up --check`).
# Leaves nothing behind; if it is killed, `kwire sandbox down` removes what it left.
# Needs root (network namespaces and WireGuard devices).
set -euo pipefail
cd "$(dirname "$0")/.."

began=$(date +%s)
step() { printf '==> %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh

step "build kwire (cargo build --workspace --bins)"
cargo build --workspace --bins --quiet

step "build the local control plane tools (skipped when current)"
bash tests/control-plane/build.sh

step "sandbox: examples/seed/relay.yaml"
./target/debug/kwire sandbox up -f "${1:-examples/seed/relay.yaml}" --namespace seed --check

echo "main job done in $(( $(date +%s) - began ))s"
