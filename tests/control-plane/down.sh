#!/usr/bin/env bash
# Stops a control plane started by up.sh: kills exactly the processes listed
# in RUN_DIR/pids (and its watchdog), waits for them to exit, then removes
# RUN_DIR.
#
#   tests/control-plane/down.sh [--keep] [RUN_DIR]   (default: <repo>/.run/control-plane)
#
# --keep leaves RUN_DIR (logs, data) in place.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
keep=
if [[ "${1:-}" == --keep ]]; then
  keep=1
  shift
fi
run="${1:-$repo/.run/control-plane}"

log() { printf '[down %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ ! -d "$run" ]]; then
  log "$run does not exist: nothing to stop"
  exit 0
fi
run="$(cd "$run" && pwd)"
if [[ ! -f "$run/pids" ]]; then
  log "no $run/pids: not a control plane run folder, leaving it alone"
  exit 1
fi

# alive PID: the process exists and is not a zombie.
alive() {
  local state
  state="$(sed -E 's/^[0-9]+ \(.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ "$state" != Z ]]
}

# ours NAME PID: PID still runs our binary NAME (not a recycled pid).
ours() {
  [[ "$(readlink "/proc/$2/exe" 2>/dev/null)" == "$(readlink -f "$here/bin/$1")" ]]
}

# The watchdog first, unless it is the one running this script.
if [[ -f "$run/watchdog.pid" ]]; then
  wd="$(cat "$run/watchdog.pid")"
  if [[ "$wd" != "$$" ]] && alive "$wd" &&
    grep -qa watchdog.sh "/proc/$wd/cmdline" 2>/dev/null; then
    kill "$wd" 2>/dev/null || true
  fi
fi

# Reverse start order: controller manager, apiserver, then etcd.
mapfile -t entries < <(tac "$run/pids")
for entry in "${entries[@]}"; do
  read -r name pid <<<"$entry"
  if ! alive "$pid"; then
    log "$name (pid $pid) already gone"
    continue
  fi
  if ! ours "$name" "$pid"; then
    log "pid $pid is no longer $name: not touching it"
    continue
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 15))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    log "$name (pid $pid) ignored SIGTERM for 15s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
  fi
  log "$name (pid $pid) stopped"
done

if [[ -n "$keep" ]]; then
  log "kept $run"
else
  rm -rf "$run"
  log "removed $run"
  # The default folder's parent, .run/, when nothing else is in it.
  [[ $# -gt 0 ]] || rmdir "$repo/.run" 2>/dev/null || true
fi
