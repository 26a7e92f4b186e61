#!/usr/bin/env bash
# The whole study in one command: train every arm x seed on the embedded default (make train's setting, strict
# scoring), evaluate every run and the base model on the same 200 held-out questions, write RESULTS.md.
#   experiments/hicra_vs_grpo/run.sh                          # SIZE=cpu: 3 arms x 3 seeds, about 90 min on 2 cores
#   ARMS="grpo hicra placebo placebo_spans entropy_reg high_entropy" SEEDS="0 1 2 3 4" experiments/hicra_vs_grpo/run.sh
#   SIZE=gpu experiments/hicra_vs_grpo/run.sh                 # 4x the prompts per step, 10 seeds (README: budget)
# Resumable: an arm x seed with a finished training run (tag `arm`) in MLflow experiment `hicra_vs_grpo` is skipped,
# and hicra-eval skips checkpoints it has already evaluated, so a study can be finished over several sittings.
# Extra arguments are Hydra overrides for the training runs; TRACKING_URI points every stage at another store.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/hicra_vs_grpo
PY=.venv/bin/python
SIZE=${SIZE:-cpu}
ARMS=${ARMS:-"grpo hicra placebo"}
URI=${TRACKING_URI:-sqlite:///$PWD/outputs/mlflow.db}
case "$SIZE" in
  cpu) SEEDS=${SEEDS:-"0 1 2"}; BUDGET=() ;;   # conf/train.yaml unchanged: 15 steps of 4 prompts x 8, 64 new tokens
  gpu) SEEDS=${SEEDS:-"0 1 2 3 4 5 6 7 8 9"}   # the same question with 4x the samples per update and 10 seeds
       BUDGET=(trainer=gpu prompts_per_step=16) ;;
  *) echo "run.sh: SIZE='$SIZE' is not allowed; use SIZE=cpu or SIZE=gpu" >&2; exit 2 ;;
esac
REPORT=($PY $HERE/report.py --tracking-uri "$URI")

make setup
# Seeds outermost: an interrupted study still has every arm of the seeds it finished. Per seed, the missing arms run
# as one Hydra multirun.
for seed in $SEEDS; do
  missing=$("${REPORT[@]}" --missing --seed "$seed" --arms $ARMS)
  if [ -z "$missing" ]; then
    echo "seed $seed: every arm has a finished run, skipped"
    continue
  fi
  .venv/bin/hicra-train -m seed="$seed" experiment="$missing" "logger.tracking_uri=$URI" "${BUDGET[@]}" "$@"
done

# The paper's evaluation at this task's scale: pass@1 from k = 4 samples at T = 0.6, top-p 0.95 (its AMC23 protocol),
# strict \boxed{}, on each run's own held-out questions; 128 new tokens, twice the training budget, so the budget does
# not decide the score (eval/truncated_frac says how often it still does).
EVAL=(benchmark=held_out protocol=paper protocol.num_samples=4 max_new_tokens=128 batch_size=25
      "logger.tracking_uri=$URI" logger.experiment_name=hicra_vs_grpo)
.venv/bin/hicra-eval checkpoint=experiment:hicra_vs_grpo "${EVAL[@]}"
# The base model as its own row: the same questions and protocol, with the training runs' system prompt.
if ! "${REPORT[@]}" --has-base; then
  SYSTEM_PROMPT=$($PY -c "from omegaconf import OmegaConf; print(OmegaConf.load('conf/train.yaml').system_prompt)")
  .venv/bin/hicra-eval model=smollm2_135m task=chain_sum "system_prompt='${SYSTEM_PROMPT//\\/\\\\}'" "${EVAL[@]}"
fi
"${REPORT[@]}" --command "SIZE=$SIZE ARMS=\"$ARMS\" SEEDS=\"$SEEDS\" $HERE/run.sh $*"
