"""The recipes in conf/experiment/: the paper's (for GPUs and weights) and the small ones on the embedded default."""

from __future__ import annotations

import mlflow
import pytest
import torch
from omegaconf import OmegaConf
from support import CONF_DIR, run_cli, run_train

from hicra.algorithms import Algorithm
from hicra.config.instantiate import build

PAPER = ["qwen3_4b_base", "qwen3_4b_instruct", "qwen2_5_7b_base", "llama3_1_8b_instruct"]
HUB_IDS = {"qwen3_4b_base": "Qwen/Qwen3-4B-Base", "qwen3_4b_instruct": "Qwen/Qwen3-4B-Instruct-2507",
           "qwen2_5_7b_base": "Qwen/Qwen2.5-7B", "llama3_1_8b_instruct": "meta-llama/Llama-3.1-8B-Instruct"}
# Keys whose value the paper does not give: each recipe must say so next to the value it picks.
UNSTATED = ["lr:", "prompts_per_step:", "kl_coef:", "aggregation:", "temperature:", "scale:", "group_size:"]


def test_every_paper_model_has_a_recipe():
    assert sorted(p.stem for p in (CONF_DIR / "experiment" / "paper").glob("*.yaml")) == sorted(PAPER)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "math.jsonl"
    path.write_text("\n".join(f'{{"question": "What is {i} + {i}?", "answer": "{2 * i}"}}' for i in range(20)))
    return path


@pytest.mark.parametrize("stem", PAPER)
def test_paper_recipe_pins_what_the_paper_states(stem, compose_cfg, data_file, smollm2_tokenizer):
    cfg = compose_cfg(f"experiment=paper/{stem}", f"task.path={data_file}")
    assert cfg.model.name_or_path == HUB_IDS[stem] and cfg.model._target_.endswith("load_pretrained")
    # fp32 master weights, bf16 compute: the recipe's lr 1e-6 moves the weights (tests/training/test_precision.py)
    assert cfg.model.dtype == "float32" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.model.gradient_checkpointing is True
    assert cfg.prompts_per_step % cfg.trainer.get("devices", 1) == 0  # whole groups on every rank
    alg = build(cfg.algorithm)
    assert isinstance(alg, Algorithm) and alg.needs_planning_mask and alg.alpha == 0.2
    assert (alg.clip_low, alg.clip_high, alg.group_size, alg.kl_coef) == (0.2, 0.28, 8, 0.0)
    assert cfg.planner._target_.endswith("StrategicGramDetector")
    task = build(cfg.task)
    assert task.last_number_fallback is False and task.train_examples() and task.val_examples()  # strict \boxed{}
    assert build(cfg.rollout).max_new_tokens == 16384  # the paper's 16K
    assert cfg.trainer.accelerator == "gpu" and 150 <= cfg.trainer.max_steps <= 500
    detector = build(cfg.planner, tokenizer=smollm2_tokenizer)
    ids = torch.tensor([smollm2_tokenizer("Wait, but 2 + 2 = 4", add_special_tokens=False).input_ids])
    assert detector.mask(ids, torch.ones_like(ids, dtype=torch.bool), torch.rand(ids.shape)).any()


@pytest.mark.parametrize("stem", PAPER)
def test_paper_recipe_needs_the_data_path_and_says_what_is_unstated(stem, compose_cfg):
    cfg = compose_cfg(f"experiment=paper/{stem}")
    assert OmegaConf.is_missing(cfg.task, "path")  # cannot start by accident without the user's data
    text = (CONF_DIR / "experiment" / "paper" / f"{stem}.yaml").read_text()
    assert f"hicra-train experiment=paper/{stem} task.path=" in text  # the command that launches it
    assert "  - /_paper_recipe\n" in text  # the values the four recipes share, said once
    lines = text.splitlines() + (CONF_DIR / "_paper_recipe.yaml").read_text().splitlines()
    for key in UNSTATED:
        (line,) = [line for line in lines if line.strip().startswith(key)]
        assert "# not stated in the paper" in line, line
    # the paper uses DAPO's dynamic sampling for Llama only
    assert (cfg.algorithm.dynamic_sampling_rounds > 0) == (stem == "llama3_1_8b_instruct")


