#!/usr/bin/env bash
# Stage 1 of the study: the five arms x 3 seeds as one Hydra multirun (MLflow experiment `hicra_vs_grpo`).
# SIZE=cpu (default): 15 runs x ~4 min on a 2-core CPU (6 steps of 2 prompts x 8, 48 new tokens); SIZE=gpu is the
# full-size version (200 steps of 16 prompts x 8, 256 new tokens).
# Extra arguments are Hydra overrides for every run, e.g. `train.sh logger.tracking_uri=http://mlflow:5000`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
case "${SIZE:-cpu}" in
  cpu) BUDGET=(trainer=cpu trainer.max_steps=6 val_every_n_steps=6 rollout.max_new_tokens=48 checkpoint_every_n_steps=0) ;;
  gpu) BUDGET=(trainer=gpu trainer.max_steps=200 val_every_n_steps=20 prompts_per_step=16 rollout.max_new_tokens=256
               task.val_size=64) ;;
  *) echo "train.sh: SIZE='${SIZE}' is not allowed; use SIZE=cpu or SIZE=gpu" >&2; exit 2 ;;
esac
# Seeds outermost: an interrupted study still has every arm for the seeds it finished.
"$PY" -m hicra.training.cli -m seed=0,1,2 \
  experiment=hicra_vs_grpo/grpo,hicra_vs_grpo/hicra,hicra_vs_grpo/entropy_reg,hicra_vs_grpo/high_entropy,hicra_vs_grpo/placebo \
  "${BUDGET[@]}" "$@"
