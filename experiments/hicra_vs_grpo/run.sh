#!/usr/bin/env bash
# The paired study in one command: every arm x seed on the embedded default (make train's setting, strict scoring),
# the same seeds in every arm, then report.py (RESULTS.md: each arm minus GRPO seed by seed).
#   experiments/hicra_vs_grpo/run.sh                          # 6 arms x 6 seeds, 7-13 min per run on 2 cores
#   SEEDS="0 1 2" ARMS="grpo hicra" experiments/hicra_vs_grpo/run.sh
#   ARMS="grpo entropy_reg high_entropy" experiments/hicra_vs_grpo/run.sh   # the optional arms
# Resumable: an arm x seed with a finished training run (tag `arm`) in MLflow experiment `hicra_vs_grpo` is skipped,
# so a study can be finished over several sittings; seeds are outermost, so an interrupted study holds every arm of
# the seeds it finished, and the report pairs only seeds present in both arms. Extra arguments are Hydra overrides for
# the training runs; TRACKING_URI points every stage at another store. The report covers every arm with finished runs
# in the store (ARMS picks what to train), so a sitting that trains one arm still writes the whole study's RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/hicra_vs_grpo
PY=.venv/bin/python
SEEDS=${SEEDS:-"0 1 2 3 4 5"}
ARMS=${ARMS:-"grpo hicra hicra_mined hicra_alpha placebo placebo_spans"}
URI=${TRACKING_URI:-sqlite:///$PWD/outputs/mlflow.db}
REPORT=($PY $HERE/report.py --tracking-uri "$URI")

make setup
for seed in $SEEDS; do
  missing=$("${REPORT[@]}" --missing --seed "$seed" --arms $ARMS)
  if [ -z "$missing" ]; then
    echo "seed $seed: every arm has a finished run, skipped"
    continue
  fi
  .venv/bin/hicra-train -m seed="$seed" experiment="$missing" "logger.tracking_uri=$URI" "$@"
done
"${REPORT[@]}" --command "SEEDS=\"$SEEDS\" ARMS=\"$ARMS\" $HERE/run.sh $*"
