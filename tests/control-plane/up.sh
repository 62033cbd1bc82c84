#!/usr/bin/env bash
# Starts a local Kubernetes control plane for tests, on 127.0.0.1 only:
# etcd, kube-apiserver (token + RBAC auth, self-signed serving certificate,
# ServiceAccount token signing), kube-controller-manager (namespace, garbage
# collector, serviceaccount and token controllers, ...). No kubelet, no pods.
#
#   tests/control-plane/up.sh [RUN_DIR]      (default: <repo>/.run/control-plane)
#   kubectl --kubeconfig RUN_DIR/admin.kubeconfig get ns
#   tests/control-plane/down.sh [RUN_DIR]
#
# RUN_DIR receives the data, certificates, logs/, admin.kubeconfig, pids
# (the processes down.sh stops) and env (shell variables describing it).
# Binaries come from ./bin (run ./build.sh first).
#
# With KWIRE_CP_CONTROLLER_MANAGER=0, kube-controller-manager is not started
# (nor needed in ./bin): no garbage collection, namespace deletion or
# ServiceAccount token controllers, which a short-lived sandbox does without.
#
# With KWIRE_CP_WORKLOADS=1 (for kubelet nodes: `kwire sandbox up --nodes
# kubelet`), kube-controller-manager also runs the controllers that turn
# Deployments and DaemonSets into pods and keep Node conditions and taints,
# and kube-scheduler runs beside it.
#
# With KWIRE_CP_WATCH_PID=<pid> set (the Rust test fixture does this), a
# watchdog also runs that calls down.sh as soon as that process has exited:
# test binaries never run destructors for statics, and a killed test run must
# not leave a control plane behind either.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="$here/bin"
run="${1:-$repo/.run/control-plane}"
start_seconds=$SECONDS
started_ns=$(date +%s%N)

log() { printf '[up %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

controller_manager="${KWIRE_CP_CONTROLLER_MANAGER:-1}"
[[ "$controller_manager" == 0 || "$controller_manager" == 1 ]] ||
  die "KWIRE_CP_CONTROLLER_MANAGER must be 0 or 1, not '$controller_manager'"
workloads="${KWIRE_CP_WORKLOADS:-0}"
[[ "$workloads" == 0 || "$workloads" == 1 ]] ||
  die "KWIRE_CP_WORKLOADS must be 0 or 1, not '$workloads'"
[[ "$workloads" == 0 || "$controller_manager" == 1 ]] ||
  die "KWIRE_CP_WORKLOADS=1 needs kube-controller-manager (KWIRE_CP_CONTROLLER_MANAGER=1)"
needed=(etcd kube-apiserver kubectl)
[[ "$controller_manager" == 0 ]] || needed+=(kube-controller-manager)
[[ "$workloads" == 0 ]] || needed+=(kube-scheduler)
for b in "${needed[@]}"; do
  [[ -x "$bin/$b" ]] || die "$bin/$b is missing: run $here/build.sh ${needed[*]}"
done
command -v openssl >/dev/null || die "openssl is needed to make the certificates"
command -v curl >/dev/null || die "curl is needed to wait for readiness"

if [[ -f "$run/pids" ]]; then
  while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then
      die "$run is in use: $name (pid $pid) runs; stop it with $here/down.sh $run"
    fi
  done <"$run/pids"
  log "removing stale $run"
  rm -rf "$run"
fi
mkdir -p "$run"
run="$(cd "$run" && pwd)"
mkdir -p "$run/pki" "$run/logs"
: >"$run/pids"

# Stops what was started so far when a step below fails.
up_ok=
on_exit() {
  [[ -z "$up_ok" ]] || return 0
  log "start failed; logs in $run/logs (last lines below)"
  for f in "$run"/logs/*.log; do
    [[ -f "$f" && "$f" != */openssl.log ]] || continue
    printf -- '--- %s\n' "$f" >&2
    tail -n 15 "$f" >&2
  done
  "$here/down.sh" --keep "$run" || true
}
trap on_exit EXIT

# Started first, so that it also covers a test process that dies while
# this script is still starting things.
if [[ -n "${KWIRE_CP_WATCH_PID:-}" ]]; then
  watch_stat="$(cat "/proc/$KWIRE_CP_WATCH_PID/stat")" || die "no process $KWIRE_CP_WATCH_PID to watch"
  read -r -a watch_fields <<<"${watch_stat##*) }"
  setsid "$here/watchdog.sh" "$KWIRE_CP_WATCH_PID" "${watch_fields[19]}" "$run" \
    </dev/null >>"$run/logs/watchdog.log" 2>&1 &
  echo "$!" >"$run/watchdog.pid"
  log "watchdog (pid $!) stops it when pid $KWIRE_CP_WATCH_PID exits"
