#!/usr/bin/env bash
# tuneroute's images, built here without a Docker engine or a registry, and loaded into the
# local cluster's real node.
#
#   scripts/images.sh build [NAME...]       build what is missing; print each NAME=REF
#   scripts/images.sh ref NAME              the local ref NAME has or will have (builds nothing)
#   scripts/images.sh import DIR [NAME...]  build if needed, then import into the containerd of the
#                                           real node of the cluster in DIR (tests/cluster/up.sh)
#   scripts/images.sh import-ref DIR REF    import any image of the local store (e.g. your own)
#   scripts/images.sh push REGISTRY [NAME...]  push to REGISTRY/tuneroute/NAME:TAG (your registry)
#
# NAME: operator, router, trainer (the chart's images, from their Dockerfiles, unchanged) and
# pause, coredns (the node's own). Default: operator router trainer.
#
# How: `buildah bud --isolation chroot --pull=never` on the Dockerfiles (Debian's buildah), FROM
# base images built locally from distribution packages with mmdebstrap and tagged with the names
# the FROM lines use (see base_* below and docs/images.md for how they differ from the real ones).
# Every image is tagged localhost/tuneroute/NAME:HASH, HASH being a hash of what goes into it
# (Dockerfile, the files its COPY lines take, the base image), and is built only when that tag is
# missing from the store in ~/.cache/tuneroute/containers.
set -euo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/lib.sh"
cache="$(tuneroute_cache)"
store="$cache/containers"
DEBIAN_MIRROR="${TUNEROUTE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
UBUNTU_MIRROR="${TUNEROUTE_UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}"
# Ubuntu's archive key, from Ubuntu's own package (Debian bookworm does not ship it); pinned by hash.
UBUNTU_KEYRING_DEB=pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb
UBUNTU_KEYRING_SHA256=36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8

log() { echo "images.sh: $*" >&2; }
die() { log "$*"; exit 1; }
# TMPDIR: buildah's temporary files and its RUN --mount=type=cache directories, under the cache.
bh() { TMPDIR="$store/tmp" buildah --root "$store/storage" --runroot "$store/run" --storage-driver overlay "$@"; }
has_image() { bh inspect --type image "$1" >/dev/null 2>&1; }
short() { cut -c1-16; }

ensure_tools() {
  mkdir -p "$store/tmp"
  ensure_packages buildah mmdebstrap containerd
  [ "$(id -u)" = 0 ] || die "building images needs root (buildah --isolation chroot, mmdebstrap)"
}

# --- base images: the FROM lines' names, built from distribution packages --------------------
# A dpkg filter as in the official slim images: no docs, man pages or locales.
SLIM=(--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
      --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
      --dpkgopt='path-exclude=/usr/share/info/*')

# The build machine's own CAs (Debian's place for them), so that RUN steps reach PyPI through a
# TLS-intercepting proxy when the machine has one; none on an ordinary machine.
LOCAL_CAS=/usr/local/share/ca-certificates
local_ca_hooks() {
  compgen -G "$LOCAL_CAS/*.crt" >/dev/null || return 0
  echo --customize-hook="copy-in $LOCAL_CAS /usr/local/share"
  echo --customize-hook='chroot "$1" update-ca-certificates'
}

# python:3.X-slim-bookworm: Debian bookworm's Python (3.11.2) in the official image's layout,
# /usr/local/bin/python and pip, by a venv over the system Python at /usr/local.
base_python_bookworm() { # TARBALL
  local cas
  mapfile -t cas < <(local_ca_hooks)
  mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase "${SLIM[@]}" "${cas[@]}" \
    --customize-hook='chroot "$1" python3 -m venv /usr/local && rm "$1"/usr/local/bin/[Aa]ctivate*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$1" "deb $DEBIAN_MIRROR bookworm main" "deb $DEBIAN_MIRROR bookworm-updates main" \
    "deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main"
}
base_python_bookworm_config() { # buildah config flags, one "FLAG VALUE" a line
  printf -- '%s\n' "--env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin" "--env LANG=C.UTF-8" "--cmd python3"
}

