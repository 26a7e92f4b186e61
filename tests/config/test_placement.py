"""Where a run's processes go (hicra/config/placement.py): refused on the command line, before anything loads."""

from __future__ import annotations

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf
from support import CONF_DIR

from hicra.config.placement import ONE_PROCESS_ROLLOUTS, check_placement
from hicra.errors import ConfigError


def test_the_one_process_table_is_what_the_sampler_classes_say():
    for path in sorted((CONF_DIR / "rollout").glob("*.yaml")):
        target = OmegaConf.load(path)._target_
        one_process = getattr(get_class(target), "one_process_only", False)
        assert (ONE_PROCESS_ROLLOUTS.get(target) == path.stem) if one_process else target not in ONE_PROCESS_ROLLOUTS


@pytest.mark.parametrize("trainer,refused", [("cpu", False), ("gpu", False), ("ddp", True), ("fsdp", True)])
def test_vllm_samples_for_one_training_process_only(trainer, refused, compose_cfg):
    cfg = compose_cfg("rollout=vllm", f"trainer={trainer}")
    if not refused:
        check_placement(cfg)
        return
    with pytest.raises(ConfigError, match="rollout=vllm samples in one training process only"):
        check_placement(cfg)


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "fsdp"])
def test_the_hf_sampler_goes_with_every_trainer(trainer, compose_cfg):
    check_placement(compose_cfg("rollout=hf", f"trainer={trainer}", "trainer.devices=4"))


# --- a SLURM launcher against the trainer ----------------------------------------------------------------------

def _multirun(*overrides: str):
    """The CLI's own composition of `hicra-train -m hydra/launcher=slurm_gpu ...` (its hydra node included)."""
    from hicra.config.checks import check_composes

    return check_composes(["-m", "hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu", *overrides], CONF_DIR,
                          "train")


@pytest.mark.parametrize("trainer", ["gpu", "ddp trainer.devices=8", "fsdp trainer.devices=4 trainer.num_nodes=2"])
def test_the_slurm_preset_takes_its_shape_from_the_trainer(trainer):
    cfg = _multirun(*f"trainer={trainer}".split())
    launcher = cfg.hydra.launcher
    check_placement(cfg, launcher)
    devices = cfg.trainer.devices
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (devices, devices,
                                                                                 cfg.trainer.num_nodes)


@pytest.mark.parametrize("overrides,message", [
    (["trainer=gpu", "hydra.launcher.tasks_per_node=2"],
     "hydra.launcher.tasks_per_node=2 but trainer.devices=1: Lightning runs one SLURM task per device"),
    (["trainer=fsdp", "trainer.devices=4", "hydra.launcher.nodes=2"],
     "hydra.launcher.nodes=2 but trainer.num_nodes=1"),
    (["trainer=ddp", "trainer.devices=4", "hydra.launcher.gpus_per_node=2"],
     "hydra.launcher.gpus_per_node=2 but trainer.devices=4: each task needs its own GPU"),
    (["trainer=ddp"], "trainer.devices=auto under a SLURM launcher"),
])
def test_a_slurm_allocation_that_does_not_match_the_trainer_is_refused(overrides, message):
    cfg = _multirun(*overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_placement(cfg, cfg.hydra.launcher)


def test_other_launchers_leave_the_processes_to_lightning(compose_cfg):
    cfg = compose_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    check_placement(cfg, OmegaConf.create({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
                                                       "LocalLauncher", "tasks_per_node": 1, "nodes": 1}))