@pytest.mark.parametrize("stem", PAPER)
def test_paper_recipe_runs_under_the_slurm_preset_as_it_stands(stem, data_file):
    """`hicra-train -m experiment=paper/<stem> hydra/launcher=slurm_gpu ...` passes the command line's checks, and
    SLURM is asked for a task and a GPU per device on trainer.num_nodes nodes (Lightning's SLURMEnvironment
    refuses anything else, after the model has loaded)."""
    from hicra.config.checks import check_composes, check_every_job
    from hicra.config.schema import TRAIN

    args = ["-m", f"experiment=paper/{stem}", f"task.path={data_file}", "hydra/launcher=slurm_gpu",
            "hydra.launcher.partition=gpu"]
    cfg = check_composes(args, CONF_DIR, "train")
    check_every_job(args, cfg, CONF_DIR, "train", TRAIN)
    launcher, devices = cfg.hydra.launcher, cfg.trainer.devices
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (devices, devices,
                                                                                 cfg.trainer.num_nodes)
    assert launcher.mem_gb is None and launcher.mem_per_gpu == "64G"  # host RAM grows with the ranks


# GPUs each paper recipe states (its comment and device_memory_gib): count x GiB per device as torch reports it.
STATED_GPUS = {"qwen3_4b_base": (1, 139), "qwen3_4b_instruct": (1, 139), "qwen2_5_7b_base": (4, 79),
               "llama3_1_8b_instruct": (4, 79)}


@pytest.mark.parametrize("stem", PAPER)
def test_paper_recipe_memory_plan_fits_the_gpus_it_states(stem, compose_cfg, data_file, monkeypatch):
    """The plan hicra-train checks before the model loads (hicra/training/memory_check.py), with the dtypes the code
    uses under the recipe's bf16-mixed: it must fit the GPUs the recipe names, at every phase."""
    from hicra.training.memory_check import plan_run
    from hicra.training.memory_plan import GIB, USABLE_FRACTION

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the stated GPUs, whatever this machine has

    cfg = compose_cfg(f"experiment=paper/{stem}", f"task.path={data_file}")
    count, memory = STATED_GPUS[stem]
    text = (CONF_DIR / "experiment" / "paper" / f"{stem}.yaml").read_text()
    assert cfg.trainer.get("devices", 1) == count and cfg.device_memory_gib == memory
    assert f"GPU{'s' if count > 1 else ''}: {count} x " in text  # the comment says which cards
    planned = plan_run(cfg, build(cfg.algorithm), build(cfg.rollout), build(cfg.task))  # raises if it does not fit
    assert planned.record["device_bytes"] == memory * GIB
    assert all(planned.plan.phase_bytes(p) <= USABLE_FRACTION * memory * GIB for p in planned.plan.phases)


def test_a_sharded_recipe_without_its_per_micro_batch_exchange_is_refused_naming_it(compose_cfg, data_file,
                                                                                   monkeypatch):
    """Skipping FSDP's reduce-scatter until the last micro-batch holds every rank's whole fp32 gradients (28 GiB for
    7B): beside 16K-token rows it does not fit the recipe's 80 GB GPUs, and the refusal names the setting that does."""
    from hicra.errors import ConfigError
    from hicra.training.memory_check import plan_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_cfg("experiment=paper/qwen2_5_7b_base", f"task.path={data_file}",
                      "reduce_gradients_every_micro_batch=false")
    with pytest.raises(ConfigError, match=r"accumulated_gradients 2[0-9.]+ GiB.*would fit: .*"
                                          r"reduce_gradients_every_micro_batch=true"):
        plan_run(cfg, build(cfg.algorithm), build(cfg.rollout), build(cfg.task))


def test_paper_recipes_differ_only_in_the_model_and_its_gpus(compose_cfg):
    def comparable(stem):
        cfg = OmegaConf.to_container(compose_cfg(f"experiment=paper/{stem}"))
        cfg["model"].pop("name_or_path"), cfg["logger"].pop("experiment_name")
        cfg["algorithm"].pop("dynamic_sampling_rounds")  # Llama's alone (test above)
        return cfg, (cfg.pop("trainer"), cfg.pop("prompts_per_step"), cfg.pop("device_memory_gib"))

    reference, _ = comparable(PAPER[0])
    for stem in PAPER[1:]:
        assert comparable(stem)[0] == reference, stem
    for stem in ("qwen2_5_7b_base", "llama3_1_8b_instruct"):  # 16 bytes per parameter do not fit one GPU: FSDP
        trainer, prompts, _ = comparable(stem)[1]
        assert "fully_sharded" in trainer["strategy"]["_target_"] and trainer["devices"] == 4 and prompts == 4


