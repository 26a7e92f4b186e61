"""The committed study experiments/hicra_vs_grpo/: its arms are make train's setting with only the algorithm and the
planner swapped, and its report's statistics are the ones it says it computes."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from omegaconf import OmegaConf

from tests.support import PROJECT_ROOT as ROOT

ARMS = {"grpo": ("grpo", "none"), "hicra": ("hicra", "strategic_grams"), "placebo": ("hicra", "placebo_grams"),
        "placebo_spans": ("hicra", "random"), "entropy_reg": ("entropy_reg", "none"),
        "high_entropy": ("hicra", "high_entropy")}


def load_report():
    sys.path.insert(0, str(ROOT / "experiments"))
    spec = importlib.util.spec_from_file_location("study_report", ROOT / "experiments" / "hicra_vs_grpo" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_arm_choice(cfg) -> dict:
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in ("algorithm", "planner"):
        plain.pop(key)
    plain["logger"].pop("tags")
    return plain


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_study_arm_is_make_train_with_its_algorithm_and_planner(arm, compose_cfg):
    algorithm, planner = ARMS[arm]
    cfg = compose_cfg(f"experiment=hicra_vs_grpo/{arm}")
    same = compose_cfg(f"algorithm={algorithm}", f"planner={planner}", "logger.experiment_name=hicra_vs_grpo")
    assert cfg.logger.tags.arm == arm  # what report.py tells the arms apart by
    assert OmegaConf.to_container(cfg.algorithm) == OmegaConf.to_container(same.algorithm)
    assert OmegaConf.to_container(cfg.planner) == OmegaConf.to_container(same.planner)
    assert without_arm_choice(cfg) == without_arm_choice(same)  # budget, task, model, scoring: make train's


def test_study_arms_cover_the_report_and_the_configs():
    report = load_report()
    configs = {p.stem for p in (ROOT / "conf" / "experiment" / "hicra_vs_grpo").glob("*.yaml")}
    assert set(report.ARMS) == configs == set(ARMS)


def test_detectable_difference_by_hand():
    report = load_report()
    a, b = [0.30, 0.40, 0.35], [0.20, 0.30, 0.25]
    # both sd 0.05, n 3: SE = sqrt(2 * 0.0025 / 3) = 0.040825; Welch dof = 4; t_0.975(4) = 2.776445, t_0.8(4) = 0.940965
    assert report.detectable(a, b) == pytest.approx((2.776445 + 0.940965) * 0.0408248, rel=1e-5)
    assert report.detectable([0.3], b) is None  # one seed: no spread, no claim
