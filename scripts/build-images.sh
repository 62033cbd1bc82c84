#!/usr/bin/env bash
# Builds kwire's container images on this machine as OCI image archives, with
# no container engine and no registry. This is the release path.
#
#   bash scripts/build-images.sh [--out DIR] [--fresh]
#
# Writes, for the chart's appVersion V (charts/kwire/Chart.yaml):
#
#   DIR/kwire-operator-V.oci.tar       docker.io/kwire/operator:V
#   DIR/kwire-node-V.oci.tar           docker.io/kwire/node:V
#   DIR/kwire-sandbox-pause-V.oci.tar  docker.io/kwire/sandbox-pause:V
#
# DIR defaults to target/images ($CARGO_TARGET_DIR/images if that is set).
# Each archive is a tar of one OCI image layout. Its index names the image
# twice, as containerd's own `ctr export` does: `io.containerd.image.name` (the full name, which `ctr images import`
# uses as is) and `org.opencontainers.image.ref.name` (the tag, which
# `skopeo copy oci-archive:FILE:V ...` selects). See docs/install.md.
#
# How:
#   1. `cargo build --release` of kwire-operator and kwire-node.
#   2. One root file system per image from Debian's packages of the host's
#      release, with `mmdebstrap --variant=extract` (packages unpacked, no
#      maintainer scripts, no dpkg or apt in the image), the three in parallel.
#      Documentation, manual pages, locales and glibc's iconv modules are
#      dropped, copyright files kept; each package's control data goes to
#      /var/lib/dpkg/status.d/ (as in distroless images) so scanners still
#      see the package versions. Files keep the packages' time stamps; what
#      the build itself creates gets the newest of them.
#      The apt sources are the host's (/etc/apt/sources.list.d/debian.sources
#      or /etc/apt/sources.list; KWIRE_DEBIAN_SOURCES=FILE overrides them).
#      These root file systems are cached under target/image-build/ for a
#      day, keyed on the package lists, the sources and this script;
#      `--fresh` rebuilds them.
#   3. `umoci`: a layer of the Debian file system, a layer of the binary, the
#      image config (entrypoint, user, PATH, labels), then a tar of the
#      layout. The binary's layer, the config and the tar use
#      SOURCE_DATE_EPOCH (default: the last commit's time). So the same
#      inputs give the same image digests, and the Debian layer stays the
#      same blob from one commit to the next while the packages do not change.
#
# The images:
#   operator       the binary, libc6 and libgcc-s1 (what `ldd` lists; TLS is
#                  rustls, and the in-cluster CA comes from the ServiceAccount
#                  mount, so no CA bundle). User 65532:65532.
#   node           the binary plus Debian's wireguard-go, wireguard-tools (wg)
#                  and iproute2 (ip). Root: the chart grants it only NET_ADMIN.
#   sandbox-pause  NOT a release image. The pod-sandbox ("pause") image of the
#                  local kubelet nodes of `kwire sandbox up --nodes kubelet`:
#                  no registry here, so containerd's sandbox_image must be a
#                  local image. Debian's busybox-static alone; its shell waits
#                  forever and exits 0 on SIGTERM or SIGINT. User 65535.
#
# Needs root (mmdebstrap's root mode, file ownership in the layers), and
# mmdebstrap, umoci, jq from Debian (scripts/install-deps.sh installs them).
set -euo pipefail
export LC_ALL=C
script=$(realpath "$0")
cd "$(dirname "$script")/.."

began=$(date +%s)
step() { printf '==> [%3ss] %s\n' "$(($(date +%s) - began))" "$*"; }
die() {
  printf 'build-images: %s\n' "$*" >&2
  exit 1
}

