#!/usr/bin/env bash
# Regenerates the go.mod/go.sum files of the three Go modules that pin the
# test control plane's binaries, from the versions in versions.sh:
#
#   ./go.mod         kwire.dev/tests/control-plane        k8s.io/kubernetes
#   ./etcd/go.mod    kwire.dev/tests/control-plane/etcd   go.etcd.io/etcd/server/v3
#   ./helm/go.mod    kwire.dev/tests/control-plane/helm   helm.sh/helm/v4
#
# Why three modules and not one: Go's minimal version selection would raise
# every shared dependency (grpc, otel, protobuf, k8s.io/*) to the highest
# version any of the three asks for, so etcd or helm would be built with a
# dependency graph its upstream never released or tested. Separate modules
# keep each binary on exactly the versions its own go.mod pins.
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api,
# k8s.io/client-go, ...) at v0.0.0 and resolves them through replace
# directives to ./staging/..., which only apply inside its own repository. The
# list of those modules is read from k8s.io/kubernetes's published go.mod and
# each is replaced here by its published v0.<minor>.<patch> release.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.sh disable=SC1091
source "$here/versions.sh"

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-$CONTROL_PLANE_GOTOOLCHAIN}"
export GOFLAGS="${GOFLAGS:-} -mod=mod"

log() { printf '[regen-go-mod %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# build.sh takes the same lock: no build reads a half-written go.mod.
mkdir -p "$here/bin"
exec 9>"$here/bin/.build.lock"
if ! flock -n 9; then
  log "build.sh is running; waiting for it"
  flock 9
fi

# Prints the path of the downloaded go.mod of module $1 at version $2.
upstream_go_mod() {
  "$GO" mod download -json "$1@$2" | jq -r '.GoMod // error("no GoMod for \(.Path)@\(.Version): \(.Error // "?")")'
}

# Prints "go <version>" and "godebug <k>=<v>" settings of an upstream go.mod.
upstream_go_settings() {
  "$GO" mod edit -json "$1" | jq -r '"go \(.Go)", (.GoDebug // [] | .[] | "godebug \(.Key)=\(.Value)")'
}

# Starts a fresh go.mod in $1 for module path $2 with the go/godebug settings
# of the upstream go.mod $3 (a dependency's godebug lines only take effect
# when written into the main module).
fresh_module() {
  local dir="$1" path="$2" upstream="$3" kind value
  rm -f "$dir/go.mod" "$dir/go.sum"
  (cd "$dir" && "$GO" mod init "$path" >/dev/null 2>&1)
  while read -r kind value; do
    case "$kind" in
      go) (cd "$dir" && "$GO" mod edit -go="$value") ;;
      godebug) (cd "$dir" && "$GO" mod edit -godebug="$value") ;;
    esac
  done < <(upstream_go_settings "$upstream")
}

regen_kubernetes() {
  local dir="$here" module="k8s.io/kubernetes" version="v$KUBERNETES_VERSION"
  local staging_version="v0.${KUBERNETES_VERSION#*.}" upstream mod count=0
  log "k8s.io/kubernetes $version (staging modules at $staging_version)"
  upstream="$(upstream_go_mod "$module" "$version")"
  fresh_module "$dir" kwire.dev/tests/control-plane "$upstream"
  # Every replace of k8s.io/kubernetes whose target is a local directory
  # (./staging/src/k8s.io/...) is a staging module.
  while read -r mod; do
    (cd "$dir" && "$GO" mod edit -replace "$mod=$mod@$staging_version")
    count=$((count + 1))
  done < <("$GO" mod edit -json "$upstream" |
    jq -r '.Replace // [] | .[] | select(.New.Path | startswith("./") or startswith("../")) | .Old.Path')
  log "  $count staging modules replaced by their $staging_version releases"
  (cd "$dir" && "$GO" mod edit -require "$module@$version")
  (cd "$dir" && "$GO" get -tool \
    "$module/cmd/kube-apiserver@$version" \
    "$module/cmd/kube-controller-manager@$version" \
    "$module/cmd/kubectl@$version" \
    "$module/cmd/kubelet@$version" \
    "$module/cmd/kube-scheduler@$version" \
    "$module/cmd/kube-proxy@$version")
  (cd "$dir" && "$GO" mod tidy)
}

regen_etcd() {
  local dir="$here/etcd" module="go.etcd.io/etcd/server/v3" version="v$ETCD_VERSION" upstream
  log "$module $version"
  upstream="$(upstream_go_mod "$module" "$version")"
  fresh_module "$dir" kwire.dev/tests/control-plane/etcd "$upstream"
  (cd "$dir" && "$GO" get "$module@$version" && "$GO" mod tidy)
}

regen_helm() {
  local dir="$here/helm" module="helm.sh/helm/v4" version="v$HELM_VERSION" upstream
  log "$module $version"
  upstream="$(upstream_go_mod "$module" "$version")"
  fresh_module "$dir" kwire.dev/tests/control-plane/helm "$upstream"
  (cd "$dir" && "$GO" get -tool "$module/cmd/helm@$version" && "$GO" mod tidy)
}

# Warns about replace directives of an upstream go.mod that a dependent
# module does not inherit and that were not handled above.
check_upstream_replaces() {
  local upstream
  upstream="$(upstream_go_mod "$1" "$2")"
  "$GO" mod edit -json "$upstream" | jq -r --arg m "$1" \
    '.Replace // [] | .[] | select((.New.Path | startswith(".")) | not) | "warning: \($m) replaces \(.Old.Path) => \(.New.Path) \(.New.Version // "")"' >&2
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(kubernetes etcd helm)
for t in "${targets[@]}"; do
  case "$t" in
    kubernetes) regen_kubernetes; check_upstream_replaces k8s.io/kubernetes "v$KUBERNETES_VERSION" ;;
    etcd) regen_etcd; check_upstream_replaces go.etcd.io/etcd/server/v3 "v$ETCD_VERSION" ;;
    helm) regen_helm; check_upstream_replaces helm.sh/helm/v4 "v$HELM_VERSION" ;;
    *) echo "usage: $0 [kubernetes|etcd|helm]..." >&2; exit 2 ;;
  esac
done
log "done; now run ./build.sh"
