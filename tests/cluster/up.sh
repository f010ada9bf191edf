#!/usr/bin/env bash
# Start a real local Kubernetes cluster without Docker: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler (all built from Go modules by build.sh),
# kwok, which plays the kubelet for two fake GPU nodes, and one real node
# (node.sh: containerd, kubelet, kube-proxy, CoreDNS) where CPU-only pods run.
#
# TUNEROUTE_REAL_NODE=0: no real node (no root needed; the API server on 127.0.0.1).
#
#   tests/cluster/up.sh [DIR]     DIR defaults to ${TUNEROUTE_CLUSTER_DIR:-/tmp/tuneroute-cluster}
#   source DIR/env                exports KUBECONFIG (admin) and PATH (kubectl, helm, ...)
#   tests/cluster/down.sh [DIR]   stops it and removes DIR
#
# State, certificates and pid files live in DIR, logs in DIR/logs/*.log, the node in DIR/node.
# Prints the admin kubeconfig path on stdout; progress goes to stderr.
# Ports: every component gets a free loopback port picked at start (by binding
# port 0), so several clusters (or other engineers' processes) can coexist;
# they are recorded in DIR/ports.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${1:-${TUNEROUTE_CLUSTER_DIR:-/tmp/tuneroute-cluster}}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
source "$here/../../scripts/lib.sh"
log() { echo "up.sh: $*" >&2; }
ensure_packages openssl curl
real_node="${TUNEROUTE_REAL_NODE:-1}"

bin="$("$here/build.sh")"
export PATH="$bin:$PATH"
kc="$dir/kubeconfig"

