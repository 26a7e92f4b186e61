#!/usr/bin/env bash
# The scale-out proofs that need CUDA and NCCL (issue 29), on a machine with `make setup` done and at least 2 GPUs
# (steps that need more are skipped). CPU tests prove the same logic over gloo with fakes (docs/scaling.md, "Several
# GPUs and nodes", says which); this script is what settles the real thing. Each step prints PASS/FAIL and its
# command; results (runs, exports, timings) go under $OUT (default outputs/multi_gpu).
#   benchmarks/run_multi_gpu.sh                 # everything that fits the visible GPUs
#   VLLM_PY=.venv-vllm/bin/python benchmarks/run_multi_gpu.sh   # also the vLLM colocate steps (docs/vllm.md)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/multi_gpu}
BIN=${BIN:-.venv/bin}
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)
mkdir -p "$OUT"
failed=0
step() { echo; echo "== $1"; }
run() { echo "+ $*"; if "$@"; then echo "PASS"; else echo "FAIL ($?)"; failed=1; fi; }
[ "$GPUS" -ge 2 ] || { echo "run_multi_gpu.sh: $GPUS GPU(s) visible, 2 needed" >&2; exit 2; }
TINY=(experiment=smoke logger=none prompts_per_step=2 checkpoint_every_n_steps=1)

step "FSDP start-up over NCCL: rank 0 loads, rank 1 starts on meta; an offloaded reference stays in host memory"
run "$BIN/python" -m pytest -q -p no:xdist -m gpu tests/training/test_fsdp_startup.py

step "Sharded checkpoint: 2 ranks write shards, 1 rank resumes them, hicra-export makes a Hugging Face folder"
run "$BIN/hicra-train" "${TINY[@]}" trainer=fsdp trainer.devices=2 trainer.max_steps=2 hydra.run.dir="$OUT/sharded"
run ls "$OUT/sharded/checkpoints/last.ckpt/meta.pt" "$OUT/sharded/checkpoints/last.ckpt/__1_0.distcp"
run "$BIN/hicra-train" "${TINY[@]}" trainer=fsdp trainer.devices=1 trainer.max_steps=3 hydra.run.dir="$OUT/sharded" ckpt_path=auto
run "$BIN/hicra-export" "$OUT/sharded/checkpoints/last.ckpt" "$OUT/sharded_hf"
run "$BIN/python" -c "from transformers import AutoModelForCausalLM as A; A.from_pretrained('$OUT/sharded_hf')"

step "One gradient exchange per update under FSDP (against one per micro-batch): perf/update_s, perf/peak_memory_gib"
for every in false true; do
  run "$BIN/hicra-train" experiment=gpu_small trainer=fsdp trainer.devices=2 trainer.max_steps=3 logger=none \
    micro_batch_size=4 reduce_gradients_every_micro_batch=$every hydra.run.dir="$OUT/grad_sync_$every"
done

step "Decoding: host syncs batched every 8 tokens against a check per token (one GPU, the GPU preset)"
for every in 1 8; do
  run "$BIN/python" benchmarks/bench_decode.py --preset gpu --variants loop --stop-check-every $every --repeats 5 \
    --out "$OUT/decode_stop_check_$every.json"
done

if [ -n "${VLLM_PY:-}" ]; then
  VBIN=$(dirname "$VLLM_PY")
  step "vLLM colocate: an engine per rank, one engine over 2 ranks, under DDP and FSDP, LoRA merged (docs/vllm.md)"
  for extra in "trainer=ddp" "trainer=ddp rollout.tensor_parallel_size=2" "trainer=fsdp" \
               "trainer=fsdp rollout.tensor_parallel_size=2 lora=default"; do
    # shellcheck disable=SC2086  # $extra holds several overrides
    run "$VBIN/hicra-train" experiment=gpu_small rollout=vllm trainer.devices=2 trainer.max_steps=5 logger=none $extra
  done
fi
echo
[ $failed -eq 0 ] && echo "run_multi_gpu.sh: every step passed" || echo "run_multi_gpu.sh: some steps failed"
exit $failed
