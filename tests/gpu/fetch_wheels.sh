#!/usr/bin/env bash
# Download, here (PyPI reachable), the wheels tests/gpu/grpo.sh (and distributed.sh) need on a GPU machine whose image has torch,
# triton and the common scientific stack but not the trainer's pinned packages. Versions come from
# requirements.lock; the GPU image's Python is 3.12. Writes .whl/ (git-ignored through .git/info/exclude).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>"$(git rev-parse --git-common-dir)/info/exclude"
pins=(transformers trl peft accelerate datasets tokenizers huggingface-hub safetensors pydantic pydantic-core
  annotated-types typing-inspection jsonschema jsonschema-specifications referencing rpds-py dill multiprocess)
want=()
for p in "${pins[@]}"; do
  line=$(grep -i "^${p}==" requirements.lock) || { echo "fetch_wheels.sh: $p is not in requirements.lock" >&2; exit 1; }
  want+=("$line")
done
platforms=()
for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl "${want[@]}"
du -sh .whl >&2
