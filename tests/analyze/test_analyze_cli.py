"""`hicra-analyze` on a synthetic MLflow store: figures, token viewer, report, artifacts logged back, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from support import exit_code
from synthetic import TRICKY, make_store

from hicra.analyze.cli import main

FIGURES = ["two_phase_dynamics.png", "semantic_vs_token_entropy.png", "validation.png", "training.png",
           "planning_tokens.png"]


def run_main(args: list[str]) -> int:
    return exit_code(main, args)


def assert_png(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file(), path
    assert path.stat().st_size > 10_000, (path, path.stat().st_size)
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    assert image.std() > 0.01  # not a blank canvas


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One sqlite store (its schema migration is the slow part): experiment 'hicra' with every metric, 'old'
    without the hierarchy diagnostics."""
    root = tmp_path_factory.mktemp("store")
    uri, full = make_store(root)
    _, old = make_store(root, with_new_metrics=False, experiment="old")
    return uri, full, old


@pytest.fixture
def store(stores):
    return stores[0], stores[1]


def test_full_report(store, tmp_path, capsys):
    import mlflow

    uri, run_ids = store
    out = tmp_path / "out"
    assert run_main(["--tracking-uri", uri, "--out", str(out)]) == 0  # all runs of experiment 'hicra'

    for name in FIGURES:
        assert_png(out / name)

    html = (out / "token_viewer.html").read_text()
    assert "&lt;b&gt;&amp;&quot;x&quot;&lt;/b&gt;" in html and TRICKY not in html  # escaped token text
    assert "&lt;answer&gt;" in html                                                  # escaped prompt
    assert " different" in html and " idea" in html                                 # the tokens
    assert "rgba(46,125,50," in html and "rgba(198,40,40," in html                 # green / red
    assert "class='t p'" in html and "planning token" in html                       # planning marks
    assert "title='A = -1.2500, boost = +0.0000'" in html                            # hover: both values
    assert "A = +0.6000, boost = +0.1000 | planning token" in html                  # HICRA's boost on a gram token
    assert "<body class='by-boost'>" in html  # a page with a boost opens on it (under A it is a faint shade)
    assert "Side by side: the same prompts at step 2" in html and "--n:2" in html   # the two runs, one prompt
    assert "rgba(198,40,40,0.85)" in html  # |A| = 1.25 is the page maximum: full intensity
    assert "<option value='2' selected>" in html and "data-step='0' hidden" in html  # latest step first
    assert "<script src" not in html and "<link" not in html                        # self-contained

    report = (out / "report.md").read_text()
    for name in ["hicra__strategic_grams__s0", "grpo__none__s1", *run_ids, *FIGURES, "token_viewer.html"]:
        assert name in report
    assert "| hicra | strategic_grams | 0 |" in report and "| grpo | none | 1 |" in report
    assert "0.500" in report  # final val/accuracy of the hicra run (0.2 + 0.15 * 2)
    assert "None: every panel had its metrics" not in report  # the optional gram-context panels are absent
    page = (out / "report.html").read_text()  # MLflow shows .md as text: this page is the one with its figures
    assert page.count("src=\"data:image/png;base64,") == len(FIGURES) and "](" not in page

    client = mlflow.MlflowClient(tracking_uri=uri)
    for rid in run_ids:
        logged = {Path(f.path).name for f in client.list_artifacts(rid, "analysis")}
        assert {"report.md", "report.html", "token_viewer.html", *FIGURES} <= logged

    printed = capsys.readouterr().out.strip().splitlines()
    assert 3 <= len(printed) <= 6 and all(len(line) < 200 for line in printed)


