#!/usr/bin/env bash
# The whole study in one command: train the five arms x 3 seeds, evaluate every run on its own held-out questions
# with the paper's protocol, compare the arms, and write experiments/hicra_vs_grpo/RESULTS.md.
#   experiments/hicra_vs_grpo/run.sh                 # SIZE=cpu: about 1.5 h on a 2-core CPU
#   SIZE=gpu experiments/hicra_vs_grpo/run.sh        # full size, one GPU
# Extra arguments are Hydra overrides for the training runs. TRACKING_URI points all stages at another store.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/hicra_vs_grpo
SIZE=${SIZE:-cpu}
URI=${TRACKING_URI:-sqlite:///$PWD/outputs/mlflow.db}
START=$(date +%s)
make setup
case "$SIZE" in
  cpu) EVAL=(protocol.num_samples=4 max_new_tokens=48 batch_size=32) ;;   # k=4 at T=0.6 (the paper's AMC23 k)
  gpu) EVAL=(max_new_tokens=256 batch_size=64) ;;                           # the paper's k=8 at T=0.6
  *) echo "run.sh: SIZE='$SIZE' is not allowed; use SIZE=cpu or SIZE=gpu" >&2; exit 2 ;;
esac
SIZE=$SIZE $HERE/train.sh "logger.tracking_uri=$URI" "$@"
.venv/bin/hicra-eval checkpoint=experiment:hicra_vs_grpo benchmark=held_out protocol=paper \
  "logger.tracking_uri=$URI" "${EVAL[@]}"
.venv/bin/hicra-compare --experiment hicra_vs_grpo --tracking-uri "$URI" --out $HERE/results --threshold 0.25
.venv/bin/python $HERE/write_results.py --results $HERE/results --tracking-uri "$URI" --seconds $(( $(date +%s) - START )) \
  --command "SIZE=$SIZE $HERE/run.sh $*"