def test_grpo_arm_of_a_paper_recipe_is_plain_grpo(compose_cfg):
    hicra = compose_cfg("experiment=paper/qwen2_5_7b_base")
    grpo = compose_cfg("experiment=paper/qwen2_5_7b_base", "algorithm=grpo", "planner=none")
    assert "alpha" not in grpo.algorithm
    assert grpo.algorithm.token_advantage_fn._target_.endswith("identity_token_advantages")
    assert grpo.planner._target_.endswith("NullDetector")
    assert {k: grpo.algorithm[k] for k in ("clip_high", "aggregation", "group_size")} == \
        {k: hicra.algorithm[k] for k in ("clip_high", "aggregation", "group_size")}


def test_paper_recipe_without_data_fails_in_one_line(tmp_path):
    result = run_train(["experiment=paper/qwen3_4b_base", "logger=none"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("hicra-train: error:")]
    assert errors == ["hicra-train: error: Missing mandatory value: task.path"], result.stderr[-2000:]


@pytest.mark.slow  # the real console script in a fresh interpreter (make test-fast leaves it out)
def test_paper_recipe_without_weights_fails_in_one_line(tmp_path, data_file, monkeypatch):
    """The real console script: HF_HUB_OFFLINE / HF_HOME are read when transformers is imported."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))  # no cached weights, whatever this machine holds
    # trainer=cpu: this machine may have no GPU, and the missing GPU would be reported first (tested in test_bad_input);
    # device_memory_gib: the 4B model in fp32 on a CPU would not fit the H200 the recipe states, and the memory plan
    # would refuse it first (tests/training/test_memory_plan.py)
    result = run_cli(["experiment=paper/qwen3_4b_base", f"task.path={data_file}", "trainer=cpu", "logger=none",
                      "device_memory_gib=4096"], tmp_path, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("hicra-train: error:")]
    assert len(errors) == 1 and "cannot load model 'Qwen/Qwen3-4B-Base'" in errors[0], result.stderr[-2000:]


@pytest.mark.parametrize("name,accelerator,prompts,tokens,steps", [("cpu_small", "cpu", 2, 96, 8),
                                                                   ("gpu_small", "gpu", 16, 256, 200)])
def test_small_recipes_on_the_embedded_default(name, accelerator, prompts, tokens, steps, compose_cfg):
    cfg = compose_cfg(f"experiment={name}")
    assert cfg.model.name_or_path == "bundled://smollm2-135m-instruct" and cfg.task.dataset == "basic_arithmetic"
    assert cfg.demonstrations == compose_cfg().demonstrations  # the embedded default's prompt, only shorter or larger
    assert cfg.trainer.accelerator == accelerator and cfg.prompts_per_step == prompts
    assert cfg.rollout.max_new_tokens == tokens and cfg.trainer.max_steps == steps
    assert cfg.algorithm._target_ and compose_cfg(f"experiment={name}", "algorithm=grpo").algorithm.get("alpha") is None
    assert f"hicra-train experiment={name}" in (CONF_DIR / "experiment" / f"{name}.yaml").read_text()


@pytest.mark.slow
def test_cpu_small_runs_one_step_on_the_tiny_model(tmp_path):
    # 4 held-out questions instead of 32: the recipe's own values are checked above, this proves that it runs.
    result = run_train(["experiment=cpu_small", "model=tiny", "trainer.max_steps=1", "task.val_size=4"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hicra run summary: experiment=cpu_small" in result.stdout and "steps=1" in result.stdout


def test_dapo_style_sets_dapos_four_pieces_and_leaves_the_method_to_the_sweep(compose_cfg):
    for arm in ("grpo", "hicra", "rloo_hicra"):
        alg = build(compose_cfg("experiment=dapo_style", f"algorithm={arm}").algorithm)
        assert (alg.clip_low, alg.clip_high, alg.aggregation) == (0.2, 0.28, "token_mean")  # clip-higher, token mean
        assert alg.dynamic_sampling_rounds == 3 and (alg.overlong_buffer, alg.overlong_penalty) == (16, 1.0)
        assert (alg.alpha is None) == (arm == "grpo")
    cfg = compose_cfg("experiment=dapo_style")
    assert cfg.model.name_or_path == "bundled://smollm2-135m-instruct" and cfg.task.dataset == "basic_arithmetic"
    assert cfg.algorithm.overlong_buffer < cfg.rollout.max_new_tokens


@pytest.mark.slow
def test_dapo_style_sweeps_grpo_and_hicra(tmp_path):
    """`hicra-train -m experiment=dapo_style algorithm=grpo,hicra`, on the tiny model (the recipe is the default's)."""
    tiny = ["model=tiny", "prompts_per_step=2", "algorithm.group_size=4", "rollout.max_new_tokens=24",
            "trainer.max_steps=1", "task.train_size=64", "task.val_size=4", "val_batch_size=4", "save_final_model=false"]
    result = run_train(["-m", "experiment=dapo_style", "algorithm=grpo,hicra", *tiny], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("dapo_style").experiment_id])
    assert sorted(r.data.tags["choice.algorithm"] for r in runs) == ["grpo", "hicra"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.params["algorithm.dynamic_sampling_rounds"] == "3"
        assert len(client.get_metric_history(run.info.run_id, "sampling/prompts_consumed")) == 1
        assert "train/overlong_penalty_mean" in run.data.metrics


def test_the_embedded_default_offers_a_plan_whose_decision_token_the_grams_mark(compose_cfg, smollm2_tokenizer):
    """make train's setting: one direct and one planned worked example as chat turns, an instruction that leaves
    the choice open, and the planned reply's first token ("Step", the decision) inside a Strategic Gram."""
    cfg = compose_cfg()
    assert cfg.format_reward == 0 and cfg.rollout.max_new_tokens == 96  # correctness alone decides the plan
    task = build(cfg.task)
    assert "step" not in task.instruction.lower() and len(cfg.demonstrations) == 2
    direct, planned = (d.answer for d in cfg.demonstrations)
    assert direct.startswith("The answer is") and planned.startswith("Step by step:")
    for shot in cfg.demonstrations:  # the worked examples add up
        terms = [int(t) for t in shot.question.removeprefix("Calculate ").rstrip(".").split(" + ")]
        assert f"\\boxed{{{sum(terms)}}}" in shot.answer
    assert all(" + " in e.question and "*" not in e.question for e in task.train_examples()[:50])
    ids = torch.tensor([smollm2_tokenizer(planned, add_special_tokens=False).input_ids])
    mask = build(cfg.planner, tokenizer=smollm2_tokenizer).mask(ids, torch.ones_like(ids, dtype=torch.bool))
    assert smollm2_tokenizer.decode(ids[0, :1]) == "Step" and bool(mask[0, 0])
    assert not mask[0, -8:].any()  # "\boxed{20}." is not a gram


def test_planning_sum_is_the_default_with_the_format_reward_and_chain_sum_default_is_the_old_default(compose_cfg):
    """The named experiments that keep committed results reproducible: planning_sum (issue 27's first runs and the
    mechanism test) differs from make train by the format reward alone; chain_sum_default is make train before it."""
    default, planning = (OmegaConf.to_container(c, resolve=True)
                         for c in (compose_cfg(), compose_cfg("experiment=planning_sum")))
    assert planning.pop("format_reward") == 0.5 and default.pop("format_reward") == 0.0
    assert planning["logger"].pop("experiment_name") == "planning_sum"
    default["logger"].pop("experiment_name")
    assert planning == default
    old = compose_cfg("experiment=chain_sum_default")
    assert old.task.dataset == "chain_sum" and (old.task.min_terms, old.task.max_terms) == (2, 2)
    assert old.demonstrations is None and "Example answer: 12 + 7 = 19, so the answer is" in old.system_prompt
    assert (old.rollout.max_new_tokens, old.format_reward, old.trainer.max_steps) == (64, 0.5, 15)