fi

# A TCP port on 127.0.0.1 that nothing uses, below the ephemeral port range
# so that outgoing connections do not take it in the meantime.
used_ports=" "
free_port() {
  local port tries=0
  while ((tries++ < 200)); do
    port=$((20000 + RANDOM % 12000))
    [[ "$used_ports" == *" $port "* ]] && continue
    if ! ss -Htan "( sport = :$port or dport = :$port )" | grep -q .; then
      used_ports+="$port "
      echo "$port"
      return
    fi
  done
  die "no free port found"
}

# Starts a daemon detached from this shell (own session, stdin closed) and
# records its pid.
# Gives up once the watched process (KWIRE_CP_WATCH_PID) is gone: its
# watchdog is stopping everything.
check_watched() {
  if [[ -n "${KWIRE_CP_WATCH_PID:-}" ]] && ! kill -0 "$KWIRE_CP_WATCH_PID" 2>/dev/null; then
    die "watched process $KWIRE_CP_WATCH_PID has exited; giving up"
  fi
}

start() {
  local name="$1"
  shift
  check_watched
  setsid "$@" </dev/null >"$run/logs/$name.log" 2>&1 &
  echo "$name $!" >>"$run/pids"
  log "$name started (pid $!)"
}

etcd_port=$(free_port)
etcd_peer_port=$(free_port)
api_port=$(free_port)
kcm_port=$(free_port)
scheduler_port=$(free_port)
api_url="https://127.0.0.1:$api_port"