alive() { # every pid file in DIR/pids names a live process
  local f n=0
  for f in "$dir"/pids/*.pid; do
    [ -e "$f" ] || return 1
    kill -0 "$(cat "$f")" 2>/dev/null || return 1
    n=$((n + 1))
  done
  [ "$n" -ge 5 ]
}
if [ -f "$kc" ] && alive && kubectl --kubeconfig "$kc" get --raw=/readyz >/dev/null 2>&1; then
  log "already up in $dir (source $dir/env)"
  echo "$kc"
  exit 0
fi
if [ -d "$dir/pids" ]; then
  log "stale state in $dir: stopping what is left and starting afresh"
  "$here/down.sh" "$dir"
  mkdir -p "$dir"
fi
t0=$(date +%s)
mkdir -p "$dir"/{pki,pids,logs,etcd,certs-kcm,certs-sched}
# A start that fails stops what it started (its logs are kept beside DIR).
up_ok=0
trap '[ "$up_ok" = 1 ] || { rm -rf "$dir.failed-logs"; cp -r "$dir/logs" "$dir.failed-logs" 2>/dev/null
  log "failed: stopping what started; logs in $dir.failed-logs"; "$here/down.sh" "$dir" >&2; }' EXIT
chmod 700 "$dir/etcd" # etcd warns about anything looser

# Where the API server listens: with a real node, on the host end of the node's network
# (pods reach it there, through the `kubernetes` Service); without one, on loopback.
if [ "$real_node" = 1 ]; then
  "$here/node.sh" net "$dir"
  source "$dir/node/net.env"
  api_ip=$HOST_IP service_cidr=$SERVICE_CIDR service_ip=$KUBERNETES_SERVICE_IP
else
  api_ip=127.0.0.1 service_cidr=10.0.0.0/24 service_ip=10.0.0.1
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port); kcm_port=$(free_port); sched_port=$(free_port)
cat >"$dir/ports" <<EOF
etcd=$etcd_port
etcd_peer=$etcd_peer
apiserver=$api_port
controller_manager=$kcm_port
scheduler=$sched_port
EOF

# --- certificates (openssl): a CA, the apiserver's serving cert, the service-account key pair.
pki="$dir/pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 \
    -subj "/CN=tuneroute-test-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
    -subj "/CN=kube-apiserver" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:$api_ip,IP:$service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
    "extendedKeyUsage=serverAuth" "keyUsage=digitalSignature,keyEncipherment" >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  # One key pair: the apiserver signs and verifies service-account tokens with it,
  # the controller manager signs the legacy token Secrets with the private half.
  # Front proxy (request-header auth), as kubeadm sets it up: lets aggregated API
  # servers work and keeps the controller manager and scheduler from complaining
  # about a missing requestheader CA.
  openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt \
    -days 365 -subj "/CN=front-proxy-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
    -subj "/CN=front-proxy-client" 2>/dev/null
  printf '%s\n' "extendedKeyUsage=clientAuth" "keyUsage=digitalSignature,keyEncipherment" >client.ext
  openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
    -CAcreateserial -days 365 -extfile client.ext -out front-proxy-client.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  # The API server's client certificate to the kubelet (logs, exec, port-forward), as kubeadm
  # names it, and the kubelet's serving certificate, which the API server verifies.
  openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
    -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
  openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile client.ext -out kubelet-client.crt 2>/dev/null
  if [ "$real_node" = 1 ]; then
    openssl req -newkey rsa:2048 -nodes -keyout kubelet.key -out kubelet.csr -subj "/CN=system:node:$NODE_NAME" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME" "extendedKeyUsage=serverAuth" \
      "keyUsage=digitalSignature,keyEncipherment" >kubelet.ext
    openssl x509 -req -in kubelet.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
      -extfile kubelet.ext -out kubelet.crt 2>/dev/null
  fi
)

# --- static tokens (--token-auth-file: token,user,uid,"group1,group2").
# The admin is in system:masters. The controller manager and the scheduler get the
# user names that RBAC's bootstrap policy already binds, as in a kubeadm cluster, so
# RBAC is really exercised; kwok acts for the "kubelets" and runs as an admin. The real
# node's kubelet is system:node:NAME in system:nodes (the Node authorizer and NodeRestriction
# apply to it), its kube-proxy is system:kube-proxy (bound to system:node-proxier).
tok() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
admin_tok=$(tok); kcm_tok=$(tok); sched_tok=$(tok); kwok_tok=$(tok); node_tok=$(tok); proxy_tok=$(tok)
cat >"$pki/tokens.csv" <<EOF
$admin_tok,admin,admin,"system:masters"
$kcm_tok,system:kube-controller-manager,system:kube-controller-manager
$sched_tok,system:kube-scheduler,system:kube-scheduler
$kwok_tok,kwok,kwok,"system:masters"
$node_tok,system:node:${NODE_NAME:-none},system:node:${NODE_NAME:-none},"system:nodes"
$proxy_tok,system:kube-proxy,system:kube-proxy
EOF
chmod 600 "$pki"/*.key "$pki/tokens.csv"
kubeconfig() { # FILE USER TOKEN
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tuneroute
  cluster:
    server: https://$api_ip:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: tuneroute
  context: {cluster: tuneroute, user: $2, namespace: default}
current-context: tuneroute
EOF
  chmod 600 "$1"
}
kubeconfig "$dir/kubeconfig.kcm" system:kube-controller-manager "$kcm_tok"
kubeconfig "$dir/kubeconfig.scheduler" system:kube-scheduler "$sched_tok"
kubeconfig "$dir/kubeconfig.kwok" kwok "$kwok_tok"
kubeconfig "$dir/kubeconfig.node" "system:node:${NODE_NAME:-none}" "$node_tok"
kubeconfig "$dir/kubeconfig.proxy" system:kube-proxy "$proxy_tok"
kubeconfig "$kc.tmp" admin "$admin_tok" # renamed to $kc once the cluster is ready

start() { # NAME CMD... : detached (own session, no inherited pipes), pid in DIR/pids
  local name=$1; shift
  setsid "$@" </dev/null >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name.pid"
}
wait_for() { # WHAT SECONDS CMD...
  local what=$1 secs=$2 i; shift 2
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  log "timed out after ${secs}s waiting for $what; see $dir/logs/"
  tail -n 20 "$dir"/logs/*.log >&2 || true
  exit 1
}

log "starting etcd on 127.0.0.1:$etcd_port"
start etcd etcd --name=default --data-dir="$dir/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
  --initial-cluster="default=http://127.0.0.1:$etcd_peer" \
  --unsafe-no-fsync=true --quota-backend-bytes=2147483648 --log-level=warn
wait_for etcd 60 curl -fsS "http://127.0.0.1:$etcd_port/health"

# Admission: no --disable-admission-plugins, so the apiserver runs its default set as a
# real cluster does (NamespaceLifecycle, LimitRanger, ServiceAccount, PodSecurity,
# DefaultTolerationSeconds, TaintNodesByCondition, ResourceQuota, the webhook and
# ValidatingAdmissionPolicy plugins, ...) plus NodeRestriction as kubeadm enables it, and
# OwnerReferencesPermissionEnforcement as OpenShift does (children with blockOwnerDeletion
# need update on their owner's finalizers: the chart's RBAC must grant it).
# ServiceAccount admission stays on because the controller manager creates the
# `default` ServiceAccount in each namespace (wait for it before creating pods).
# ExtendedResourceToleration: pods that request nvidia.com/gpu tolerate the GPU nodes'
# nvidia.com/gpu taint by themselves, as on GKE and most GPU clusters.
# The lease endpoint reconciler (the default) gives the `kubernetes` Service its endpoint,
# which pods on the real node use.
log "starting kube-apiserver on https://$api_ip:$api_port"
start kube-apiserver kube-apiserver \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address="$api_ip" --advertise-address="$api_ip" --secure-port="$api_port" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
  --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement,ExtendedResourceToleration \
  --kubelet-client-certificate="$pki/kubelet-client.crt" --kubelet-client-key="$pki/kubelet-client.key" \
  --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range="$service_cidr" --allow-privileged=true \
  --profiling=false --v=1
wait_for "kube-apiserver /readyz" 120 kubectl --kubeconfig "$kc.tmp" get --raw=/readyz

# The default controller set ("*") includes job, garbage-collector, deployment,
# replicaset, namespace, serviceaccount, serviceaccount-token, node-lifecycle, ...;
# each controller runs with its own ServiceAccount (--use-service-account-credentials)
# as in a real cluster. Our CA doubles as the CSR signer.
log "starting kube-controller-manager and kube-scheduler"
start kube-controller-manager kube-controller-manager \
  --kubeconfig="$dir/kubeconfig.kcm" \
  --authentication-kubeconfig="$dir/kubeconfig.kcm" --authorization-kubeconfig="$dir/kubeconfig.kcm" \
  --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$dir/certs-kcm" \
  --leader-elect=false --controllers='*' --use-service-account-credentials=true \
  --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --service-cluster-ip-range="$service_cidr" --profiling=false --v=1 \
  --node-monitor-grace-period=2m # fake nodes cannot die; a busy 2-core CI box can delay heartbeats
start kube-scheduler kube-scheduler \
  --kubeconfig="$dir/kubeconfig.scheduler" \
  --authentication-kubeconfig="$dir/kubeconfig.scheduler" --authorization-kubeconfig="$dir/kubeconfig.scheduler" \
  --bind-address=127.0.0.1 --secure-port="$sched_port" --cert-dir="$dir/certs-sched" \
  --leader-elect=false --profiling=false --v=1

# kwok only manages nodes annotated kwok.x-k8s.io/node=fake and the pods bound to them;
# kwok-stages.yaml is its complete Stage set (see the comments there).
log "starting kwok"
start kwok kwok --kubeconfig="$dir/kubeconfig.kwok" --config="$here/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr=10.244.0.0/16 --node-ip=10.240.0.1

wait_for "the default ServiceAccount (controller manager)" 120 \
  kubectl --kubeconfig "$kc.tmp" -n default get serviceaccount default

# Two fake GPU nodes (kwok), 8 nvidia.com/gpu each. With the real node they carry the
# usual GPU-pool taint nvidia.com/gpu=present:NoSchedule: pods that request GPUs tolerate it
# (ExtendedResourceToleration), CPU-only pods (operator, router, a gpus: 0 FineTuneJob) go to
# the real node, where their containers really run. Without a real node they are untainted,
# so every pod schedules on them as before (and nothing runs).
gpu_taints="[]"
[ "$real_node" = 1 ] && gpu_taints="[{key: nvidia.com/gpu, value: present, effect: NoSchedule}]"
for i in 0 1; do
  n=gpu-node-$i
  kubectl --kubeconfig "$kc.tmp" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $n
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    nvidia.com/gpu.count: "8"
spec:
  taints: $gpu_taints
status:
  addresses: [{type: InternalIP, address: 10.240.0.$((10 + i))}, {type: Hostname, address: $n}]
  capacity: {cpu: "64", memory: 512Gi, ephemeral-storage: 2Ti, pods: "110", nvidia.com/gpu: "8"}
  allocatable: {cpu: "64", memory: 512Gi, ephemeral-storage: 2Ti, pods: "110", nvidia.com/gpu: "8"}
EOF
done
node_ready() {
  [ "$(kubectl --kubeconfig "$kc.tmp" get nodes -l type=kwok -o \
    jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{.spec.taints[*].key}{"\n"}{end}' |
    grep '^True' | grep -vc 'node.kubernetes.io/')" -eq 2 ]
}
# Ready, and the node-lifecycle controller has lifted the not-ready taint.
wait_for "2 Ready GPU nodes" 120 node_ready

[ "$real_node" = 1 ] && "$here/node.sh" start "$dir"

cat >"$dir/env" <<EOF
export KUBECONFIG=$kc
export PATH=$bin:\$PATH
EOF
mv "$kc.tmp" "$kc"
up_ok=1
log "up in $(($(date +%s) - t0))s: source $dir/env   (stop: $here/down.sh $dir)"
echo "$kc"
