# The GPU scripts' common start; sourced, from distributed.sh and grpo.sh:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh" DEFAULT_OUT_DIR "$@"
# It goes to the repository root and sets `out` (the script's first argument, else $OUT, else the
# default; made) and `say` (a progress line with the seconds since the start); installs the wheels
# tests/gpu/fetch_wheels.sh carried (.whl/) into /tmp/site; puts the trainer and tuneroute_testing
# on the path; and writes the GPU stack's versions to $out/versions.txt (it fails without a GPU).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
script=$(basename "${BASH_SOURCE[1]:-$0}")
out="${2:-${OUT:-$1}}"
mkdir -p "$out"
t0=$SECONDS
say() { echo "$script: $* ($((SECONDS - t0)) s)" >&2; }

if compgen -G ".whl/*.whl" >/dev/null; then
  say "installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/trainer-image:$PWD/tests/support${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRL_EXPERIMENTAL_SILENCE=1
python3 -c 'import torch, transformers, trl, peft; assert torch.cuda.is_available(), "no GPU"; print("torch", torch.__version__, torch.cuda.device_count(), "x", torch.cuda.get_device_name(0), "NCCL", torch.cuda.nccl.version(), "transformers", transformers.__version__, "trl", trl.__version__, "peft", peft.__version__)' | tee "$out/versions.txt"
