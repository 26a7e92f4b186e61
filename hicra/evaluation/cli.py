"""`hicra-eval`: compose conf/eval.yaml, check it, evaluate, print a table.

    hicra-eval checkpoint=<MLflow run id> protocol=paper
    hicra-eval checkpoint=outputs/runs/<date>/<time>/final_model benchmark=champ protocol=greedy limit=20
    hicra-eval model=smollm2_135m benchmark=chain_sum protocol=pass_at_k
    hicra-eval checkpoint=experiment:hicra_vs_grpo benchmark=held_out protocol=paper
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from hicra.config.checks import run_checked
from hicra.config.schema import EVAL
from hicra.errors import ConfigError
from hicra.tracking.store import PROJECT_ROOT

CONF_DIR = PROJECT_ROOT / "conf"
PROG = "hicra-eval"


def _fail(err: BaseException) -> None:
    lines = str(err).strip().splitlines()
    print(f"{PROG}: error: {lines[0] if lines else type(err).__name__}", file=sys.stderr, flush=True)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    from hicra.evaluation.evaluate import evaluate

    runtime = HydraConfig.get().runtime
    choices = {g: str(o) for g, o in runtime.choices.items() if not g.startswith("hydra")}
    try:
        evaluate(cfg, choices, Path(runtime.output_dir))
    except (ConfigError, OmegaConfBaseException) as err:
        _fail(err)


def main() -> None:
    """Console entry point: one-line errors for bad options, `--help`, then Hydra (torch loads only after that)."""
    run_checked(PROG, _hydra_main, CONF_DIR, "eval", job_name=Path(__file__).stem,  # Hydra's job name: "cli"
                schema=EVAL)


if __name__ == "__main__":
    main()