def test_missing_new_metrics_are_skipped_and_reported(stores, tmp_path):
    uri, _, run_ids = stores
    out = tmp_path / "out"
    assert run_main([run_ids[0], "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    report = (out / "report.md").read_text()
    assert "hicra__strategic_grams__s0" in report and "grpo__none__s1" not in report
    for key in ["hierarchy/rel_ppl_planning", "hierarchy/semantic_entropy", "train/pass_at_g"]:
        assert f"{key} not logged" in report
    assert_png(out / "two_phase_dynamics.png")  # token entropy falls back to policy/entropy
    assert not (out / "planning_tokens.png").exists() or (out / "planning_tokens.png").stat().st_size > 10_000
    import mlflow

    assert not mlflow.MlflowClient(tracking_uri=uri).list_artifacts(run_ids[0], "analysis")  # --no-log


@pytest.mark.parametrize("case", ["unknown_run", "empty_experiment", "missing_experiment", "missing_store"])
def test_user_errors_exit_2_with_one_line(case, store, tmp_path, capsys):
    import mlflow

    uri, _ = store
    if case == "empty_experiment":
        mlflow.MlflowClient(tracking_uri=uri).create_experiment("empty",
                                                                artifact_location=(tmp_path / "e").as_uri())
    args = {"unknown_run": ["0123456789abcdef0123456789abcdef", "--tracking-uri", uri],
            "empty_experiment": ["--experiment", "empty", "--tracking-uri", uri],
            "missing_experiment": ["--experiment", "nope", "--tracking-uri", uri],
            "missing_store": ["--tracking-uri", f"sqlite:///{tmp_path}/absent.db"]}[case]
    capsys.readouterr()
    assert run_main([*args, "--out", str(tmp_path / "out"), "--no-log"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hicra-analyze: error: "), err
    assert "Traceback" not in err[0]
    assert not (tmp_path / "absent.db").exists()  # a missing store is not created


def test_bad_argument_is_one_line(capsys):
    assert run_main(["--bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hicra-analyze: error: ")


@pytest.mark.parametrize("data, problem", [
    ([1, 2], "holds a JSON list, not an object with 'step' and 'rows'"),
    ({"rows": []}, "has no 'step'"),
    ({"step": "x", "rows": []}, "'step' is 'x', not an integer"),
    ({"step": 5, "rows": "x"}, "'rows' is not a list"),
    ({"step": 5, "rows": ["x"]}, "row 0 is a str, not an object"),
    ({"step": 5, "rows": [{"pieces": 5}]}, "row 0: 'pieces' is not a list of [token text, is planning] pairs"),
    ({"step": 5, "rows": [{"pieces": [["a", False]], "token_advantages": ["x"]}]},
     "row 0: 'token_advantages' is not a list of numbers"),
    ({"step": 5, "rows": [{"pieces": [], "reward": None}]}, "row 0: 'reward' is not a number"),
])
def test_a_completion_sample_the_viewer_cannot_show_says_why(data, problem):
    from hicra.analyze.completion_samples import checked_sample

    assert checked_sample(data) == (None, problem)
    good = {"step": "7", "rows": [{"pieces": [["a", True]], "token_advantages": [None], "reward": 1}]}
    assert checked_sample(good) == ({**good, "step": 7}, None)


def test_a_malformed_completions_file_is_one_line_naming_it(stores, tmp_path, capsys):
    """A completions JSON that parses but is not shaped as hicra writes it (hand-edited, another tool's) used to end
    hicra-analyze in a traceback from the token viewer; now that file is skipped with one line, the rest is written."""
    import mlflow

    uri = stores[0]
    _, (run_id, _) = make_store(Path(uri.removeprefix("sqlite:///")).parent, experiment="malformed")
    bad = tmp_path / "completions_step000005.json"
    bad.write_text('{"step": 5, "rows": [{"pieces": 5}]}')
    mlflow.MlflowClient(tracking_uri=uri).log_artifact(run_id, str(bad), "completions")
    capsys.readouterr()
    assert run_main([run_id, "--tracking-uri", uri, "--out", str(tmp_path / "out"), "--no-log"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"hicra-analyze: skipping completions/completions_step000005.json of run {run_id[:8]}: row 0: "
                   "'pieces' is not a list of [token text, is planning] pairs")], err
    viewer = (tmp_path / "out" / "token_viewer.html").read_text()
    assert "data-step='2'" in viewer and "data-step='5'" not in viewer
