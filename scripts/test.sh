#!/usr/bin/env bash
# Every test of kwire, as CI runs it: formatting, lints, the local control plane
# tools, then all unit, property, API-server and network-namespace tests.
# Network tests need root (they create network namespaces and WireGuard devices).
set -euo pipefail
cd "$(dirname "$0")/.."
# A test that cannot run here (no root, a missing tool) fails instead of printing
# SKIPPED and passing: this command is what CI runs, and a green run must mean the
# end-to-end tests ran.
export KWIRE_REQUIRE_E2E=1

step() { printf '\n==> %s\n' "$*"; }

step "dependencies"
bash scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "local control plane tools (etcd, kube-apiserver, kube-controller-manager, kubectl, kubelet, kube-scheduler, kube-proxy, helm)"
bash tests/control-plane/build.sh

step "container images as OCI archives (tests/tests/images.rs reads them)"
bash scripts/build-images.sh

step "cargo build --workspace --bins (end-to-end tests run the binaries)"
cargo build --workspace --bins --quiet

step "cargo test --workspace"
cargo test --workspace --no-fail-fast
