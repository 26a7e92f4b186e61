"""The committed study experiments/hicra_vs_grpo/: its arms are make train's setting with only the method swapped, and
its report's paired statistics are the ones it says it computes."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from omegaconf import OmegaConf

from tests.support import PROJECT_ROOT as ROOT

# arm -> (algorithm option, planner option, the overrides that make the arm from make train's setting)
ARMS = {"grpo": ("grpo", "none", ()), "hicra": ("hicra", "strategic_grams", ()),
        "hicra_alpha": ("hicra", "strategic_grams", ("algorithm.alpha=0.5",)),
        "hicra_mined": ("hicra", "strategic_grams", ("planner.grams_path=bundled://strategic_grams_four_term_sum.txt",)),
        "placebo": ("hicra", "placebo_grams", ()), "placebo_spans": ("hicra", "random", ()),
        "entropy_reg": ("entropy_reg", "none", ()), "high_entropy": ("hicra", "high_entropy", ())}


def load_report():
    sys.path.insert(0, str(ROOT / "experiments"))
    spec = importlib.util.spec_from_file_location("study_report", ROOT / "experiments" / "hicra_vs_grpo" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def without_arm_choice(cfg) -> dict:
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in ("algorithm", "planner"):
        plain.pop(key)
    plain["logger"].pop("tags")
    return plain


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_study_arm_is_make_train_with_its_method(arm, compose_cfg):
    algorithm, planner, overrides = ARMS[arm]
    cfg = compose_cfg(f"experiment=hicra_vs_grpo/{arm}")
    same = compose_cfg(f"algorithm={algorithm}", f"planner={planner}", *overrides, "logger.experiment_name=hicra_vs_grpo")
    assert cfg.logger.tags.arm == arm  # what report.py tells the arms apart by
    assert OmegaConf.to_container(cfg.algorithm) == OmegaConf.to_container(same.algorithm)
    assert OmegaConf.to_container(cfg.planner) == OmegaConf.to_container(same.planner)
    assert without_arm_choice(cfg) == without_arm_choice(same)  # budget, task, model, scoring: make train's


def test_study_arms_cover_the_report_and_the_configs():
    report = load_report()
    configs = {p.stem for p in (ROOT / "conf" / "experiment" / "hicra_vs_grpo").glob("*.yaml")}
    assert set(report.ARMS) == configs == set(ARMS)


def test_window_values_by_hand():
    report = load_report()
    history = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, float("nan")]
    assert report.window_value(history, "last_steps") == pytest.approx((0.3 + 0.4 + 0.5 + 0.6) / 4)  # NaN skipped
    assert report.window_value([0.2, 0.4, 0.5], "last_validations") == pytest.approx(0.45)
    assert report.window_value([0.2, 0.4, 0.6], "all_steps") == pytest.approx(0.4)
    assert report.window_value([float("nan")], "all_steps") is None


def rows(values: dict[int, float]) -> dict[int, dict]:
    return {seed: {"outcomes": {"accuracy": v, "adoption": v}} for seed, v in values.items()}


def test_paired_difference_by_hand():
    report = load_report()
    arm = rows({0: 0.30, 1: 0.50, 2: 0.40, 3: 0.9})
    grpo = rows({0: 0.20, 1: 0.30, 2: 0.35, 4: 0.1})
    entry = report.paired(arm, grpo, "accuracy")
    # seeds 0, 1, 2 pair: differences 0.10, 0.20, 0.05; mean 0.116667, sd 0.076376; t_0.975(2) = 4.302653
    assert entry["seeds"] == ["0", "1", "2"] and entry["unpaired"] == ["3", "4"]
    assert entry["differences"] == pytest.approx([0.10, 0.20, 0.05])
    assert entry["mean"] == pytest.approx(0.116667, abs=1e-6)
    assert entry["half_width"] == pytest.approx(4.302653 * 0.0763763 / 3 ** 0.5, rel=1e-5)
    assert entry["detectable"] > entry["half_width"]  # power 0.8 asks for more than significance
    assert entry["seeds_for_paper_effect"] >= 3
    assert "seeds_for_paper_effect" not in report.paired(arm, grpo, "adoption")  # accuracy's paper effect only


def test_the_pairing_premise_check_by_hand():
    """A pair whose step-0 batches differ (another commit sampled other replies) is named, not silently paired."""
    report = load_report()
    batch = {"train/response_length": 30.1875, "train/reward_mean": 0.125, "train/truncated_frac": 0.0}

    def arm(**by_seed):
        return {int(seed[1:]): {"first_batch": dict(batch, **changes)} for seed, changes in by_seed.items()}

    grpo = arm(s0={}, s1={}, s2={}, s3={})
    other = arm(s0={}, s1={"train/response_length": 30.25}, s2={"train/reward_mean": None}, s4={})
    assert report.same_first_batch(other, grpo) == {"same": [0], "differ": [1, 2]}  # seed 4 has no GRPO run
    results = {"first_batches": {"hicra": report.same_first_batch(other, grpo)}}
    assert report.first_batch_lines(results) == [
        "- HICRA, paper's grams, alpha 0.2: the same as GRPO's in 1 of 3 pairs; differs in seed 1, 2"]


def test_routes_by_hand():
    """A seed kept the plan when its end-of-run adoption is above 0.5; each arm's routes are set against GRPO's."""
    report = load_report()

    def arm(ends: dict[int, float | None]) -> dict[int, dict]:
        return {seed: {"outcomes": {"adoption_end": v}} for seed, v in ends.items()}

    results = {"arms": {"grpo": arm({0: 1.0, 1: 0.994, 2: 0.006, 3: 1.0}),
                        "hicra_alpha": arm({0: 0.99, 1: 0.01, 2: 1.0, 5: 1.0}),
                        "hicra": arm({0: 1.0, 1: 0.7, 2: None})}}
    assert report.routes(results)["hicra_alpha"] == {"kept": [0, 2, 5], "dropped": [1]}
    assert report.route_lines(results) == [
        "- GRPO: kept the plan in 3 of 4 seeds (dropped it in seed 2)",
        ("- HICRA, paper's grams, alpha 0.5: kept the plan in 3 of 4 seeds (dropped it in seed 1); another route "
         "than GRPO's in seed 1, 2"),  # seed 5 has no GRPO run
        "- HICRA, paper's grams, alpha 0.2: kept the plan in 2 of 2 seeds; GRPO's route in every seed"]


def test_the_report_pairs_every_arm_with_grpo_and_states_the_median_wall_time():
    """`ARMS="placebo_spans" run.sh` still reports against GRPO; a resumed run's pause does not inflate the arm's time."""
    report = load_report()
    assert report.reported_arms(["placebo_spans"]) == ["grpo", "placebo_spans"]
    assert report.reported_arms(["hicra", "grpo", "placebo"]) == ["grpo", "hicra", "placebo"]
    empty = {"n": 0}
    results = {"arms": {"grpo": {s: {"wall_s": w} for s, w in enumerate((600.0, 660.0, 4500.0))}},
               "stats": {"grpo": dict.fromkeys(report.OUTCOMES, empty)}}
    row = report.arm_table(results)[-1]
    assert row.startswith("| GRPO | 3 |") and row.endswith("| 11.0 min |")  # median, not the mean's 31.0


def test_plan_steps_by_hand():
    """Additions count only up to the first "the answer is"; direct replies are not plans; wrong sums are counted."""
    sys.path.insert(0, str(ROOT / "experiments" / "hicra_vs_grpo"))
    import plan_steps

    assert plan_steps.additions_before_answer(
        "Step by step: 8 + 2 = 10, 10 + 7 = 65. The answer is \\boxed{65}. 65 + 1 = 66") == [(8, 2, 10), (10, 7, 65)]
    assert plan_steps.additions_before_answer("Step by step: 1 + 2 = 3, 3 + 4 = 7") == [(1, 2, 3), (3, 4, 7)]
    records = [{"completion": "Step by step: 8 + 2 = 10, 10 + 7 = 65. The answer is \\boxed{65}.", "correct": False},
               {"completion": "Step by step: 1 + 2 = 3, 3 + 4 = 7, 7 + 0 = 7. The Answer is \\boxed{7}.", "correct": True},
               {"completion": "The answer is \\boxed{12}. 5 + 7 = 12", "correct": True}]
    assert plan_steps.summary(records) == {"replies": 3, "accuracy": 2 / 3, "planned": 2 / 3,
                                           "additions_per_plan": 2.5, "wrong_additions": 1 / 5}