# nvidia/cuda:V-runtime-ubuntu24.04: Ubuntu noble with the image's NVIDIA environment (what the
# NVIDIA container toolkit reads on a GPU node) but without the CUDA runtime libraries: they
# come from NVIDIA's apt repository, unreachable here. The trainer does not use them: torch's
# wheels bring their own CUDA libraries (nvidia-* wheels).
base_cuda_noble() { # TARBALL
  local keys cas
  # A copy apt's unprivileged _apt user can read (the cache under /root is not readable to it).
  keys="$(mktemp /tmp/tuneroute-ubuntu-keyring.XXXXXX)"
  cp "$(ubuntu_keyring)" "$keys"
  chmod 644 "$keys"
  trap 'rm -f "$keys"' RETURN
  mapfile -t cas < <(local_ca_hooks)
  # The key for the bootstrap; in the image, apt trusts the archive through the ubuntu-keyring
  # package, as in Ubuntu's own images.
  mmdebstrap --variant=minbase --include=apt,ca-certificates,ubuntu-keyring "${SLIM[@]}" "${cas[@]}" \
    --customize-hook='sed -i "s/\[signed-by=[^]]*\] //" "$1"/etc/apt/sources.list' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    noble "$1" "deb [signed-by=$keys] $UBUNTU_MIRROR noble main universe" \
    "deb [signed-by=$keys] $UBUNTU_MIRROR noble-updates main universe" \
    "deb [signed-by=$keys] $UBUNTU_MIRROR noble-security main universe"
}
base_cuda_noble_config() { # CUDA_VERSION -> buildah config flags, one "FLAG VALUE" a line
  printf -- '--env %s\n' NVARCH=x86_64 "CUDA_VERSION=$1" "NVIDIA_REQUIRE_CUDA=cuda>=${1%.*}" \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64 \
    PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  echo "--cmd /bin/bash"
}

ubuntu_keyring() {
  local dir="$cache/keyrings" deb
  deb="$dir/$(basename "$UBUNTU_KEYRING_DEB")"
  if [ ! -f "$dir/ubuntu-archive-keyring.gpg" ]; then
    mkdir -p "$dir"
    curl -fsSL -o "$deb.tmp" "$UBUNTU_MIRROR/$UBUNTU_KEYRING_DEB"
    echo "$UBUNTU_KEYRING_SHA256  $deb.tmp" | sha256sum -c --quiet - >&2 || die "$UBUNTU_KEYRING_DEB: unexpected sha256"
    dpkg-deb --fsys-tarfile "$deb.tmp" | tar -xO ./usr/share/keyrings/ubuntu-archive-keyring.gpg >"$dir/ubuntu-archive-keyring.gpg"
    rm -f "$deb.tmp"
  fi
  echo "$dir/ubuntu-archive-keyring.gpg"
}

# docker.io/library/python:3.11.11-slim-bookworm -> recipe name, or nothing
recipe_for() {
  case "$1" in
    python:3.11*-slim-bookworm | docker.io/library/python:3.11*-slim-bookworm) echo python_bookworm ;;
    nvidia/cuda:*-runtime-ubuntu24.04 | docker.io/nvidia/cuda:*-runtime-ubuntu24.04) echo cuda_noble ;;
  esac
}

qualified() { # the name buildah resolves a FROM line's short name to
  case "$1" in
    */*/*) echo "$1" ;;
    */*) echo "docker.io/$1" ;;
    *) echo "docker.io/library/$1" ;;
  esac
}

