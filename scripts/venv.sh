#!/usr/bin/env bash
# Create (once) and print the project's virtual environment, a cache outside the repo:
#   - third-party packages from requirements.lock, keyed by its hash (uv hard-links them from
#     its cache, so a second environment costs seconds, not gigabytes);
#   - this checkout's four packages (operator, trainer, router, test support) installed in
#     editable mode, so the key also includes the checkout's path: two checkouts (git
#     worktrees) never import each other's code.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/lib.sh"
UV_VERSION=0.13.9
cache="${TUNEROUTE_CACHE:-$HOME/.cache/tuneroute}"
key=$( (cat "$root/requirements.lock"; python3 --version; echo "$root"; cat "$root"/{operator,trainer-image,router-image,tests/support}/pyproject.toml) | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  t0=$SECONDS
  echo "venv: creating $venv from requirements.lock (first time: a few GB, a few minutes)..." >&2
  command -v uv >/dev/null 2>&1 && uv --version | grep -q "$UV_VERSION" || python3 -m pip install -q "uv==$UV_VERSION" >&2
  rm -rf "$venv"
  uv venv -q --python "$(command -v python3)" "$venv" >&2
  uv pip install -q --python "$venv/bin/python" -r "$root/requirements.lock" >&2
  echo "venv: third-party packages installed ($((SECONDS - t0)) s); now this checkout's packages, editable" >&2
  uv pip install -q --python "$venv/bin/python" --no-deps \
    -e "$root/operator" -e "$root/trainer-image" -e "$root/router-image" -e "$root/tests/support" >&2
  touch "$venv/.complete"
  echo "venv: ready in $((SECONDS - t0)) s" >&2
fi
compile_bytecode "$venv"
echo "$venv"
