#!/usr/bin/env bash
# Run THERE (the GPU host, no network), from a tree that carries benchmarks/.gpu_carry (made by prepare_gpu.sh here).
# Installs the carried wheels offline into the host's Python (packages it already has are kept when they fit), then
# runs the gpu preset; JSON + Markdown go to $OUT (or benchmarks/results/). Extra arguments go to bench_step.py:
#   benchmarks/run_gpu.sh --model smollm2 --gradient-checkpointing off --steps 3
set -euo pipefail
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
  "trl==1.16.0" datasets hydra-core omegaconf
"$PY" -c "import trl, datasets, hydra, omegaconf, torch, transformers; print('trl', trl.__version__, '| torch', \
torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available())"
out_dir=${OUT:-benchmarks/results}
# hicra is not installed there: the tree itself is the package.
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" benchmarks/bench_step.py --preset gpu \
  --tokenizer "$CARRY/tokenizer" --out "$out_dir/gpu-$(hostname | tr -c 'A-Za-z0-9-\n' '-' | cut -c1-24)-$(date +%Y%m%d-%H%M)" "$@"
