"""Every option of every config group composes with the Hydra compose API and instantiates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from support import CONF_DIR

from hicra.algorithms import Algorithm
from hicra.config.checks import group_options
from hicra.config.instantiate import build
from hicra.errors import ConfigError

GROUPS = ["algorithm", "planner", "model", "task", "rollout", "trainer", "logger", "extra_loggers", "experiment"]
# Options that need one value the user must give (`???` in their file).
REQUIRED = {("model", "hf"): ["model.name_or_path={tiny_dir}"], ("task", "local_file"): ["task.path={data}"]}
# Options whose package is optional: they compose anywhere, and building them without it is a one-line ConfigError.
USABLE_HERE = {"hicra.rollout.vllm.VLLMSampler": importlib.util.find_spec("vllm") is not None
               and torch.cuda.is_available()}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_groups_have_the_contract_options():
    assert {"grpo", "hicra", "entropy_reg", "gspo", "dr_grpo", "grpo_kl_reward", "rloo", "rloo_hicra", "reinforce_pp",
            "reinforce_pp_hicra"} <= set(options("algorithm"))
    assert {"adamw", "adamw_kahan"} <= set(options("optim"))
    assert {"none", "constant_warmup", "linear", "cosine"} <= set(options("lr_schedule"))
    assert {"none", "strategic_grams", "high_entropy"} <= set(options("planner"))
    assert {"smollm2_135m", "tiny", "hf"} <= set(options("model"))
    assert {"chain_sum", "basic_arithmetic", "gsm_symbolic", "countdown", "local_file"} <= set(options("task"))
    assert {"hf", "vllm"} <= set(options("rollout"))
    assert {"cpu", "gpu"} <= set(options("trainer")) and {"mlflow", "none"} <= set(options("logger"))


def test_hicra_is_grpo_plus_the_token_transform(compose_cfg):
    grpo, hicra = compose_cfg("algorithm=grpo").algorithm, compose_cfg("algorithm=hicra").algorithm
    changed = {k for k in set(grpo) | set(hicra) if grpo.get(k) != hicra.get(k)}
    assert changed == {"alpha", "needs_planning_mask", "token_advantage_fn"}
    assert hicra.alpha == 0.2


@pytest.mark.parametrize("option", options("algorithm"))
def test_each_algorithm_setting_is_set_in_one_place(option, compose_cfg):
    """group_size, clip_low/clip_high and alpha (where an option has it) are set at the top of `algorithm` and reach
    the functions bound to them, the validated fields and the logged config alike."""
    values = {"group_size": 6, "clip_low": 0.15, "clip_high": 0.3, "alpha": 0.35}
    node = compose_cfg(f"algorithm={option}").algorithm
    overrides = [f"algorithm.{k}={v}" for k, v in values.items() if k in node]
    algorithm = build(compose_cfg(f"algorithm={option}", *overrides).algorithm)
    for key, value in values.items():
        if key in node:
            assert getattr(algorithm, key) == value
    bound = {k: v for fn in (algorithm.advantage_fn, algorithm.token_advantage_fn, algorithm.policy_loss_fn)
             for k, v in getattr(fn, "keywords", {}).items() if k in values}
    assert bound == {k: v for k, v in values.items() if k in node}  # every value bound, and bound to the field


@pytest.mark.parametrize("estimator", ["rloo", "reinforce_pp"])
def test_an_estimator_composes_with_hicras_transform_as_config(estimator, compose_cfg):
    """algorithm=<estimator>_hicra is algorithm=hicra with the estimator's advantage_fn and nothing else changed."""
    combo, hicra = compose_cfg(f"algorithm={estimator}_hicra").algorithm, compose_cfg("algorithm=hicra").algorithm
    alone = compose_cfg(f"algorithm={estimator}").algorithm
    assert combo.advantage_fn == alone.advantage_fn != hicra.advantage_fn
    assert {k: v for k, v in combo.items() if k != "advantage_fn"} == \
        {k: v for k, v in hicra.items() if k != "advantage_fn"}
    assert build(combo).token_advantage_fn.func.__name__ == "hicra_token_advantages"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny model saved to a local folder: the `model=hf` loader is tested on local files, offline."""
    from hicra.models.loaders import build_tiny_model

    path = tmp_path_factory.mktemp("tiny_model")
    bundle = build_tiny_model()
    bundle.model.save_pretrained(path)
    bundle.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("\n".join(f'{{"question": "What is {i} + {i}?", "answer": "{2 * i}"}}' for i in range(20)))
    return path


def _check_instance(group: str, cfg, smollm2_tokenizer, tmp_path):
    node = cfg[group]
    if group == "algorithm":
        assert isinstance(build(node), Algorithm)
    elif group == "planner":
        detector = build(node, tokenizer=smollm2_tokenizer)
        ids = torch.tensor([smollm2_tokenizer("Wait, but 2 + 2 = 4", add_special_tokens=False).input_ids])
        ids = ids.repeat(int(cfg.algorithm.group_size), 1)  # one whole group (B,T), as training hands a detector
        mask = detector.mask(ids, torch.ones_like(ids, dtype=torch.bool), torch.rand(ids.shape),
                             correctness=torch.ones(ids.shape[0]))
        assert mask.shape == ids.shape and mask.dtype == torch.bool
    elif group == "model":
        bundle = build(node)
        assert bundle.model.config.vocab_size >= len(bundle.tokenizer)
    elif group == "task":
        task = build(node, train_size=16, val_size=4) if "train_size" in node else build(node)
        assert task.train_examples() and task.val_examples()
    elif group == "rollout" and not USABLE_HERE.get(node._target_, True):
        with pytest.raises(ConfigError, match=r"^rollout=vllm needs"):
            build(node)
    elif group == "rollout":
        assert build(node).max_new_tokens > 0
    elif group == "trainer" and (node.accelerator == "cpu" or torch.cuda.is_available()):
        assert build(node, logger=False, default_root_dir=str(tmp_path)).max_steps == node.max_steps
    elif group == "extra_loggers":  # built as a run builds them: files in the run folder, the MLflow run's name
        from hicra.tracking.extra_loggers import build_extra_loggers

        (name,) = node.keys()
        pytest.importorskip(name, reason=f'{name} is not installed (pip install -e ".[trackers]")')
        (logger,) = build_extra_loggers(cfg, tmp_path, "s0 hicra grams")
        assert type(logger).__name__.lower().startswith(name) and Path(logger.save_dir) == tmp_path
    elif group == "logger" and node.get("_target_"):
        logger = build(node, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
        assert logger.experiment.get_experiment(logger.experiment_id).name == node.experiment_name


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_instantiates(group, option, compose_cfg, smollm2_tokenizer, tiny_dir,
                                                data_file, tmp_path):
    extra = [e.format(tiny_dir=tiny_dir, data=data_file) for e in REQUIRED.get((group, option), [])]
    cfg = compose_cfg(f"{group}={option}", *extra)
    if group == "experiment":  # a study arm pins several groups: check the cheap ones it touches
        for sub in ("algorithm", "planner", "rollout"):
            _check_instance(sub, cfg, smollm2_tokenizer, tmp_path)
    else:
        _check_instance(group, cfg, smollm2_tokenizer, tmp_path)


@pytest.mark.parametrize("option", options("lr_schedule"))
def test_each_lr_schedule_is_a_step_multiplier_or_none(option, compose_cfg):
    cfg = compose_cfg(f"lr_schedule={option}", "trainer.max_steps=20")
    if option == "none":
        assert cfg.lr_schedule is None
        return
    multiplier = instantiate(cfg.lr_schedule)  # a partial of hicra.algorithms.schedules.lr_multiplier
    assert multiplier(0) == pytest.approx(0.1) and multiplier(9) == 1.0  # 10 warm-up steps
    assert multiplier(20) == (1.0 if option == "constant_warmup" else 0.0)  # decayed by trainer.max_steps


def test_optimizer_is_a_partial(compose_cfg):
    factory = instantiate(compose_cfg().optim)
    optimizer = factory(params=[torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.AdamW)


def test_experiment_overrides_root_keys_and_groups(compose_cfg):
    cfg = compose_cfg("experiment=smoke")
    assert cfg.completions_every_n_steps == 1 and cfg.save_final_model is False  # root keys
    assert cfg.model._target_.endswith("build_tiny_model") and cfg.algorithm.group_size == 4  # groups
    assert compose_cfg("experiment=smoke", "save_final_model=true").save_final_model is True  # CLI still wins


@pytest.mark.parametrize("group,option", [(g, o) for g in ("experiment", "hparams_search")
                                          for o in group_options(CONF_DIR, g)])
def test_every_experiment_and_hparams_search_composes(group, option, compose_cfg, data_file):
    """Nested options included (`experiment=paper/qwen3_4b_base`): the same list the CLI accepts."""
    extra = [f"task.path={data_file}"] if option.startswith("paper/") else []  # the paper recipes' one mandatory value
    cfg = compose_cfg(f"{group}={option}", *extra)
    assert OmegaConf.missing_keys(cfg) == set()  # nothing else left for the user to fill in
    OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(build(cfg.algorithm), Algorithm)
    build(cfg.rollout)
