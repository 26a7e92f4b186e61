#!/usr/bin/env bash
# GRPO vs HICRA vs entropy-regularised GRPO on the embedded default (SmolLM2-135M-Instruct, chain_sum),
# 3 seeds each: 9 runs in the MLflow experiment `hicra_vs_grpo_chain_sum`. Extra overrides pass through, e.g.
#   experiments/hicra_vs_grpo_chain_sum/launch.sh trainer=gpu trainer.max_steps=200
set -euo pipefail
cd "$(dirname "$0")/../.."
make setup
.venv/bin/hicra-train -m \
  experiment=grpo_chain_sum,hicra_chain_sum,entropy_reg_chain_sum \
  seed=0,1,2 \
  "$@"
