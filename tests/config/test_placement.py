"""Where a run's processes go (hicra/config/placement.py): refused on the command line, before anything loads."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from support import CONF_DIR

from hicra.config.placement import check_placement
from hicra.errors import ConfigError


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "fsdp"])
def test_vllm_goes_with_every_trainer(trainer, compose_cfg):
    """One engine per rank (or per tensor-parallel group of ranks) through vLLM's external launcher."""
    check_placement(compose_cfg("rollout=vllm", f"trainer={trainer}", "trainer.devices=4"))
    check_placement(compose_cfg("rollout=vllm", f"trainer={trainer}", "trainer.devices=4",
                                "rollout.tensor_parallel_size=4"))


@pytest.mark.parametrize("overrides,ranks", [(["trainer=ddp", "trainer.devices=4"], 4),
                                             (["trainer=fsdp", "trainer.devices=2", "trainer.num_nodes=3"], 6),
                                             (["trainer=gpu"], 1)])
def test_a_tensor_parallel_size_that_does_not_divide_the_ranks_is_refused(overrides, ranks, compose_cfg):
    cfg = compose_cfg("rollout=vllm", *overrides, "rollout.tensor_parallel_size=8")
    with pytest.raises(ConfigError, match=rf"^rollout.tensor_parallel_size=8 does not divide the {ranks} training "
                                          rf"ranks \(trainer.devices x trainer.num_nodes\); allowed: a divisor of "
                                          rf"{ranks}, e.g. 1$"):
        check_placement(cfg)


def test_ranks_counted_at_launch_are_checked_by_the_ranks(compose_cfg):
    """trainer.devices=auto: the number of ranks is Lightning's to find; each rank checks it at the first rollout."""
    check_placement(compose_cfg("rollout=vllm", "trainer=ddp", "rollout.tensor_parallel_size=8"))


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
