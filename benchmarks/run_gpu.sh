#!/usr/bin/env bash
# Run THERE (the GPU host, no network), from a tree that carries benchmarks/.gpu_carry (made by prepare_gpu.sh here).
# Installs the carried wheels offline into the host's Python (packages it already has are kept when they fit), then
# runs benchmarks/gpu_check.py: the gpu test tier and the speed probes, each stage bounded by `timeout` inside one
# budget of under 8 minutes on one H100 (one slow stage cannot eat the rest):
#   gpu_tier      pytest -m gpu (tests/gpu): decode = generate on CUDA, at most one device sync per decoded token,
#                 the bf16 KV cache, a bf16-mixed step against the memory plan, FSDP on one GPU over NCCL with validation;
#   decode_speed  bench_decode.py --preset gpu: generate, static compiled cache, hicra's loop, the forward floor;
#   step_speed    bench_step.py --preset gpu, SmolLM2 shape, hicra's decoding loop against TRL.
# What needs 2+ GPUs (NCCL start-up, sharded checkpoints across ranks, vLLM colocate): benchmarks/run_multi_gpu.sh.
# JSON goes to $OUT (or benchmarks/results/): gpu_check.json (every stage's record), gpu_tier.xml, the benchmarks'.
# Extra arguments go to gpu_check.py (--budget-s, --dry-run).
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
# The test runner and Lightning, only where the host lacks them, without their optional extras (fsspec[http] would
# ask for aiohttp): the carry holds exactly these.
for pkg in "pytest pytest pluggy iniconfig pygments" \
           "pytorch_lightning pytorch-lightning lightning-utilities torchmetrics"; do
  read -r -a parts <<< "$pkg"  # the import name, then the wheels
  "$PY" -c "import ${parts[0]}" 2>/dev/null || PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install -q \
    --disable-pip-version-check --no-index --find-links "$CARRY/wheels" --no-deps "${parts[@]:1}" || exit 3
done
"$PY" -c "import trl, datasets, hydra, omegaconf, torch, transformers, pytest, pytorch_lightning; print('trl', \
trl.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| cuda', \
torch.cuda.is_available())" || exit 3
# hicra is not installed there: the tree itself is the package (gpu_check.py puts it on PYTHONPATH).
exec "$PY" benchmarks/gpu_check.py --out "${OUT:-benchmarks/results}" "$@"
