"""`hicra-compare` on a synthetic study (tests/compare/study_store.py): exact numbers in summary.json, flags in
report.md, eval runs linked by tag, the compare run logged to MLflow, one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from study_store import make_study
from support import exit_code

from hicra.compare.cli import main

GRPO = "algorithm=grpo planner=none"
HICRA2 = "algorithm=hicra planner=strategic_grams algorithm.alpha=0.2"
HICRA1 = "algorithm=hicra planner=strategic_grams algorithm.alpha=0.1"
ENTREG = "algorithm=entropy_reg planner=none"
T975_1, T975_2 = 12.706204736174698, 4.302652729749464


def run_main(args: list[str]) -> int:
    return exit_code(main, args)


def no_nan(text: str) -> dict:
    def refuse(name):
        raise AssertionError(f"{name} in summary.json")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def compared(study, tmp_path_factory):
    """The default comparison of experiment 'study', logged to MLflow (run once for the module)."""
    uri, ids = study
    out = tmp_path_factory.mktemp("out") / "cmp"
    assert run_main(["--experiment", "study", "--tracking-uri", uri, "--out", str(out)]) == 0
    return uri, ids, out, no_nan((out / "summary.json").read_text())


def test_numbers_with_unequal_seeds_and_unfinished_runs(compared):
    approx = pytest.approx
    _, _, _, summary = compared
    assert summary["group_keys"] == ["choice.algorithm", "choice.planner", "algorithm.alpha"]
    groups = {g["label"]: g for g in summary["groups"]}
    assert list(groups) == [GRPO, ENTREG, HICRA1, HICRA2]  # baseline first
    assert summary["baseline"] == GRPO and summary["n_runs"] == 8 and summary["n_unfinished"] == 2

    grpo = groups[GRPO]  # finals 0.1 0.2 0.3; bests 0.1 0.25 0.3; lengths (tail 3) 80 60 100; entropy 2 2.5 3
    assert (grpo["n_runs"], grpo["n_unfinished"], grpo["partial"]) == (3, 0, False)
    assert grpo["final"]["mean"] == approx(0.2) and grpo["final"]["half_width"] == approx(T975_2 * 0.1 / 3 ** 0.5)
    assert grpo["best"]["mean"] == approx(0.65 / 3)
    assert grpo["threshold"] == {"reached": 1, "of": 3, "median_step": 2.0}
    assert grpo["semantic_entropy_final"]["mean"] == approx(2.5)  # s0's NaN at step 3 is dropped
    assert grpo["response_length_final"]["mean"] == approx(80.0)
    assert grpo["response_length_final"]["half_width"] == approx(T975_2 * 20 / 3 ** 0.5)

    hicra = groups[HICRA2]  # the RUNNING run (0.9 at step 2, eval 0.95) is left out of every statistic
    assert (hicra["n_runs"], hicra["n_unfinished"], hicra["n_used"], hicra["partial"]) == (3, 1, 2, False)
    assert hicra["final"]["mean"] == approx(0.55) and hicra["final"]["half_width"] == approx(T975_1 * 0.05)
    assert hicra["threshold"] == {"reached": 2, "of": 2, "median_step": 2.0}
    running = [r for r in hicra["runs"] if r["unfinished"]]
    assert len(running) == 1 and running[0]["status"] == "RUNNING" and running[0]["last_step"] == 2

    one = groups[HICRA1]
    assert one["final"]["mean"] == approx(0.4) and one["final"]["half_width"] is None
    assert one["threshold"]["median_step"] == 4.0

    killed = groups[ENTREG]
    assert killed["partial"] is True and killed["final"]["mean"] == approx(0.1) and killed["n_unfinished"] == 1


def test_eval_runs_linked_by_tag(compared):
    _, _, _, summary = compared
    assert summary["eval_keys"] == ["gsm8k/greedy"]
    groups = {g["label"]: g for g in summary["groups"]}
    assert groups[GRPO]["evals"]["gsm8k/greedy"]["evaluated"] == 2 and groups[GRPO]["evals"]["gsm8k/greedy"]["of"] == 3
    assert groups[GRPO]["evals"]["gsm8k/greedy"]["score"]["mean"] == pytest.approx(0.2)
    hicra = groups[HICRA2]["evals"]["gsm8k/greedy"]  # latest eval of s0 (0.4, not the older 0.99); RUNNING s2 out
    assert (hicra["evaluated"], hicra["of"]) == (2, 2) and hicra["score"]["mean"] == pytest.approx(0.45)
    assert groups[HICRA1]["evals"]["gsm8k/greedy"]["evaluated"] == 0
    assert any("older eval run(s)" in n for n in summary["notes"])


def test_differences_vs_baseline(compared):
    _, _, _, summary = compared
    diffs = {(c["group"], c["quantity"]): c for c in summary["comparisons"]}
    final = diffs[(HICRA2, "final val/accuracy")]  # [0.5, 0.6] - [0.1, 0.2, 0.3]: Welch dof 49/17
    assert final["diff"] == pytest.approx(0.35) and final["dof"] == pytest.approx(49 / 17)
    assert final["ci_low"] == pytest.approx(0.101, abs=1e-3) and final["ci_high"] == pytest.approx(0.599, abs=1e-3)
    assert final["verdict"].startswith(f"CI excludes 0: {HICRA2} is higher than {GRPO}")
    evals = diffs[(HICRA2, "eval/score gsm8k/greedy")]
    assert evals["diff"] == pytest.approx(0.25) and evals["verdict"].startswith("CI includes 0: no detectable "
                                                                               "difference with n=2 vs 2")
    assert diffs[(HICRA1, "final val/accuracy")]["verdict"].startswith("no CI: a Welch interval needs >= 2 runs")
    assert diffs[(ENTREG, "final val/accuracy")]["verdict"].endswith("[partial: from unfinished runs]")


def test_report_files_and_mlflow_run(compared, capsys):
    import matplotlib.image as mpimg
    import mlflow

    uri, ids, out, _ = compared
    report = (out / "report.md").read_text()
    for text in ["| 3 (1 unfinished) |", "0.200 ± 0.248", "0.400 ± n/a", "(partial)", "finished runs only",
                 "last 3 logged steps", "status RUNNING; last logged step 2 < trainer.max_steps 4", "status KILLED",
                 "not applicable", "CI excludes 0", "0.450 [range 0.400, 0.500] (2/2 evaluated)", *ids.values(),
                 "hierarchy/semantic_entropy NaN at step 3", "2.500 ± 1.242 [NaN/inf in 1 run(s), left out]"]:
        assert text in report, text
    assert "nan" not in report.replace("NaN", "").lower().replace("planner", "")  # no number printed as nan
    for name in ("learning_curves.png", "eval_scores.png"):
        image = mpimg.imread(out / name)
        assert image.shape[0] > 300 and image.std() > 0.01

    client = mlflow.MlflowClient(tracking_uri=uri)
    study = client.get_experiment_by_name("study")
    assert not client.search_runs([study.experiment_id], "tags.`hicra.run_kind` = 'compare'")  # kept apart
    exp = client.get_experiment_by_name("study-compare")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location == study.artifact_location  # beside the training runs, not under ./mlruns
    logged = client.search_runs([exp.experiment_id], "tags.`hicra.run_kind` = 'compare'")
    assert len(logged) == 1 and logged[0].info.run_name.startswith("compare__")
    assert logged[0].info.status == "FINISHED"
    note = logged[0].data.tags["mlflow.note.content"]
    assert "## Differences vs baseline" in note and "![" not in note  # the verdict, without dangling figure links
    metrics = logged[0].data.metrics
    assert any(k.startswith("final_mean/") for k in metrics) and any(k.startswith("diff/") for k in metrics)
    names = {Path(f.path).name for f in client.list_artifacts(logged[0].info.run_id, "compare")}
    assert {"report.md", "report.html", "summary.json", "learning_curves.png", "eval_scores.png"} <= names
    page = (out / "report.html").read_text()
    assert page.count("src=\"data:image/png;base64,") == 2 and "<table>" in page  # what MLflow shows, figures in

    # a second comparison ignores the compare run; --group-by merges the two hicra arms (4 runs, 1 unfinished)
    capsys.readouterr()
    out2 = out.parent / "by_algo"
    assert run_main(["--experiment", "study", "--tracking-uri", uri, "--out", str(out2), "--no-log",
                     "--group-by", "algorithm"]) == 0
    summary = no_nan((out2 / "summary.json").read_text())
    groups = {g["label"]: g for g in summary["groups"]}
    assert summary["n_runs"] == 8 and set(groups) == {"algorithm=grpo", "algorithm=hicra", "algorithm=entropy_reg"}
    assert (groups["algorithm=hicra"]["n_runs"], groups["algorithm=hicra"]["n_unfinished"]) == (4, 1)
    printed = capsys.readouterr().out
    assert "algorithm=hicra" in printed and "4 (1 unfinished)" in printed and "Differences vs baseline" in printed


def test_explicit_runs_and_missing_choice_tags(study, tmp_path):
    uri, ids = study
    out = tmp_path / "ids"
    assert run_main([ids[("grpo", None, 0)], ids[("hicra", "0.1", 0)], "--tracking-uri", uri, "--out", str(out),
                     "--no-log"]) == 0
    labels = [g["label"] for g in no_nan((out / "summary.json").read_text())["groups"]]
    assert labels == [GRPO, "algorithm=hicra planner=strategic_grams"]  # alpha no longer splits anything

    legacy = tmp_path / "legacy"
    assert run_main(["--experiment", "legacy", "--tracking-uri", uri, "--out", str(legacy), "--no-log"]) == 0
    summary = no_nan((legacy / "summary.json").read_text())
    assert [g["label"] for g in summary["groups"]] == [GRPO, "algorithm=<missing> planner=<missing>"]
    report = (legacy / "report.md").read_text()
    assert "grouped under `algorithm=<missing>`: legacy1" in report


@pytest.mark.parametrize("case, expected", [
    ("group_by_typo", "--group-by key(s) algorithm.alpah not found in any of the 8 runs; available: tags "),
    ("bad_baseline", "--baseline 'ppo' matches no group; use one of: 'algorithm=entropy_reg planner=none'; "),
    ("eval_run_given", "is an eval run (hicra.run_kind=eval); pass training runs"),
    ("bad_metric", "--metric 'val/acc' is not logged by any of the 8 runs; logged: train/accuracy, "),
    ("bad_threshold", "--threshold=nan is not allowed; use a finite number"),
    ("missing_experiment", "experiment 'nope' not found in the tracking store"),
])
def test_user_errors_are_one_line(case, expected, study, tmp_path, capsys):
    import mlflow

    uri, _ = study
    args = {"group_by_typo": ["--group-by", "choice.algorithm,algorithm.alpah"], "bad_baseline": ["--baseline", "ppo"],
            "bad_metric": ["--metric", "val/acc"], "bad_threshold": ["--threshold", "nan"],
            "missing_experiment": ["--experiment", "nope"]}.get(case, [])
    if case == "eval_run_given":
        eval_exp = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("evals")
        args = [mlflow.MlflowClient(tracking_uri=uri).search_runs([eval_exp.experiment_id])[0].info.run_id]
    experiment = [] if "--experiment" in args else ["--experiment", "study"]
    capsys.readouterr()
    assert run_main([*args, *experiment, "--tracking-uri", uri, "--out", str(tmp_path / "o"), "--no-log"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hicra-compare: error: ") and expected in err[0], err


def test_empty_experiment_through_the_real_cli(study, tmp_path):
    uri, _ = study
    exe = Path(sys.executable).parent / "hicra-compare"
    proc = subprocess.run([str(exe), "--experiment", "empty", "--tracking-uri", uri, "--out", str(tmp_path / "o")],
                          check=False, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["hicra-compare: error: experiment 'empty' has no training runs"], lines
    assert not (tmp_path / "o").exists()


def test_nan_and_inf_are_flagged_not_dropped_or_a_traceback(tmp_path, capsys):
    """An inf (MLflow's SQL store keeps it as the largest float) overflowed the statistics into a traceback, and a
    NaN point vanished: both are now left out of the numbers and named, run by run."""
    import mlflow
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("nonfinite", artifact_location=(tmp_path / "art").as_uri())
    ids = []
    for seed, val in enumerate([{0: 0.0, 2: math.inf, 4: 0.5}, {0: 0.0, 2: 0.3, 4: math.nan}, {0: 0.0, 4: 0.2}]):
        run = client.create_run(exp, run_name=f"s{seed}", tags={"choice.algorithm": "grpo", "choice.planner": "none",
                                                                "seed": str(seed)})
        client.log_param(run.info.run_id, "trainer.max_steps", "4")
        client.log_batch(run.info.run_id, metrics=[Metric("val/accuracy", v, 0, step) for step, v in val.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
    out = tmp_path / "cmp"
    capsys.readouterr()
    assert run_main(["--experiment", "nonfinite", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    printed = capsys.readouterr().out
    assert f"s0 ({ids[0][:8]}): val/accuracy" in printed and f"s1 ({ids[1][:8]}): val/accuracy" in printed

    (group,) = no_nan((out / "summary.json").read_text())["groups"]
    runs = {r["name"]: r for r in group["runs"]}
    assert runs["s0"]["non_finite"] == {"val/accuracy": [[2, "inf"]]} and runs["s0"]["best"] == 0.5
    assert (runs["s1"]["final"], runs["s1"]["final_non_finite"]) == (None, "NaN")  # its last value: no final
    assert group["final"]["mean"] == pytest.approx(0.35) and group["non_finite_runs"] == {"final": 2, "best": 2}
    report = (out / "report.md").read_text()
    for text in ["0.350 [range 0.200, 0.500] [2 of 3 runs] [NaN/inf in 2 run(s), left out]", "NaN (last logged value)",
                 f"s0 ({ids[0]}): val/accuracy inf at step 2", f"s1 ({ids[1]}): val/accuracy NaN at step 4"]:
        assert text in report, text
