#!/usr/bin/env bash
# Installs what kwire's tests and main job need on a fresh Debian machine of this
# kind (Rust, Go and Python come with the machine). Safe to run again: it only
# installs what is missing.
set -euo pipefail

packages=(wireguard-go wireguard-tools iproute2 iputils-ping openssl util-linux procps socat jq
  # kubelet nodes (`kwire sandbox up --nodes kubelet`, the kubelet test): the
  # container runtime, CNI plugins, and what kube-proxy programs.
  containerd runc containernetworking-plugins iptables conntrack
  # scripts/build-images.sh: root file systems from Debian's packages, packed
  # as OCI image archives.
  mmdebstrap umoci skopeo)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> apt-get install ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: installing ${missing[*]} needs root (kwire's network tests need root anyway)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The validator the chart tests run: Kubernetes' own schemas.
for tool in kubernetes-validate:kubernetes-validate; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
    echo "==> pip install ${tool#*:}"
    python3 -m pip install --quiet --disable-pip-version-check "${tool#*:}"
  fi
done

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    echo "==> rustup component add $component"
    rustup component add "$component"
  fi
done
