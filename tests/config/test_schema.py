"""The schema of conf/ (hicra/config/schema.py): a rule for every value key of every option of every group, no
shipped option refused, enums equal to the code's own lists, each kind of rule refusing what it should, and a sweep
expanded into the jobs Hydra will launch."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf
from support import CONF_DIR, composer

from hicra.config import schema
from hicra.config.checks import group_options
from hicra.config.rules import integer, number, numbers, one_of, text
from hicra.config.sweep import jobs
from hicra.config.values import accepted_arguments, check_keys, check_target_arguments, check_values

EVAL_GROUPS = ("benchmark", "protocol")
TRAIN_GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", *EVAL_GROUPS))
# The one value each of these options leaves to the user (`???`); a value, not a file: nothing is read here.
MANDATORY = {("task", "local_file"): ["task.path=data.jsonl"], ("model", "hf"): ["model.name_or_path=org/model"],
             ("benchmark", "local_file"): ["benchmark.task.path=data.jsonl"]}
CASES = [("train", g, o) for g in TRAIN_GROUPS for o in group_options(CONF_DIR, g)] + \
        [("eval", g, o) for g in EVAL_GROUPS for o in group_options(CONF_DIR, g)]


def _mandatory(group: str, option: str) -> list[str]:
    return ["task.path=data.jsonl"] if option.startswith("paper/") else MANDATORY.get((group, option), [])


def _unruled(tree: dict, prefix: str, rules: dict) -> list[str]:
    """Value keys without a rule: interpolations are checked at their source, `_target_`-like keys by Hydra."""
    missing = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        nested_target = isinstance(value, dict) and "_target_" in value  # its keys have rules of their own
        group_off = value is None and any(rule.startswith(f"{path}.") for rule in rules)  # lora=none: `lora: null`
        if (path in rules and not nested_target) or group_off or str(key).startswith("_") or \
                (isinstance(value, str) and value.startswith("${")):
            continue
        if isinstance(value, dict):
            missing += _unruled(value, f"{path}.", rules)
        else:
            missing.append(path)
    return missing


@pytest.mark.parametrize("root,group,option", CASES, ids=[f"{r}:{g}={o}" for r, g, o in CASES])
def test_every_value_key_has_a_rule_and_every_shipped_option_passes(root, group, option):
    from hydra.core.global_hydra import GlobalHydra

    try:
        cfg = composer(root)(f"{group}={option}", *_mandatory(group, option))
    finally:
        GlobalHydra.instance().clear()
    rules = schema.TRAIN if root == "train" else schema.EVAL
    assert _unruled(OmegaConf.to_container(cfg, resolve=False), "", rules) == []
    check_keys(cfg, rules)
    check_values(cfg, rules)
    check_target_arguments(cfg)


def test_enums_are_the_codes_own_lists():
    from typing import get_args

    from lightning_fabric.plugins.precision.precision import (
        _PRECISION_INPUT_INT,
        _PRECISION_INPUT_STR,
        _PRECISION_INPUT_STR_ALIAS,
    )

    from hicra.algorithms.advantages import ADVANTAGE_SCALES
    from hicra.algorithms.losses import AGGREGATIONS, KL_ESTIMATORS
    from hicra.models.loaders import _DTYPES
    from hicra.rollout.hf import CACHE_IMPLEMENTATIONS

    assert (schema.AGGREGATIONS, schema.KL_ESTIMATORS, schema.ADVANTAGE_SCALES) == (
        AGGREGATIONS, KL_ESTIMATORS, ADVANTAGE_SCALES)
    from hicra.algorithms.advantages import REINFORCE_PP_BASELINES
    assert schema.REINFORCE_PP_BASELINES == REINFORCE_PP_BASELINES
    from hicra.algorithms.schedules import LR_DECAYS
    assert schema.LR_DECAYS == LR_DECAYS
    from hicra.algorithms.sampler_correction import SAMPLER_CORRECTIONS
    assert schema.SAMPLER_CORRECTIONS == SAMPLER_CORRECTIONS
    assert schema.MODEL_DTYPES == tuple(_DTYPES)
    assert (None, *schema.CACHE_IMPLEMENTATIONS) == CACHE_IMPLEMENTATIONS
    lightnings = {*get_args(_PRECISION_INPUT_INT), *get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS)}
    assert set(schema.PRECISIONS) == lightnings


@pytest.mark.parametrize("rule,accepted,refused", [
    (integer(1), [1, 7], [0, 2.5, True, "3", None]),
    (integer(0, 2**32 - 1), [0, 2**32 - 1], [-1, 2**32]),
    (number(0, lo_open=True), [1e-6, 3], [0, -1e-3, math.nan, math.inf, False, "1e-3"]),
    (number(0, 1, hi_open=True, null=True), [0, 0.5, None], [1, 1.5]),
    (one_of("bf16-mixed", 16), ["bf16-mixed", 16], ["16", "bogus", 16.0]),
    (text(null=True), ["x", None], ["", "  ", 3]),
    (numbers(2, 0, 1, hi_open=True), [[0.9, 0.99]], [[0.9], [0.9, 1.0], "0.9"]),
])
def test_a_rule_accepts_its_values_and_refuses_the_rest(rule, accepted, refused):
    assert all(rule(v) for v in accepted) and not any(rule(v) for v in refused)


def test_a_sweep_expands_into_the_jobs_hydras_basic_sweeper_launches():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = ["-m", "seed=0,1", "algorithm=grpo,hicra", "trainer.max_steps=3", "hydra.sweep.dir=x", "seed=2,3"]
    lines = [a for a in args if "=" in a and not a.startswith("hydra")]
    (hydras,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)
    assert jobs(args) == hydras and len(hydras) == 4  # the later seed sweep replaced the first


def test_an_optuna_interval_stands_for_its_two_ends():
    params = {"algorithm.alpha": "interval(0.0, 0.5)", "algorithm.aggregation": "choice(token_mean, seq_mean_token_mean)"}
    assert jobs(["-m", "algorithm.alpha=0.3"], params) == [["algorithm.alpha=0.3", "algorithm.aggregation=token_mean"],
                                                         ["algorithm.alpha=0.3",
                                                          "algorithm.aggregation=seq_mean_token_mean"]]
    assert [job[0] for job in jobs(["-m"], params)] == ["algorithm.alpha=0.0"] * 2 + ["algorithm.alpha=0.5"] * 2


def test_a_targets_arguments_are_its_signatures_and_kwargs_pass_anything():
    from hicra.tasks import LocalFileTask, ReasoningGymTask
    from hicra.tracking.resumable_logger import ResumableMLFlowLogger

    assert "val_size" in accepted_arguments(LocalFileTask) and "train_size" not in accepted_arguments(LocalFileTask)
    assert accepted_arguments(ReasoningGymTask) is None  # **difficulty: reasoning-gym's knobs, documented
    assert "experiment_name" in accepted_arguments(ResumableMLFlowLogger)  # (*args, **kwargs) read through its base
