#!/usr/bin/env bash
# Used by up.sh when KWIRE_CP_WATCH_PID is set: waits until process PID has
# exited (or is a zombie), then runs down.sh RUN_DIR.
#
#   watchdog.sh PID START_TIME RUN_DIR
#
# START_TIME is field 22 of /proc/PID/stat when the watch began: it tells the
# watched process from a later one that got the same pid.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pid="$1" start_time="$2" run="$3"

# Succeeds while the watched process runs.
watched_runs() {
  local stat rest
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  # Fields after "pid (comm) ", comm may contain spaces: state is field 3,
  # the start time field 22.
  rest="${stat##*) }"
  read -r -a fields <<<"$rest"
  [[ "${fields[0]}" != Z && "${fields[19]}" == "$start_time" ]]
}

while watched_runs; do sleep 0.5; done
echo "watchdog: pid $pid has exited; stopping the control plane in $run"
exec "$here/down.sh" "$run"
