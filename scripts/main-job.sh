#!/usr/bin/env bash
# kwire's main job on this one machine: the seed's relay A -> B -> C, end to end.
#
#   bash scripts/main-job.sh [TOPOLOGY.yaml...]   (default: examples/seed/relay.yaml)
#
# Installs what is missing, builds kwire and the local Kubernetes control plane
# (etcd, kube-apiserver, kubectl, helm from their Go modules; the first build
# takes about ten minutes on 2 cores, later runs skip it), then runs the
# sandbox: a real kube-apiserver, the chart installed with helm, one network
# namespace per node, the operator and a node daemon per namespace, the
# manifests applied with kubectl, and pings through every link and route
# (`kwire sandbox up --check`). Leaves nothing behind; if it is killed,
# `kwire sandbox down` removes what it left. Needs root (network namespaces
# and WireGuard devices).
set -euo pipefail
cd "$(dirname "$0")/.."

began=$SECONDS
step_began=$SECONDS
step_name=
clock() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
finish_step() {
  [[ -z "$step_name" ]] || printf '    %s: %s\n' "$step_name" "$(clock $((SECONDS - step_began)))"
}
step() {
  finish_step
  step_name="$1" step_began=$SECONDS
  printf '==> [%s] %s\n' "$(clock $((SECONDS - began)))" "$1"
}

step "dependencies (apt packages, Rust components; skipped when installed)"
bash scripts/install-deps.sh

# The Go build of the control plane and the cargo build of kwire run side by
# side: each has stretches (linking, one big package or crate compiling alone)
# that leave a core idle for the other.
step "build the control plane (etcd, kube-apiserver, kubectl, helm) and kwire, side by side"
go_log="$(mktemp -t kwire-control-plane-build.XXXXXX)"
bash tests/control-plane/build.sh etcd kube-apiserver kubectl helm >"$go_log" 2>&1 &
go_build=$!
trap 'kill "$go_build" 2>/dev/null || true' EXIT
# Its progress lines as they come; Go's own output stays in the log.
tail -n +1 -f --pid="$go_build" "$go_log" | grep --line-buffered '^\[build' &
cargo build -p kwire-cli -p kwire-operator -p kwire-node-daemon --bins
cargo_done=$SECONDS
last_note=$SECONDS
while kill -0 "$go_build" 2>/dev/null; do
  if ((SECONDS - last_note >= 60)); then
    printf '    still building the control plane (%s so far; cold, it takes about 10 minutes)\n' \
      "$(clock $((SECONDS - step_began)))"
    last_note=$SECONDS
  fi
  sleep 1
done
if ! wait "$go_build"; then
  tail -n 40 "$go_log" >&2
  echo "error: building the control plane failed; the whole log is $go_log" >&2
  exit 1
fi
trap - EXIT
rm -f "$go_log"
printf '    (kwire built after %s)\n' "$(clock $((cargo_done - step_began)))"

step "sandbox: ${*:-examples/seed/relay.yaml}"
files=()
for f in "${@:-examples/seed/relay.yaml}"; do files+=(-f "$f"); done
./target/debug/kwire sandbox up "${files[@]}" --namespace seed --check --without-controller-manager
finish_step
step_name=
echo "main job done in $(clock $((SECONDS - began)))"
