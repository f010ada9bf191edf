#!/usr/bin/env bash
# Create (once) and print the project's virtual environment: a cache outside the repo keyed
# by the hash of requirements.lock, so CI on the same machine reuses it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UV_VERSION=0.13.9
cache="${TUNEROUTE_CACHE:-$HOME/.cache/tuneroute}"
key=$( (cat "$root/requirements.lock"; python3 --version) | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "creating $venv from requirements.lock (first time: a few GB, several minutes)..." >&2
  command -v uv >/dev/null 2>&1 && uv --version | grep -q "$UV_VERSION" || python3 -m pip install -q "uv==$UV_VERSION" >&2
  rm -rf "$venv"
  uv venv -q --python "$(command -v python3)" "$venv" >&2
  uv pip install -q --python "$venv/bin/python" -r "$root/requirements.lock" >&2
  touch "$venv/.complete"
fi
echo "$venv"