# --- certificates, keys, tokens -------------------------------------------
pki="$run/pki"
openssl_quiet() { openssl "$@" 2>>"$run/logs/openssl.log"; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kwire-test-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl_quiet req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr"
cat >"$pki/apiserver.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1
EXT
openssl_quiet x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
  -CAcreateserial -days 3650 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt"
# ServiceAccount token signing key pair.
openssl_quiet genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
openssl_quiet pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
# Front-proxy (request header) CA and the apiserver's client certificate for
# aggregated API servers. Components with delegated authentication, such as
# kube-controller-manager, read this CA from the
# kube-system/extension-apiserver-authentication ConfigMap and complain
# endlessly when it is absent.
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kwire-test-front-proxy-ca" \
  -keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl_quiet req -newkey rsa:2048 -nodes -subj "/CN=front-proxy-client" \
  -keyout "$pki/front-proxy-client.key" -out "$pki/front-proxy-client.csr"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
  "extendedKeyUsage=clientAuth" >"$pki/front-proxy-client.ext"
openssl_quiet x509 -req -in "$pki/front-proxy-client.csr" -CA "$pki/front-proxy-ca.crt" \
  -CAkey "$pki/front-proxy-ca.key" -CAcreateserial -days 3650 \
  -extfile "$pki/front-proxy-client.ext" -out "$pki/front-proxy-client.crt"
chmod 600 "$pki"/*.key

admin_token="$(openssl rand -hex 32)"
kcm_token="$(openssl rand -hex 32)"
scheduler_token="$(openssl rand -hex 32)"
# token,user,uid,"groups"
cat >"$pki/tokens.csv" <<CSV
$admin_token,kwire-admin,kwire-admin,"system:masters"
$kcm_token,system:kube-controller-manager,system:kube-controller-manager
$scheduler_token,system:kube-scheduler,system:kube-scheduler
CSV
chmod 600 "$pki/tokens.csv"

# kubeconfig FILE USER TOKEN (the CA is embedded: the file works anywhere).
write_kubeconfig() {
  local ca
  ca="$(base64 -w0 <"$pki/ca.crt")"
  cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: kwire-test
  cluster:
    server: $api_url
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: kwire-test
  context:
    cluster: kwire-test
    user: $2
    namespace: default
current-context: kwire-test
KUBECONFIG
  chmod 600 "$1"
}
write_kubeconfig "$run/admin.kubeconfig" kwire-admin "$admin_token"
write_kubeconfig "$run/kube-controller-manager.kubeconfig" system:kube-controller-manager "$kcm_token"
write_kubeconfig "$run/kube-scheduler.kubeconfig" system:kube-scheduler "$scheduler_token"

# --- etcd --------------------------------------------------------------------
start etcd "$bin/etcd" \
  --name=kwire-test \
  --data-dir="$run/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" \
  --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster="kwire-test=http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster-state=new \
  --unsafe-no-fsync=true \
  --log-level=warn

# waits until URL ($2) answers "ok" to curl options ($3...), or fails after $1 s
wait_ok() {
  local timeout="$1" url="$2" deadline=$((SECONDS + $1)) name pid
  shift 2
  until [[ "$(curl -s --max-time 2 "$@" "$url" 2>/dev/null || true)" == ok ]]; do
    while read -r name pid; do
      kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) exited; see $run/logs/$name.log"
    done <"$run/pids"
    ((SECONDS < deadline)) || die "$url not ok after ${timeout}s"
    check_watched
    sleep 0.2
  done
}
wait_etcd() {
  local deadline=$((SECONDS + 30))
  until curl -sf --max-time 2 "http://127.0.0.1:$etcd_port/health" | grep -q '"health":"true"'; do
    ((SECONDS < deadline)) || die "etcd not healthy after 30s"
    check_watched
    sleep 0.2
  done
}
wait_etcd
log "etcd ready on 127.0.0.1:$etcd_port"

# --- kube-apiserver -------------------------------------------------------
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$api_port" \
  --cert-dir="$pki" \
  --tls-cert-file="$pki/apiserver.crt" \
  --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --token-auth-file="$pki/tokens.csv" \
  --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" \
  --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$pki/front-proxy-client.crt" \
  --proxy-client-key-file="$pki/front-proxy-client.key" \
  --endpoint-reconciler-type=none \
  --profiling=false

wait_ok 90 "$api_url/readyz" --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_token"
log "kube-apiserver ready at $api_url"

# --- kube-controller-manager ----------------------------------------------
# Only the controllers a cluster without nodes and pods needs. Each one acts
# with its own ServiceAccount's token (--use-service-account-credentials), as
# in kubeadm clusters, so it is bound by the bootstrap RBAC roles.
controllers=serviceaccount-token-controller,serviceaccount-controller,namespace-controller,garbage-collector-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller
# Pods from workloads, Node conditions and NotReady taints (the apiserver's
# TaintNodesByCondition admission taints every new Node until this controller
# sees it Ready), pods of deleted Nodes.
[[ "$workloads" == 0 ]] ||
  controllers+=,deployment-controller,replicaset-controller,daemonset-controller,node-lifecycle-controller,taint-eviction-controller,pod-garbage-collector-controller
if [[ "$controller_manager" == 1 ]]; then
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$run/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$run/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$run/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$kcm_port" \
    --cert-dir="$pki/kube-controller-manager" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --controllers="$controllers" \
    --profiling=false

  wait_ok 60 "https://127.0.0.1:$kcm_port/healthz" -k
  log "kube-controller-manager healthy on 127.0.0.1:$kcm_port"
else
  log "kube-controller-manager not started (KWIRE_CP_CONTROLLER_MANAGER=0)"
fi

# --- kube-scheduler (KWIRE_CP_WORKLOADS=1) ----------------------------------
if [[ "$workloads" == 1 ]]; then
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig="$run/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$run/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$run/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$scheduler_port" \
    --leader-elect=false \
    --profiling=false
  wait_ok 60 "https://127.0.0.1:$scheduler_port/healthz" -k
  log "kube-scheduler healthy on 127.0.0.1:$scheduler_port"
fi

cat >"$run/env" <<ENV
KWIRE_CP_APISERVER_URL=$api_url
KWIRE_CP_CA_FILE=$pki/ca.crt
KWIRE_CP_ADMIN_TOKEN=$admin_token
KWIRE_CP_ADMIN_KUBECONFIG=$run/admin.kubeconfig
KWIRE_CP_ETCD_URL=http://127.0.0.1:$etcd_port
KWIRE_CP_KUBECTL=$bin/kubectl
KWIRE_CP_HELM=$bin/helm
ENV
chmod 600 "$run/env"

up_ok=1
elapsed_ms=$((($(date +%s%N) - started_ns) / 1000000))
log "control plane up in ${elapsed_ms} ms ($((SECONDS - start_seconds)) s)"
echo "export KUBECONFIG=$run/admin.kubeconfig"