out=""
fresh=0
while (($#)); do
  case $1 in
  --out)
    (($# >= 2)) || die "--out needs a directory"
    out=$2
    shift 2
    ;;
  --out=*)
    out=${1#--out=}
    shift
    ;;
  --fresh)
    fresh=1
    shift
    ;;
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$script"
    exit 0
    ;;
  *) die "unknown argument $1 (try --help)" ;;
  esac
done

[[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap's root mode and root-owned files in the layers)"
for tool in cargo mmdebstrap umoci jq dpkg-deb git; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/install-deps.sh"
done

# What the images are made of ------------------------------------------------

version=$(sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}[[:space:]]*$/\1/p' charts/kwire/Chart.yaml)
[[ -n $version ]] || die "no appVersion in charts/kwire/Chart.yaml"
source_url=$(sed -n 's/^repository[[:space:]]*=[[:space:]]*"\(.*\)"$/\1/p' Cargo.toml | head -n1)
revision=$(git rev-parse HEAD)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

# The binaries link against the host's glibc: the images must carry the same
# Debian release.
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ -n $suite ]] || die "cannot tell the host's Debian release from /etc/os-release"
if [[ -n ${KWIRE_DEBIAN_SOURCES:-} ]]; then
  sources=$KWIRE_DEBIAN_SOURCES
elif [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  sources=/etc/apt/sources.list.d/debian.sources
elif grep -qs '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list; then
  sources=/etc/apt/sources.list
else
  sources="" # mmdebstrap's default: deb.debian.org with updates and security
fi

target_dir=${CARGO_TARGET_DIR:-target}
out=${out:-$target_dir/images}
work=$target_dir/image-build
mkdir -p "$work" "$out"
work=$(cd "$work" && pwd)
out=$(cd "$out" && pwd)

readonly PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# name | Debian packages | binary | user | exposed port
images=(
  "operator|libc6,libgcc-s1|kwire-operator|65532:65532|8080/tcp"
  "node|libc6,libgcc-s1,wireguard-go,wireguard-tools,iproute2|kwire-node|0:0|9090/tcp"
  "sandbox-pause|busybox-static||65535:65535|"
)
# The pause image's whole program. PID 1 ignores signals it has no handler
# for, hence the trap; `wait` returns as soon as one arrives.
readonly PAUSE_SCRIPT="trap 'exit 0' TERM INT; while :; do sleep 2147483647 & wait \$!; done"

# 1. Binaries ----------------------------------------------------------------

step "cargo build --release --locked (kwire-operator, kwire-node)"
cargo build --release --locked --quiet -p kwire-operator -p kwire-node-daemon \
  --bin kwire-operator --bin kwire-node
bin_dir=$target_dir/release

# 2. Root file systems ---------------------------------------------------------

# mmdebstrap's extract hook ($1 is the root file system), run while the
# downloaded packages are still in its apt cache: records each package's
# control data, then drops what a container does not need. The iconv modules
# (gconv) go too: nothing in these images converts character sets.
extract_hook=$work/extract-hook
cat >"$extract_hook" <<'HOOK'
#!/bin/sh
set -eu
root=$1
mkdir -p "$root/var/lib/dpkg/status.d"
for deb in "$root"/var/cache/apt/archives/*.deb; do
  pkg=$(dpkg-deb -f "$deb" Package)
  { dpkg-deb -f "$deb"; echo "Status: install ok installed"; } >"$root/var/lib/dpkg/status.d/$pkg"
done
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/locale" \
  "$root/usr/share/lintian" "$root/usr/share/bash-completion" \
  "$root/usr/lib/x86_64-linux-gnu/gconv"
HOOK
chmod 0755 "$extract_hook"

# Removes what mmdebstrap itself put there (device nodes, the build host's
# resolv.conf and hostname, apt's state) and gives the images the same minimal
# users (root, and nonroot 65532 for the operator).
tidy_rootfs() {
  local root=$1
  rm -rf "$root"/dev/* "$root/etc/apt" "$root/etc/dpkg" "$root/var/cache/apt" \
    "$root/var/lib/apt" "$root/var/log/apt" "$root/etc/resolv.conf" "$root/etc/hostname" \
    "$root/etc/fstab"
  find "$root/etc" "$root/var" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  mkdir -p "$root/etc"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$root/etc/group"
}

rootfs_key() { # name packages
  {
    printf '%s\n' "$1" "$2" "$suite"
    [[ -z $sources ]] || cat "$sources"
    cat "$script"
  } | sha256sum | cut -d' ' -f1
}

pids=()
names=()
for spec in "${images[@]}"; do
  IFS='|' read -r name packages _ <<<"$spec"
  cache=$work/rootfs-$name
  key=$(rootfs_key "$name" "$packages")
  if ((!fresh)) && [[ -f $cache.key && $(cat "$cache.key") == "$key" ]] &&
    [[ -n $(find "$cache.key" -mmin -1440) ]]; then
    step "$name: Debian root file system from the cache ($cache, less than a day old)"
    continue
  fi
  step "$name: mmdebstrap --variant=extract $suite: $packages"
  rm -rf "$cache" "$cache.key" "$cache.new"
  (
    started=$(date +%s)
    mmdebstrap --quiet --variant=extract --format=directory --include="$packages" \
      --extract-hook="$extract_hook" "$suite" "$cache.new" ${sources:+"$sources"} \
      >"$work/mmdebstrap-$name.log" 2>&1
    tidy_rootfs "$cache.new"
    if [[ $name == sandbox-pause ]]; then
      # busybox alone: no users, no libraries, nothing else.
      find "$cache.new" -mindepth 1 -maxdepth 1 ! -name bin ! -name usr ! -name var -exec rm -rf {} +
    fi
    # What came out of the packages keeps its time stamps; what was made here
    # (folders, status.d, passwd) gets the newest of them. So the Debian
    # layer depends on the packages only, not on the commit or the day, and
    # stays the same blob from one release to the next.
    newest=$(find "$cache.new" ! -newermt "@$started" -printf '%T@\n' | sort -n | tail -n1)
    [[ -n $newest ]] || die "$name: no file from a package in $cache.new"
    find "$cache.new" -newermt "@${newest%.*}" -exec touch --no-dereference --date="@${newest%.*}" {} +
    mv "$cache.new" "$cache"
    echo "$key" >"$cache.key"
  ) &
  pids+=($!)
  names+=("$name")
done
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    cat "$work/mmdebstrap-${names[$i]}.log" >&2
    die "mmdebstrap failed for ${names[$i]} (log above, in $work/mmdebstrap-${names[$i]}.log)"
  fi
done

# 3. Images ------------------------------------------------------------------

# Clamps every time stamp under $1 to SOURCE_DATE_EPOCH.
clamp_mtimes() {
  find "$1" -newermt "@$SOURCE_DATE_EPOCH" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
}

umoci_history=(--history.created="$created" --history.author=kwire)

results=()
for spec in "${images[@]}"; do
  IFS='|' read -r name packages binary user port <<<"$spec"
  ref=docker.io/kwire/$name:$version
  archive=$out/kwire-$name-$version.oci.tar
  step "$name: umoci: $ref"
  stage=$work/stage-$name
  rm -rf "$stage"
  mkdir -p "$stage"
  layout=$stage/layout

  cp -a "$work/rootfs-$name" "$stage/rootfs"

  umoci init --layout "$layout"
  umoci new --image "$layout:$version"
  umoci insert --image "$layout:$version" "${umoci_history[@]}" \
    --history.created_by="mmdebstrap --variant=extract $suite: $packages" "$stage/rootfs" /

  config=(
    --config.env="$PATH_ENV"
    --config.label=org.opencontainers.image.version="$version"
    --config.label=org.opencontainers.image.source="$source_url"
    --config.label=org.opencontainers.image.revision="$revision"
    --config.label=org.opencontainers.image.title="kwire-$name"
  )
  if [[ -n $binary ]]; then
    mkdir -p "$stage/bin/usr/local/bin"
    install -m 0755 "$bin_dir/$binary" "$stage/bin/usr/local/bin/$binary"
    clamp_mtimes "$stage/bin"
    umoci insert --image "$layout:$version" "${umoci_history[@]}" \
      --history.created_by="cargo build --release --locked --bin $binary" "$stage/bin" /
    config+=(--config.entrypoint="/usr/local/bin/$binary" --config.exposedports="$port")
  else
    config+=(--config.entrypoint=/bin/busybox --config.entrypoint=sh
      --config.entrypoint=-c --config.entrypoint="$PAUSE_SCRIPT")
  fi
  config+=(--config.user="$user")
  umoci config --image "$layout:$version" "${umoci_history[@]}" \
    --history.created_by="umoci config" --created="$created" "${config[@]}"
  umoci gc --layout "$layout"

  # Name the image for containerd as well as by its tag.
  jq -c --arg name "$ref" '.manifests[0].annotations["io.containerd.image.name"] = $name' \
    "$layout/index.json" >"$layout/index.json.new"
  mv "$layout/index.json.new" "$layout/index.json"
  tar --create --file "$archive.new" --directory "$layout" --sort=name --format=gnu \
    --owner=0 --group=0 --numeric-owner --mode=a+rX --mtime="@$SOURCE_DATE_EPOCH" oci-layout index.json blobs
  mv "$archive.new" "$archive"

  manifest=$(jq -r '.manifests[0].digest' "$layout/index.json")
  unpacked=$(du -sb --apparent-size "$stage/rootfs" ${binary:+"$stage/bin"} | awk '{s += $1} END {print s}')
  results+=("$(printf '%-40s %-38s %7.1f MB %7.1f MB  %s' "$(basename "$archive")" "$ref" \
    "$(awk -v b="$(stat -c %s "$archive")" 'BEGIN {print b / 1e6}')" \
    "$(awk -v b="$unpacked" 'BEGIN {print b / 1e6}')" "${manifest:7:12}")")
  rm -rf "$stage"
done

step "done in $(($(date +%s) - began)) s: $out"
printf '%-40s %-38s %10s %10s  %s\n' archive image archive unpacked manifest
printf '%s\n' "${results[@]}"