base_config() { # FROM-NAME -> the image config flags of its stand-in, one a line
  if [ "$(recipe_for "$1")" = cuda_noble ]; then
    local v=${1##*:}
    base_cuda_noble_config "${v%%-*}"
  else
    base_python_bookworm_config
  fi
}

# The local stand-in for a FROM image: localhost/tuneroute/base-RECIPE:KEY, KEY a hash of the
# recipe and the image config (python:3.11.7-slim-bookworm and 3.11.11 share one build).
base_ref() { # FROM-NAME
  local recipe key
  recipe="$(recipe_for "$1")"
  [ -n "$recipe" ] || die "no local recipe for base image $1 (only python:3.11*-slim-bookworm and nvidia/cuda:*-runtime-ubuntu24.04)"
  key=$( (declare -f "base_$recipe" local_ca_hooks; cat "$LOCAL_CAS"/*.crt 2>/dev/null
    echo "$DEBIAN_MIRROR $UBUNTU_MIRROR ${SLIM[*]}"; base_config "$1") | sha256sum | short)
  echo "localhost/tuneroute/base-${recipe//_/-}:$key"
}

# Build (once) the stand-in for a FROM image and tag it with the FROM line's name.
ensure_base() { # FROM-NAME
  local name=$1 recipe ref tmp cid flag value config=()
  recipe="$(recipe_for "$name")"
  ref="$(base_ref "$name")"
  if ! has_image "$ref"; then
    while read -r flag value; do config+=("$flag" "$value"); done < <(base_config "$name")
    tmp="$(mktemp -d "$cache/tmp.XXXXXX")"
    progress "base image $name (mmdebstrap, $recipe)" "base_$recipe" "$tmp/rootfs.tar"
    cid=$(bh from --pull=never scratch)
    bh add --quiet "$cid" "$tmp/rootfs.tar" / >/dev/null
    rm -rf "$tmp"
    bh config "${config[@]}" --label "tuneroute.io/local-base-recipe=$recipe" "$cid"
    bh commit --quiet --format docker --rm "$cid" "$ref" >/dev/null
  fi
  bh tag "$ref" "$(qualified "$name")"
}

# --- the chart's images -----------------------------------------------------------------------
dockerfile_of() {
  case "$1" in
    operator) echo "operator/Dockerfile" ;;
    router) echo "router-image/Dockerfile" ;;
    trainer) echo "trainer-image/Dockerfile" ;;
    *) return 1 ;;
  esac
}
# The build context each Dockerfile's header names (where `docker build` runs from).
context_of() {
  case "$1" in
    operator | router | trainer) echo "." ;;
  esac
}

from_lines() { python3 "$root/scripts/image_inputs.py" from "$root/$(dockerfile_of "$1")"; }

app_ref() { # NAME -> localhost/tuneroute/NAME:HASH; computed, nothing is built
  local name=$1 from bases=""
  for from in $(from_lines "$name"); do bases+="$(base_ref "$from") "; done
  echo "localhost/tuneroute/$name:$( (python3 "$root/scripts/image_inputs.py" hash "$root/$(dockerfile_of "$name")" \
    "$root/$(context_of "$name")"; echo "$bases") | sha256sum | short)"
}

build_app() { # NAME
  local name=$1 ref from
  ref="$(app_ref "$name")"
  if ! has_image "$ref"; then
    for from in $(from_lines "$name"); do ensure_base "$from"; done
    # --layers: a code change re-runs only the steps after the dependencies' install.
    progress "buildah bud $name ($(dockerfile_of "$name"))" \
      bh bud --isolation chroot --pull=never --layers --format docker \
      -f "$root/$(dockerfile_of "$name")" -t "$ref" "$root/$(context_of "$name")"
    log "$name: $ref, $(image_size "$ref")"
    prune "$name"
  fi
  echo "$ref"
}

# The store keeps the newest builds of each image and the layer cache they use (image_prune.py).
prune() { # NAME
  python3 "$root/scripts/image_prune.py" "$1" "${TUNEROUTE_IMAGES_KEEP:-2}" -- \
    env TMPDIR="$store/tmp" buildah --root "$store/storage" --runroot "$store/run" --storage-driver overlay ||
    log "pruning the store failed"
}

image_size() { bh images --noheading --format '{{.Size}}' "$1" 2>/dev/null | head -1; }

# --- the node's images ------------------------------------------------------------------------
# pause: the sandbox image, built from pause.c in the k8s.io/kubernetes module the node runs.
pause_src() {
  echo "$(cd "$root/tests/cluster/kube" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
}
pause_ref() { echo "localhost/tuneroute/pause:$( (cat "$(pause_src)"; declare -f build_pause) | sha256sum | short)"; }
build_pause() {
  local src ref tmp cid
  src="$(pause_src)"
  ref="$(pause_ref)"
  if ! has_image "$ref"; then
    ensure_packages gcc libc6-dev
    tmp="$(mktemp -d "$cache/tmp.XXXXXX")"
    gcc -Os -Wall -Werror -static -DVERSION=tuneroute -o "$tmp/pause" "$src"
    cid=$(bh from --pull=never scratch)
    bh copy --quiet "$cid" "$tmp/pause" /pause >/dev/null
    bh config --entrypoint '["/pause"]' --user 65535:65535 "$cid"
    bh commit --quiet --format docker --rm "$cid" "$ref" >/dev/null
    rm -rf "$tmp"
  fi
  echo "$ref"
}

# coredns: the static binary tests/cluster/build.sh builds, alone in the image.
coredns_ref() {
  echo "localhost/tuneroute/coredns:$( (sha256sum <"$("$root/tests/cluster/build.sh")/coredns"; declare -f build_coredns) | sha256sum | short)"
}
build_coredns() {
  local bin ref cid
  bin="$("$root/tests/cluster/build.sh")/coredns"
  ref="$(coredns_ref)"
  if ! has_image "$ref"; then
    cid=$(bh from --pull=never scratch)
    bh copy --quiet "$cid" "$bin" /coredns >/dev/null
    bh config --entrypoint '["/coredns"]' --user 65532:65532 "$cid"
    bh commit --quiet --format docker --rm "$cid" "$ref" >/dev/null
  fi
  echo "$ref"
}

build() { # NAME -> ref, built when missing
  local ref
  ref="$(ref_of "$1")"
  if has_image "$ref"; then echo "$ref"; return 0; fi
  # One build at a time in a store: two test workers (or a test run and the demo) would otherwise
  # build the same image, or the same base, twice at once on the same cores. The lock goes with
  # this subshell ($(build NAME)); the builder behind it then finds the image and builds nothing.
  mkdir -p "$store"
  exec 8>>"$store/build.lock"
  until flock -w 30 8; do log "$1: waiting for another build in $store to finish"; done
  case "$1" in
    pause) build_pause ;;
    coredns) build_coredns ;;
    operator | router | trainer) build_app "$1" ;;
  esac
  flock -u 8
}

ref_of() { # NAME -> ref, computed (nothing is built)
  case "$1" in
    pause) pause_ref ;;
    coredns) coredns_ref ;;
    operator | router | trainer) app_ref "$1" ;;
    *) die "unknown image $1 (operator, router, trainer, pause, coredns)" ;;
  esac
}

# --- into the node's containerd -----------------------------------------------------------------
# Streamed through a FIFO (docker-archive, uncompressed), so no copy of the image lands on disk
# on the way; containerd unpacks it at once so the first pod starts without waiting.
import_ref() { # DIR REF
  local dir=$1 ref=$2 sock fifo t0=$SECONDS
  sock="$dir/node/containerd/containerd.sock"
  [ -S "$sock" ] || die "no real node in $dir (no $sock): start it with tests/cluster/up.sh $dir"
  if [ -n "$(ctr -a "$sock" -n k8s.io images ls -q "name==$ref")" ]; then return 0; fi
  fifo="$dir/node/import.$$.fifo"
  rm -f "$fifo" && mkfifo "$fifo"
  bh push --quiet "$ref" "docker-archive:$fifo:$ref" &
  local pusher=$!
  progress "import $ref into the node" ctr -a "$sock" -n k8s.io images import "$fifo" || { kill "$pusher" 2>/dev/null; rm -f "$fifo"; return 1; }
  wait "$pusher"
  rm -f "$fifo"
  discard_layers "$sock" "$ref"
  log "$ref imported in $(fmt_seconds $((SECONDS - t0)))"
}

# The layer tarballs, once unpacked into snapshots, are not needed to run containers (what
# containerd's discard_unpacked_layers does for pulled images): drop them, half the image's
# disk (3.5 GB of the trainer's 7).
discard_layers() { # SOCK REF
  local manifest layer
  manifest=$(ctr -a "$1" -n k8s.io images ls "name==$2" | awk 'NR == 2 {print $3}')
  for layer in $(ctr -a "$1" -n k8s.io content get "$manifest" |
    python3 -c 'import json, sys; print(*(l["digest"] for l in json.load(sys.stdin)["layers"]))'); do
    ctr -a "$1" -n k8s.io content rm "$layer" >/dev/null
  done
}

cmd="${1:-}"
shift || true
case "$cmd" in
  build)
    ensure_tools
    (($#)) || set -- operator router trainer
    for n in "$@"; do
      ref="$(build "$n")"
      echo "$n=$ref"
    done
    ;;
  ref)
    ref_of "$1"
    ;;
  import)
    ensure_tools
    dir="$(cd "$1" && pwd)"
    shift
    (($#)) || set -- operator router trainer
    for n in "$@"; do
      ref="$(build "$n")"
      import_ref "$dir" "$ref"
      echo "$n=$ref"
    done
    ;;
  import-ref)
    ensure_tools
    import_ref "$(cd "$1" && pwd)" "$2"
    ;;
  push)
    ensure_tools
    registry=$1
    shift
    (($#)) || set -- operator router trainer
    for n in "$@"; do
      ref="$(build "$n")"
      dest="$registry/tuneroute/$n:${TUNEROUTE_IMAGE_TAG:-${ref##*:}}"
      progress "push $dest" bh push "$ref" "docker://$dest"
      echo "$n=$dest"
    done
    ;;
  *)
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
