"""hicra/options.py is the one home of each setting's allowed values: the schema and the code that acts on a value
read the same tuple, and the module loads without torch (the command line's checks run before torch loads)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from hicra import options
from hicra.algorithms.losses import aggregate
from hicra.config import schema
from hicra.config.values import check_values
from hicra.errors import ConfigError


def test_the_schema_and_the_code_read_the_same_tuples():
    from hicra.algorithms import advantages, losses, sampler_correction, schedules
    from hicra.models.loaders import _DTYPES
    from hicra.planning import random_placebo
    from hicra.rollout import hf

    pairs = {
        "AGGREGATIONS": (schema.AGGREGATIONS, losses.AGGREGATIONS),
        "KL_ESTIMATORS": (schema.KL_ESTIMATORS, losses.KL_ESTIMATORS),
        "ADVANTAGE_SCALES": (schema.ADVANTAGE_SCALES, advantages.ADVANTAGE_SCALES),
        "REINFORCE_PP_BASELINES": (schema.REINFORCE_PP_BASELINES, advantages.REINFORCE_PP_BASELINES),
        "SAMPLER_CORRECTIONS": (schema.SAMPLER_CORRECTIONS, sampler_correction.SAMPLER_CORRECTIONS),
        "LR_DECAYS": (schema.LR_DECAYS, schedules.LR_DECAYS),
        "PLACEBO_MODES": (schema.PLACEBO_MODES, random_placebo.MODES),
    }
    for name, (in_schema, in_code) in pairs.items():
        assert in_schema is getattr(options, name) and in_code is getattr(options, name), name  # not a copy
    assert tuple(_DTYPES) == options.MODEL_DTYPES and schema.MODEL_DTYPES is options.MODEL_DTYPES
    assert hf.CACHE_IMPLEMENTATIONS == (None, *options.CACHE_IMPLEMENTATIONS)
    assert schema.CACHE_IMPLEMENTATIONS is options.CACHE_IMPLEMENTATIONS
    from hicra.training import find_checkpoint

    assert schema.CKPT_KEYWORDS is options.CKPT_KEYWORDS
    assert (find_checkpoint.KEYWORD_LAST, find_checkpoint.AUTO) == options.CKPT_KEYWORDS


def test_a_value_outside_the_list_is_refused_by_the_schema_and_by_the_code():
    cfg = OmegaConf.create({"algorithm": {"aggregation": "seq_sum"}})
    with pytest.raises(ConfigError, match="token_mean, seq_mean_token_mean, seq_mean_token_sum_norm"):
        check_values(cfg, schema.TRAIN)
    with pytest.raises(ValueError, match="seq_sum"):
        aggregate(torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), mode="seq_sum")


def test_the_lists_and_the_schema_load_without_torch():
    code = "import sys, hicra.options, hicra.config.schema; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
