"""`hicra-compare --paired` on experiment "paired" (study_store.make_paired_study): the section, its numbers, the
unpaired seeds and left-out runs named, the MLflow metrics; which runs pair; one-line errors."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from study_store import make_paired_study
from support import exit_code

from hicra.compare.cli import main, metric_name
from hicra.compare.paired import paired_arm, values_by_seed, verdict

GRPO, HICRA = "algorithm=grpo planner=none", "algorithm=hicra planner=strategic_grams"
HALF = 4.302652729749464 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n) of the differences 0.1 0.2 0.3


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_paired_study(tmp_path_factory.mktemp("paired"))


def test_paired_section_numbers_and_unpaired_seeds(store, tmp_path, capsys):
    import mlflow

    uri, ids = store
    out = tmp_path / "cmp"
    capsys.readouterr()
    assert exit_code(main, ["--experiment", "paired", "--tracking-uri", uri, "--out", str(out), "--paired",
                            "--effect", "0.05"]) == 0
    printed = capsys.readouterr().out
    (arm,) = json.loads((out / "summary.json").read_text())["paired"]["arms"]
    assert (arm["group"], arm["baseline"], arm["n_pairs"], arm["dof"]) == (HICRA, GRPO, 3, 2)
    assert [p["seed"] for p in arm["pairs"]] == ["0", "1", "2"]
    assert [p["diff"] for p in arm["pairs"]] == pytest.approx([0.1, 0.2, 0.3])
    assert arm["mean_diff"] == pytest.approx(0.2) and arm["sd_diff"] == pytest.approx(0.1)
    assert (arm["ci_low"], arm["ci_high"]) == (pytest.approx(0.2 - HALF), pytest.approx(0.2 + HALF))
    assert arm["unpaired"] == {"group_only": ["4"], "baseline_only": ["3"]}
    (running,) = arm["left_out"]["group"]  # RUNNING seed 5: not paired, and said so
    assert running["run_id"] == ids[("hicra", 5)] and running["reason"].startswith("unfinished (status RUNNING")
    assert arm["detectable_difference"] == pytest.approx(0.3264, abs=1e-4)  # 3 pairs, sd 0.1: 3.264 sd (exact t)
    assert arm["seeds_needed"] == 34  # 0.05 / sd 0.1 = dz 0.5: G*Power's 34

    report = (out / "report.md").read_text()
    section = report[report.index("## Paired by seed"):report.index("## Notes")]
    for text in ["| 3 | +0.200 | [-0.048, +0.448] | 0.100 | 0.326 | 34 | group only: 4; baseline only: 3 |",
                 "CI includes 0: no detectable difference with 3 pairs", "seeds for a difference of 0.05",
                 "| 1 | 0.500 | 0.300 | +0.200 |", "noncentral t", ids[("hicra", 5)], "unfinished (status RUNNING"]:
        assert text in section, text
    assert "Paired by seed vs baseline `algorithm=grpo planner=none`" in printed and "seeds for 0.05: 34" in printed

    client = mlflow.MlflowClient(tracking_uri=uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("paired-compare").experiment_id])
    assert logged.data.metrics[metric_name("paired_mean_diff", HICRA)] == pytest.approx(0.2)
    assert "## Paired by seed" in logged.data.tags["mlflow.note.content"]


def _row(seed, final, *, unfinished=False, non_finite=None):
    return {"run_id": f"id{seed}{final}", "name": f"s{seed}", "seed": seed, "final": final, "unfinished": unfinished,
            "unfinished_reason": "status KILLED" if unfinished else None, "final_non_finite": non_finite}


def test_which_runs_pair_and_why_the_others_do_not():
    group = {"runs": [_row("0", 0.1), _row("1", 0.2), _row("1", 0.3), _row(None, 0.4),
                      _row("2", None, non_finite="NaN"), _row("3", 0.9, unfinished=True)]}
    values, left = values_by_seed(group)
    assert values == {"0": 0.1}
    assert [r["reason"] for r in left] == ["unfinished (status KILLED)", "seed 1 is used by 2 runs of this arm",
                                           "seed 1 is used by 2 runs of this arm", "no seed tag or param",
                                           "no final value (last value NaN)"]
    only_unfinished = {"runs": [_row("0", 0.5, unfinished=True)]}  # a partial group: its unfinished runs count
    assert values_by_seed(only_unfinished) == ({"0": 0.5}, [])


def test_a_difference_past_float_range_is_named_not_a_traceback():
    arm = {"label": "a", "partial": False, "runs": [_row("0", 1e308), _row("1", 0.5), _row("2", 0.7)]}
    base = {"label": "b", "partial": False, "runs": [_row("0", -1e308), _row("1", 0.3), _row("2", 0.4)]}
    entry = paired_arm(arm, base, "loss/policy", 0.95, None)
    assert entry["overflowed_seeds"] == ["0"] and entry["n_pairs"] == 2 and entry["mean_diff"] == pytest.approx(0.25)
    json.dumps(entry, allow_nan=False)  # what summary.json needs


def test_verdicts_without_an_interval():
    one = {"n_pairs": 1, "mean_diff": 0.3, "pairs": [{"seed": "0"}], "sd_diff": None}
    assert verdict("a", "b", one).startswith("no CI: one pair (seed 0); the difference +0.300")
    flat = {"n_pairs": 2, "mean_diff": 0.4, "sd_diff": 0.0}
    assert verdict("a", "b", flat).startswith("no spread: every seed gave the same difference +0.400 (2 pairs)")


@pytest.mark.parametrize("case, expected", [
    ("no_baseline", "--paired needs a baseline arm: no group has algorithm=grpo; name one with --baseline"),
    ("no_shared_seed", "--paired: no seed has a usable run in both the baseline and another arm"),
    ("effect_alone", "--effect 0.05 needs --paired"),
    ("bad_effect", "--effect=-0.1 is not allowed; use a finite difference > 0"),
])
def test_bad_paired_input_is_one_line(case, expected, store, tmp_path, capsys):
    uri, ids = store
    args = {"no_baseline": [ids[("hicra", 0)], ids[("hicra", 1)], "--paired"],
            "no_shared_seed": [ids[("grpo", 3)], ids[("hicra", 4)], "--paired"],
            "effect_alone": ["--experiment", "paired", "--effect", "0.05"],
            "bad_effect": ["--experiment", "paired", "--paired", "--effect", "-0.1"]}[case]
    capsys.readouterr()
    assert exit_code(main, [*args, "--tracking-uri", uri, "--out", str(tmp_path / "o"), "--no-log"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hicra-compare: error: ") and expected in err[0], err
    assert not (tmp_path / "o").exists()
