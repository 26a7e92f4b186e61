#!/usr/bin/env bash
# The learning curve of `make train` as it was until issue 27 (experiment=chain_sum_default: chain_sum, one worked
# example, format reward 0.5) once per seed, the base model's answers read leniently (what it knows before it learns
# the answer form), then report.py (RESULTS.md, curve PNG, JSON).
#   experiments/learning_curve/run.sh                 # seeds 0 1 2
#   SEEDS="0 1 2 3 4" experiments/learning_curve/run.sh
# Resumable: a seed with a finished run in the MLflow experiment `learning_curve` is skipped. Time it on an idle
# machine: the wall times it reports are the point.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${SEEDS:-"0 1 2"}
EXPERIMENT=${EXPERIMENT:-learning_curve}
PY=.venv/bin/python
HERE=experiments/learning_curve

make setup
for seed in $SEEDS; do
  if $PY $HERE/report.py --experiment $EXPERIMENT --has-seed "$seed"; then
    echo "seed $seed: finished run found in '$EXPERIMENT', skipped"
    continue
  fi
  make train ARGS="experiment=chain_sum_default seed=$seed logger.experiment_name=$EXPERIMENT"
done

# The same 200 held-out questions, base model, greedy, last number read when there is no box: the correctness the
# base model has before any training, which strict scoring hides (it boxes none of these replies).
if ! $PY $HERE/report.py --experiment $EXPERIMENT --has-lenient-base; then
  SYSTEM_PROMPT=$($PY -c "from omegaconf import OmegaConf; print(OmegaConf.load('conf/experiment/chain_sum_default.yaml').system_prompt)")
  .venv/bin/hicra-eval model=smollm2_135m task=chain_sum benchmark=held_out protocol=greedy task.last_number_fallback=true \
    "system_prompt='${SYSTEM_PROMPT//\\/\\\\}'" max_new_tokens=64 batch_size=100 logger.experiment_name=$EXPERIMENT
fi
$PY $HERE/report.py --experiment $EXPERIMENT --command "experiments/learning_curve/run.sh (SEEDS=\"$SEEDS\")"
