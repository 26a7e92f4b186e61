#!/usr/bin/env bash
# Learning parity with TRL: hicra's GRPO and TRL's GRPOTrainer on experiment=chain_sum_default (same model, task, reward,
# prompts in the same order, G, token budget, sampling, clip range, optimizer, steps), seeds interleaved so that a
# drift of the machine's speed falls on both arms alike; then report.py (RESULTS.md, PNG, JSON).
#   experiments/learning_parity/run.sh                 # seeds 0 1 2
#   SEEDS="0 1 2 3 4" experiments/learning_parity/run.sh
# Resumable: an arm x seed with a finished run in the MLflow experiment `learning_parity` is skipped. Run it on an
# idle machine: wall time per run is half of the verdict.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEEDS=${SEEDS:-"0 1 2"}
EXPERIMENT=learning_parity
PY=.venv/bin/python
HERE=experiments/learning_parity

make setup
PYTHONWARNINGS="ignore:Editable installation" $PY -m pip install -q --disable-pip-version-check -e ".[bench]"  # TRL
for seed in $SEEDS; do
  if $PY $HERE/report.py --has hicra --seed "$seed"; then
    echo "hicra seed $seed: finished run found, skipped"
  else
    .venv/bin/hicra-train experiment=chain_sum_default algorithm=grpo planner=none seed="$seed" logger.experiment_name=$EXPERIMENT \
      +logger.tags.framework=hicra
  fi
  if $PY $HERE/report.py --has trl --seed "$seed"; then
    echo "trl seed $seed: finished run found, skipped"
  else
    $PY $HERE/trl_grpo.py --seed "$seed" --experiment $EXPERIMENT
  fi
done
$PY $HERE/report.py --command "experiments/learning_parity/run.sh (SEEDS=\"$SEEDS\")"
