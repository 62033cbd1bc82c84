#!/usr/bin/env bash
# Builds the local test control plane's binaries into ./bin:
#   etcd                      go.etcd.io/etcd/server/v3   (module ./etcd)
#   kube-apiserver            k8s.io/kubernetes           (module .)
#   kube-controller-manager   k8s.io/kubernetes           (module .)
#   kubectl                   k8s.io/kubernetes           (module .)
#   helm                      helm.sh/helm/v4             (module ./helm)
#
#   tests/control-plane/build.sh [NAME...]     (default: all five)
#
# Versions are in versions.sh; the checked-in go.mod/go.sum files pin every
# dependency (regenerate them with regen-go-mod.sh). A binary is rebuilt only
# when it is missing or its stamp changed: a hash of versions.sh, this
# script, its module's go.mod/go.sum/sources and the Go version. FORCE=1
# rebuilds anyway; QUIET=1 prints nothing when all is up to date;
# GO=/path/to/go picks the Go command. Concurrent runs (e.g. two test
# binaries) wait for each other.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.sh disable=SC1091
source "$here/versions.sh"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
if ! command -v "$GO" >/dev/null; then
  echo "build.sh: no Go toolchain found (install Go >= 1.26 or set GO=/path/to/go)" >&2
  exit 1
fi
export GOTOOLCHAIN="${GOTOOLCHAIN:-$CONTROL_PLANE_GOTOOLCHAIN}"
# Static binaries, as upstream releases them; needs no C compiler either.
export CGO_ENABLED=0
# The checked-in go.mod/go.sum are authoritative: fail rather than edit
# them. No VCS stamping: these are other projects' code.
export GOFLAGS="-mod=readonly -buildvcs=false"
bin="$here/bin"
mkdir -p "$bin"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

exec 9>"$bin/.build.lock"
if ! flock -n 9; then
  log "another build.sh is running; waiting for it"
  flock 9
fi

go_version="$("$GO" version)"

# The publication time of a release on the module proxy (reproducible,
# unlike the current time); used as the Kubernetes binaries' build date.
release_time() {
  local info
  info="$(cd "$here" && "$GO" mod download -json "$1@$2" | sed -nE 's/^\s*"Info": "(.*)",?$/\1/p')"
  [[ -f "$info" ]] && sed -nE 's/.*"Time":"([^".]*)(\.[0-9]+)?Z".*/\1Z/p' "$info"
}

kube_ldflags() {
  local date major="${KUBERNETES_VERSION%%.*}" rest="${KUBERNETES_VERSION#*.}" kv key value
  local minor="${rest%%.*}" flags=(-s -w)
  date="$(release_time k8s.io/kubernetes "v$KUBERNETES_VERSION")"
  # The version variables Kubernetes' own hack/lib/version.sh sets, so that
  # /version, `kubectl version` and helm's kubeVersion checks see v1.x.y
  # rather than v0.0.0-master.
  for kv in "gitVersion=v$KUBERNETES_VERSION" "gitMajor=$major" "gitMinor=$minor" \
    "gitTreeState=clean" "buildDate=${date:-1970-01-01T00:00:00Z}"; do
    key="${kv%%=*}" value="${kv#*=}"
    flags+=("-X=k8s.io/client-go/pkg/version.$key=$value" "-X=k8s.io/component-base/version.$key=$value")
  done
  echo "${flags[*]}"
}

helm_ldflags() {
  local p=helm.sh/helm/v4/internal/version
  # As helm's Makefile does for a release tag.
  echo "-s -w -X=$p.version=v$HELM_VERSION -X=$p.metadata= -X=$p.gitTreeState=clean"
}

etcd_ldflags() { echo "-s -w"; }

# stamp_of MODULE_DIR: hash of everything a binary of that module depends on.
stamp_of() {
  {
    echo "$go_version"
    cat "$here/versions.sh" "${BASH_SOURCE[0]}" "$1/go.mod" "$1/go.sum"
    if [[ -d "$1/cmd" ]]; then find "$1/cmd" -type f -name '*.go' -print0 | sort -z | xargs -0 cat; fi
  } | sha256sum | cut -d' ' -f1
}

# build NAME MODULE_DIR PACKAGE LDFLAGS_FUNCTION
build() {
  local name="$1" dir="$2" pkg="$3" ldflags="$4" stamp start
  stamp="$(stamp_of "$dir")"
  if [[ -z "${FORCE:-}" && -x "$bin/$name" && -f "$bin/.$name.stamp" &&
    "$(cat "$bin/.$name.stamp")" == "$stamp" ]]; then
    [[ -n "${QUIET:-}" ]] || log "$name: up to date"
    return
  fi
  log "$name: building $pkg"
  start=$SECONDS
  rm -f "$bin/.$name.stamp"
  (cd "$dir" && "$GO" build -trimpath -ldflags="$("$ldflags")" -o "$bin/$name.tmp" "$pkg")
  mv -f "$bin/$name.tmp" "$bin/$name"
  echo "$stamp" >"$bin/.$name.stamp"
  log "$name: built in $((SECONDS - start))s"
  built=$((built + 1))
}

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(etcd kube-apiserver kube-controller-manager kubectl helm)
total=$SECONDS
built=0
# One go build at a time: each already keeps every core busy, and the shared
# build cache lets the Kubernetes binaries reuse each other's packages.
for name in "${names[@]}"; do
  case "$name" in
    etcd) build etcd "$here/etcd" ./cmd/etcd etcd_ldflags ;;
    kube-apiserver | kube-controller-manager | kubectl)
      build "$name" "$here" "k8s.io/kubernetes/cmd/$name" kube_ldflags ;;
    helm) build helm "$here/helm" helm.sh/helm/v4/cmd/helm helm_ldflags ;;
    *)
      echo "build.sh: unknown binary '$name' (etcd kube-apiserver kube-controller-manager kubectl helm)" >&2
      exit 2
      ;;
  esac
done
if [[ -z "${QUIET:-}" || $built -gt 0 ]]; then
  log "done in $((SECONDS - total))s ($built built): $bin"
fi
