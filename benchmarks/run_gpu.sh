#!/usr/bin/env bash
# Run THERE (the GPU host, no network), from a tree that carries benchmarks/.gpu_carry (made by prepare_gpu.sh here).
# Installs the carried wheels offline into the host's Python (packages it already has are kept when they fit), then
# measures, in about 8 minutes on one H200 (each stage bounded by `timeout`, so one slow stage cannot eat the rest):
#   1. bench_decode.py --preset gpu: generate (dynamic cache), generate with a static compiled cache, hicra's loop,
#      and the forward floor;
#   2. bench_step.py --preset gpu, SmolLM2 shape, checkpointing off: hicra sampling with the static cache (the
#      preset's default) against TRL;
#   3. the same with hicra's decoding loop (rollout.cache_implementation=null).
# JSON + Markdown go to $OUT (or benchmarks/results/). Extra arguments go to both bench_step.py runs.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
CARRY=benchmarks/.gpu_carry
if [[ ! -d $CARRY/wheels || ! -d $CARRY/tokenizer ]]; then
  echo "run_gpu.sh: $CARRY is missing; run benchmarks/prepare_gpu.sh on the development machine and carry it" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# PIP_BREAK_SYSTEM_PACKAGES: the host's Python may be "externally managed"; this is a throw-away machine.
PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install -q --disable-pip-version-check --no-index --find-links "$CARRY/wheels" \
  "trl==1.16.0" datasets hydra-core omegaconf || exit 3
"$PY" -c "import trl, datasets, hydra, omegaconf, torch, transformers; print('trl', trl.__version__, '| torch', \
torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available())" || exit 3
out_dir=${OUT:-benchmarks/results}
stem="$out_dir/gpu-$(hostname | tr -c 'A-Za-z0-9-\n' '-' | cut -c1-24)-$(date +%Y%m%d-%H%M)"
# hicra is not installed there: the tree itself is the package.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
timeout 120 "$PY" benchmarks/bench_decode.py --preset gpu --repeats 3 --tokenizer "$CARRY/tokenizer" \
  --out "$stem-decode.json" || status=$?
timeout 200 "$PY" benchmarks/bench_step.py --preset gpu --model smollm2 --gradient-checkpointing off --steps 4 \
  --tokenizer "$CARRY/tokenizer" --out "$stem-static" "$@" || status=$?
timeout 170 "$PY" benchmarks/bench_step.py --preset gpu --model smollm2 --gradient-checkpointing off --steps 4 \
  --tokenizer "$CARRY/tokenizer" --hicra-override rollout.cache_implementation=null --out "$stem-loop" "$@" \
  || status=$?
exit $status
