#!/usr/bin/env bash
# The real node of the local cluster: containerd + runc, kubelet and kube-proxy (from the same
# k8s.io/kubernetes build as the control plane), the CNI bridge, and CoreDNS as a pod.
# up.sh and down.sh call it; it is not meant to be run by hand.
#
#   node.sh net DIR      allocate this cluster's network and create it (before the API server,
#                        which listens on it); writes DIR/node/net.env
#   node.sh start DIR    start containerd, kubelet, kube-proxy and CoreDNS; wait until Ready
#   node.sh stop DIR     stop them, kill the pods' containers, undo what start and net changed
#
# Everything the node runs lives in a network namespace of its own (tuneroute-N): its bridge,
# its pods' veths, kube-proxy's iptables rules and the kubelet's iptables canaries disappear with
# it, and two clusters on one machine do not fight over the same iptables chains. The host side:
#   10.N.0.1   host end of a veth pair (the API server listens here; pods reach it here)
#   10.N.0.2   the node's address (InternalIP)
#   10.N.1.0/24      Service ClusterIPs (10.N.1.1 kubernetes, 10.N.1.10 kube-dns)
#   10.N.128.0/17    pod IPs, on the bridge cni0 in the namespace
# and a host route for 10.N.0.0/16 into the namespace, so this machine reaches pods and Service
# ClusterIPs directly (tests call Services as a pod would). Pods have no route beyond 10.N/16.
# Everything else is under DIR/node: containerd's config, root, state and socket; the kubelet's
# root dir and pod logs; CNI config and IPAM state. The kubelet's sysctls (kernel.panic,
# kernel.panic_on_oops, vm.overcommit_memory, ...) are machine-wide: the first node saves them,
# the last one to stop restores them.
set -euo pipefail
shopt -s inherit_errexit
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$root/scripts/lib.sh"
cmd=$1
dir="$(cd "$2" && pwd)"
node="$dir/node"
NODE_NAME=cpu-node-0
RUN=/run/tuneroute
# Machine-wide sysctls the kubelet sets (pkg/kubelet/cm/container_manager_linux.go setupKernelTunables).
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
log() { echo "node.sh: $*" >&2; }
die() { log "$*"; exit 1; }
in_ns() { nsenter --net="/run/netns/$NETNS" "$@"; }

