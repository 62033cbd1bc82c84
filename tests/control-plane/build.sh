#!/usr/bin/env bash
# Builds the local test control plane's binaries into ./bin:
#   etcd                      go.etcd.io/etcd/server/v3   (module ./etcd)
#   kube-apiserver            k8s.io/kubernetes           (module .)
#   kube-controller-manager   k8s.io/kubernetes           (module .)
#   kubectl                   k8s.io/kubernetes           (module .)
#   kubelet, kube-scheduler,  k8s.io/kubernetes           (module .)
#   kube-proxy                (the kubelet nodes of `kwire sandbox up --nodes kubelet`)
#   helm                      helm.sh/helm/v4             (module ./helm)
#
#   tests/control-plane/build.sh [NAME...]     (default: all eight)
#
# The binaries of one module are built by one go build.
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

# current NAME MODULE_DIR: whether bin/NAME exists and was built from what is
# there now (its stamp matches).
current() {
  [[ -z "${FORCE:-}" && -x "$bin/$1" && -f "$bin/.$1.stamp" &&
    "$(cat "$bin/.$1.stamp")" == "$(stamp_of "$2")" ]]
}

# build MODULE_DIR LDFLAGS_FUNCTION NAME=PACKAGE...: one go build for the given
# binaries of one module, so that its packages compile once and one binary
# links while the next one's packages compile.
build() {
  local dir="$1" ldflags="$2" stamp start tmp names=() packages=() pair
  shift 2
  stamp="$(stamp_of "$dir")"
  for pair in "$@"; do
    names+=("${pair%%=*}")
    packages+=("${pair#*=}")
    rm -f "$bin/.${pair%%=*}.stamp"
  done
  log "${names[*]}: building ${packages[*]}"
  start=$SECONDS
  tmp="$(mktemp -d "$bin/.tmp.XXXXXX")"
  # -dwarf=false: -ldflags=-w drops the debug information at link time anyway;
  # not generating it saves compile time (stack traces do not need it).
  if ! (cd "$dir" && "$GO" build -trimpath -gcflags=all=-dwarf=false \
    -ldflags="$("$ldflags")" -o "$tmp/" "${packages[@]}"); then
    rm -rf "$tmp"
    return 1
  fi
  for pair in "$@"; do
    # go build names each binary after the last element of its package path.
    mv -f "$tmp/$(basename "${pair#*=}")" "$bin/${pair%%=*}"
    echo "$stamp" >"$bin/.${pair%%=*}.stamp"
  done
  rm -rf "$tmp"
  log "${names[*]}: built in $((SECONDS - start))s"
  built=$((built + ${#names[@]}))
}

known=(etcd kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler kube-proxy helm)
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${known[@]}")
etcd=() kube=() helm=()
for name in "${names[@]}"; do
  case "$name" in
    etcd) current etcd "$here/etcd" || etcd=(etcd=./cmd/etcd) ;;
    kube-apiserver | kube-controller-manager | kubectl | kubelet | kube-scheduler | kube-proxy)
      current "$name" "$here" || kube+=("$name=k8s.io/kubernetes/cmd/$name") ;;
    helm) current helm "$here/helm" || helm=(helm=helm.sh/helm/v4/cmd/helm) ;;
    *)
      echo "build.sh: unknown binary '$name' (${known[*]})" >&2
      exit 2
      ;;
  esac
done
total=$SECONDS
built=0
# One go build at a time: each already keeps every core busy.
((${#etcd[@]} == 0)) || build "$here/etcd" etcd_ldflags "${etcd[@]}"
((${#kube[@]} == 0)) || build "$here" kube_ldflags "${kube[@]}"
((${#helm[@]} == 0)) || build "$here/helm" helm_ldflags "${helm[@]}"
if [[ -z "${QUIET:-}" || $built -gt 0 ]]; then
  log "done in $((SECONDS - total))s ($built built, the rest up to date): $bin"
fi
