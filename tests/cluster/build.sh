#!/usr/bin/env bash
# Build the local cluster's binaries from Go modules into a cache outside the repo,
# keyed by the pinned versions, and print the bin directory:
#   kube     one multi-call binary (kube-apiserver, kube-controller-manager, kube-scheduler,
#            kubectl, etcd; kubelet and kube-proxy for the real node) from k8s.io/kubernetes
#   coredns  the cluster DNS (CoreDNS with the plugins it uses, coredns/)
#   kwok, helm
# A cold build takes about 15 minutes on 2 cores (progress every 30 s); a warm one is a no-op.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../scripts/lib.sh"
K8S_VERSION=1.34.4   # must match kube/go.mod
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.19.0
key=$(cat "$here/build.sh" "$here"/kube/{go.mod,go.sum,main.go} "$here"/coredns/{go.mod,go.sum,main.go} | sha256sum | cut -c1-16)
bin="$(tuneroute_cache)/cluster-$key/bin"
if [ -x "$bin/kube" ] && [ -x "$bin/coredns" ] && [ -x "$bin/kwok" ] && [ -x "$bin/helm" ]; then echo "$bin"; exit 0; fi
mkdir -p "$bin"
command -v go >/dev/null || { echo "build.sh: Go is needed (https://go.dev/dl/), go.mod asks for $(grep '^go ' "$here/kube/go.mod")" >&2; exit 1; }
export GOFLAGS=-mod=mod CGO_ENABLED=0
v=k8s.io/component-base/version
ldflags="-s -w -X $v.gitVersion=v$K8S_VERSION -X $v.gitMajor=${K8S_VERSION%%.*} -X $v.gitMinor=$(echo $K8S_VERSION | cut -d. -f2) -X $v.gitTreeState=clean"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
t0=$SECONDS
if [ ! -x "$bin/kube" ]; then
  (cd "$here/kube" && progress "go build kube v$K8S_VERSION (apiserver, controller-manager, scheduler, kubelet, kube-proxy, kubectl, etcd)" \
    go build -trimpath -ldflags "$ldflags" -o "$bin/kube.tmp" .)
  mv "$bin/kube.tmp" "$bin/kube"
fi
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd; do ln -sf kube "$bin/$c"; done
if [ ! -x "$bin/coredns" ]; then
  (cd "$here/coredns" && progress "go build coredns $(grep -o 'coredns/coredns v[0-9.]*' go.mod | cut -d' ' -f2)" \
    go build -trimpath -ldflags "-s -w" -o "$bin/coredns.tmp" .)
  mv "$bin/coredns.tmp" "$bin/coredns"
fi
[ -x "$bin/kwok" ] || GOBIN="$bin" progress "go install kwok $KWOK_VERSION" \
  go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
[ -x "$bin/helm" ] || GOBIN="$bin" progress "go install helm $HELM_VERSION" \
  go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "build.sh: binaries in $bin ($(fmt_seconds $((SECONDS - t0))))" >&2
echo "$bin"