# --- net ------------------------------------------------------------------------------------------
net() {
  [ "$(id -u)" = 0 ] || die "the real node needs root (network namespace, containerd, kubelet); TUNEROUTE_REAL_NODE=0 runs without it"
  # Unix socket paths (containerd's, the kubelet's device-plugin socket) are limited to 104 bytes.
  ((${#dir} <= 60)) || die "$dir: a cluster directory with a real node needs a path of at most 60 characters (unix sockets live under it)"
  ensure_packages containerd runc containernetworking-plugins iptables iproute2 util-linux
  mkdir -p "$node" "$RUN"
  local n
  # One cluster at a time picks its N, under a machine-wide lock.
  exec 9>"$RUN/net.lock"
  flock 9
  reap_stale
  for n in $(seq 100 199); do
    [ -e "/run/netns/tuneroute-$n" ] && continue
    ip route show to match "10.$n.0.1" | grep -q "^10\.$n\." && continue # someone else's network
    break
  done
  [ -e "/run/netns/tuneroute-$n" ] && die "no free 10.N.0.0/16 for a node (N in 100..199)"
  cat >"$node/net.env" <<EOF
NETNS=tuneroute-$n
HOST_IF=tr$n-host
HOST_IP=10.$n.0.1
NODE_IP=10.$n.0.2
SERVICE_CIDR=10.$n.1.0/24
KUBERNETES_SERVICE_IP=10.$n.1.1
DNS_IP=10.$n.1.10
POD_CIDR=10.$n.128.0/17
POD_GATEWAY=10.$n.128.1
CGROUP=tuneroute-$n
NODE_NAME=$NODE_NAME
EOF
  source "$node/net.env"
  echo "$dir" >"$RUN/$NETNS.owner"
  ip netns add "$NETNS"
  ip link add "$HOST_IF" type veth peer name eth0 netns "$NETNS"
  ip addr add "$HOST_IP/24" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  in_ns ip link set lo up
  in_ns ip addr add "$NODE_IP/24" dev eth0
  in_ns ip link set eth0 up
  ip route add "10.$n.0.0/16" via "$NODE_IP" dev "$HOST_IF"
  flock -u 9
  # In the namespace only: forward between the bridge and eth0; bridged pod-to-pod traffic
  # through iptables, so a pod reaching a Service whose endpoint is on the same bridge works.
  in_ns sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  log "network $NETNS: host $HOST_IP, node $NODE_IP, services $SERVICE_CIDR, pods $POD_CIDR"
}

# A node whose cluster directory is gone (removed without down.sh, a machine crash): its
# namespace, cgroups and processes go, so they neither hold an N nor keep the sysctls changed.
# The last node on the machine puts back the sysctls the first one found.
restore_sysctls() {
  [ -d "$RUN" ] || return 0
  (
    flock 8 # save_sysctls' lock: two clusters may stop at once
    if [ -f "$RUN/sysctl.orig" ] && ! ls /run/netns/tuneroute-* >/dev/null 2>&1; then
      sysctl -qw $(cat "$RUN/sysctl.orig") && rm -f "$RUN/sysctl.orig"
    fi
  ) 8>"$RUN/sysctl.lock"
}

reap_stale() {
  local ns owner h
  for ns in $(ip netns list | awk '/^tuneroute-[0-9]+/ {print $1}'); do
    owner=$(cat "$RUN/$ns.owner" 2>/dev/null || true)
    [ -n "$owner" ] && grep -qx "NETNS=$ns" "$owner/node/net.env" 2>/dev/null && continue
    log "removing $ns, left by a cluster that is gone (${owner:-unknown})"
    for h in /sys/fs/cgroup/*/"$ns"; do
      [ -d "$h" ] || continue
      find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
      find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    ip link del "tr${ns#tuneroute-}-host" 2>/dev/null || true
    rm -f "$RUN/$ns.owner"
  done
  restore_sysctls
}

# --- start ----------------------------------------------------------------------------------------
start_proc() { # NAME CMD... : detached, pid in DIR/pids, log in DIR/logs (as up.sh does)
  local name=$1
  shift
  setsid "$@" </dev/null >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name.pid"
}

wait_for() { # WHAT SECONDS CMD...
  local what=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 4; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  log "timed out after ${secs}s waiting for $what; see $dir/logs/"
  tail -n 30 "$dir"/logs/{containerd,kubelet,kube-proxy}.log >&2 || true
  exit 1
}

make_cgroups() { # the kubelet's cgroupRoot, in every v1 hierarchy (it refuses a missing one)
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h" ] || continue
    mkdir -p "$h$CGROUP"
    if [ -f "${h}cpuset.cpus" ]; then
      cat "${h}cpuset.cpus" >"$h$CGROUP/cpuset.cpus"
      cat "${h}cpuset.mems" >"$h$CGROUP/cpuset.mems"
    fi
  done
}

save_sysctls() { # the first node on the machine keeps the values from before any kubelet
  # under a lock: two clusters start side by side on a parallel test run
  (
    flock 8
    [ -f "$RUN/sysctl.orig" ] && exit 0
    for s in "${KUBELET_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$RUN/sysctl.orig.tmp"
    mv "$RUN/sysctl.orig.tmp" "$RUN/sysctl.orig"
  ) 8>"$RUN/sysctl.lock"
}

write_configs() {
  local pki="$dir/pki" pause=$1
  mkdir -p "$node"/{containerd,kubelet,pod-logs,cni/net.d,cni/ipam}
  cat >"$node/containerd/config.toml" <<EOF
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$node/containerd/containerd.sock"
[ttrpc]
  address = "$node/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$node/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause"
  # This VM lacks CAP_SYS_RESOURCE: without it every pod fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # pod network namespaces under the state dir, not /var/run/netns
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni/net.d"
EOF
  # ipMasq false: pods have no way out of the machine; they reach 10.N/16 only.
  cat >"$node/cni/net.d/10-tuneroute.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$NETNS",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$node/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
  # The kubelet: its serving certificate from our CA, client certs checked against it
  # (the API server's, for logs/exec), everything else asked of the API server (webhook).
  cat >"$node/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$node/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
podLogsDir: $node/pod-logs
serializeImagePulls: false
# Images are imported by scripts/images.sh, never pulled: no image garbage collection, and
# eviction (which deletes images too) only when the disk is all but full. The machine's disk is
# shared with builds and other clusters: a percentage of it says little about this node.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 256Mi, imagefs.available: 256Mi, nodefs.inodesFree: 1%}
nodeStatusReportFrequency: 10s
# Pods resync every 10 s (1 min by default): a ConfigMap edit reaches the mounted file sooner.
syncFrequency: 10s
shutdownGracePeriod: 0s
EOF
  cat >"$node/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kubeconfig.proxy}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
nodePortAddresses: [$NODE_IP/32]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# conntrack sysctls are machine-wide: leave them alone
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

start() {
  source "$node/net.env"
  local t0=$SECONDS kube pause coredns
  kube="$("$here/build.sh")"
  pause="$("$root/scripts/images.sh" ref pause)"
  coredns="$("$root/scripts/images.sh" ref coredns)"
  write_configs "$pause"
  make_cgroups
  save_sysctls
  local tc=$SECONDS
  start_proc containerd nsenter --net="/run/netns/$NETNS" containerd --config "$node/containerd/config.toml"
  wait_for containerd 30 ctr -a "$node/containerd/containerd.sock" version
  "$root/scripts/images.sh" import "$dir" pause coredns >/dev/null
  local tk=$SECONDS
  start_proc kubelet nsenter --net="/run/netns/$NETNS" "$kube/kubelet" --config="$node/kubelet/config.yaml" \
    --kubeconfig="$dir/kubeconfig.node" --root-dir="$node/kubelet" --cert-dir="$node/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --node-labels="type=real,tuneroute.io/real-node=true" --v=1
  start_proc kube-proxy nsenter --net="/run/netns/$NETNS" "$kube/kube-proxy" --config="$node/kube-proxy.yaml" --v=1
  local kc="$dir/kubeconfig.tmp"
  [ -f "$kc" ] || kc="$dir/kubeconfig"
  ready() { [ "$(kubectl --kubeconfig "$kc" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
  wait_for "node $NODE_NAME Ready" 120 ready
  log "node $NODE_NAME Ready $(fmt_seconds $((SECONDS - tk))) after the kubelet started ($(fmt_seconds $((SECONDS - tc))) with containerd and the node images)"
  # The role label is one the kubelet may not set on itself (NodeRestriction).
  kubectl --kubeconfig "$kc" label node "$NODE_NAME" --overwrite node-role.kubernetes.io/worker= >/dev/null
  sed -e "s|\${DNS_IP}|$DNS_IP|g" -e "s|\${COREDNS_IMAGE}|$coredns|g" "$here/coredns.yaml" |
    kubectl --kubeconfig "$kc" apply -f - >/dev/null
  wait_for "CoreDNS" 120 kubectl --kubeconfig "$kc" -n kube-system wait --for=condition=Available deployment/coredns --timeout=1s
  log "CoreDNS answers on $DNS_IP; node up in $(fmt_seconds $((SECONDS - t0)))"
}

# --- stop -----------------------------------------------------------------------------------------
stop_pid() { # NAME [SIGNAL]: SIGNAL (TERM), then KILL after 10 s
  local f="$dir/pids/$1.pid" pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill -"${2:-TERM}" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  [ -f "$node/net.env" ] || return 0
  source "$node/net.env"
  local sock="$node/containerd/containerd.sock" id h
  # Nothing of theirs outlives the namespace: no need to wait for a graceful exit (kube-proxy
  # takes 10 s to give up on SIGTERM).
  stop_pid kube-proxy KILL
  stop_pid kubelet KILL
  # The pods' processes outlive the kubelet and containerd (their shims are daemons): end them.
  if [ -S "$sock" ] && ctr -a "$sock" version >/dev/null 2>&1; then
    for id in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_pid containerd
  # Shims left (containerd killed hard, say) and anything still in the node's cgroups.
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null || true
  for h in /sys/fs/cgroup/*/"$CGROUP"; do
    [ -d "$h" ] || continue
    find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  done
  sleep 0.5
  # Mounts under DIR (pod volumes, container root filesystems, pod network namespaces), deepest first.
  { findmnt -rn -o TARGET | grep "^$dir/" || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  for h in /sys/fs/cgroup/*/"$CGROUP"; do
    [ -d "$h" ] && { find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true; }
  done
  # The namespace takes the bridge, the veths, the routes and every iptables rule with it.
  ip netns del "$NETNS" 2>/dev/null || true
  ip link del "$HOST_IF" 2>/dev/null || true
  rm -f "$RUN/$NETNS.owner"
  # libcni's result cache (machine-wide): this network's entries and the loopback ones of its pods.
  local f cid
  for f in /var/lib/cni/results/"$NETNS"-*; do
    [ -e "$f" ] || continue
    cid=${f#/var/lib/cni/results/"$NETNS"-}
    rm -f "$f" /var/lib/cni/results/cni-loopback-"${cid%-eth0}"-lo
  done
  find /var/log/containers -maxdepth 1 -lname "$node/*" -delete 2>/dev/null || true
  restore_sysctls
  log "node $NODE_NAME stopped, $NETNS removed"
}

case "$cmd" in
  net) net ;;
  start) start ;;
  stop) stop ;;
  *) die "usage: node.sh net|start|stop DIR" ;;
esac
