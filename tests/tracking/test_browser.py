"""The project's HTML pages and MLflow's run page in a real browser (headless Chromium, hicra/browser.py), on the
session's tiny training run: each page loads without a script error, its figures load, and the run is identifiable.
Slow tier (a browser and an MLflow server start); `make test` runs it, `make test-fast` does not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hicra.browser import Browser, chromium_binary, mlflow_server

sys.path.insert(0, str(Path(__file__).parents[1] / "compare"))  # tests/compare: the hostile store
from hostile_store import EXPERIMENT, RUN_NAME, TITLE, completions, make_hostile_store

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium_binary() is None, reason="no Chromium: `make setup` installs Debian's "
                                 "`chromium` where it runs as root with apt-get")]

IMAGES_LOADED = "[...document.images].every(i => i.complete && i.naturalWidth > 0)"


@pytest.fixture(scope="module")
def browser():
    b = Browser(chromium_binary())
    yield b
    b.close()


def test_reports_and_token_viewer_render_with_their_figures(browser, trained_run, tmp_path):
    from hicra.analyze.cli import main as analyze
    from hicra.compare.cli import main as compare

    assert analyze(["--tracking-uri", trained_run.tracking_uri, trained_run.run_id, "--out",
                    str(tmp_path / "analysis"), "--no-log"]) == 0
    assert compare(["--tracking-uri", trained_run.tracking_uri, trained_run.run_id, "--out",
                    str(tmp_path / "compare"), "--no-log"]) == 0
    for page in (tmp_path / "analysis" / "report.html", tmp_path / "compare" / "report.html"):
        browser.open(page.as_uri(), ready=f"document.readyState === 'complete' && {IMAGES_LOADED}")
        assert browser.evaluate("document.images.length") >= 1, page  # figures embedded, and they decode
        assert "s1 hicra grams" in browser.evaluate("document.body.innerText"), page  # the run, by name
    viewer = tmp_path / "analysis" / "token_viewer.html"
    browser.open(viewer.as_uri())
    opened = browser.evaluate("document.body.className")  # by-boost, or by-a when no token was boosted
    other = "a" if opened == "by-boost" else "boost"
    browser.evaluate(f"document.querySelector(\"input[value='{other}']\").click()")  # the page's script switches
    assert opened in ("by-a", "by-boost") and browser.evaluate("document.body.className") == f"by-{other}"
    assert "s1 hicra grams" in browser.evaluate("document.body.innerText")
    completions = max((trained_run.run_dir / "completions").glob("completions_step*.html"))
    browser.open(completions.as_uri())
    assert browser.evaluate("document.querySelectorAll('.c .resp').length") > 0  # one card per completion
    assert "s1 hicra grams" in browser.evaluate("document.title")  # the page names its run
    assert browser.errors == []


@pytest.fixture(scope="module")
def mlflow_ui(trained_run, tmp_path_factory):
    """One server for the module (a start costs seconds of CPU); it reads the store live, so runs that a
    test adds show up."""
    with mlflow_server(trained_run.tracking_uri, tmp_path_factory.mktemp("mlflow_ui") / "mlflow.log") as url:
        yield url  # hicra.browser starts it without MLflow's job runner


def test_mlflow_run_page_says_what_the_run_was_and_how_it_did(browser, trained_run, mlflow_ui, tmp_path):
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=trained_run.tracking_uri).get_run(trained_run.run_id)
    page = f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning"
    assert page.removeprefix(mlflow_ui) in trained_run.result["stdout"]  # the run summary prints this address
    browser.open(page, ready="document.body.innerText.includes('Held-out accuracy at step')", timeout_s=120)
    text = browser.evaluate("document.body.innerText")
    assert "s1 hicra grams" in text  # the name, seed first
    assert "95% Wilson" in text and "Last completions" in text  # the description, rendered on the run page
    browser.screenshot(tmp_path / "run_page.png")


SECTION_HEADER = "[data-testid='experiment-view-compare-runs-section-header']"


def test_mlflow_orders_metric_sections_by_name_as_the_readme_says(browser, trained_run, mlflow_ui):
    """docs/mlflow_front_end.md (moved from the README) tells users that the run page's "Model metrics" tab sorts its sections by
    name, `train` and `val` after the diagnostics, whatever order hicra logs in (no tag or key order changes it). A
    newer MLflow that orders them otherwise fails here, and the README's advice changes with it."""
    import mlflow

    run = mlflow.MlflowClient(tracking_uri=trained_run.tracking_uri).get_run(trained_run.run_id)
    # no ?workflowType= here: after a run's sub-page, MLflow 3.17 stays on "Run page loading"
    page = f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/model-metrics"
    browser.open(page, ready=f"document.querySelectorAll(\"{SECTION_HEADER}\").length > 0", timeout_s=120)
    sections = browser.evaluate(f"[...document.querySelectorAll(\"{SECTION_HEADER}\")]"
                                ".map(h => h.innerText.split('\\n')[0].trim())")
    named = [s for s in sections if s != "Model metrics"]  # keys without a `/`, always last
    assert named == sorted(named) and {"hierarchy", "train", "val"} <= set(named), sections
    assert named.index("hierarchy") < named.index("train") < named.index("val")  # what the README says


XSS_FIRED = f"window.__hicra_xss !== undefined || document.title === '{TITLE}'"
SCRIPT_URLS = "[...document.querySelectorAll('[href],[src]')].filter(e => /^\\s*javascript:/i.test(" \
              "e.getAttribute('href') || e.getAttribute('src'))).length"


def test_text_from_runs_never_runs_as_script(browser, trained_run, mlflow_ui, tmp_path):
    """Run names, an experiment name, a swept value and completion samples that carry markup (tests/compare/
    hostile_store.py: each payload would set window.__hicra_xss and the title) stay text on every page hicra writes
    from them, and on MLflow's own pages; `<missing>` shows. Added to the shared store as an experiment of its own."""
    import mlflow

    from hicra.analyze.cli import main as analyze
    from hicra.compare.cli import main as compare
    from hicra.training.callbacks import render_completions

    uri, ids = make_hostile_store(tmp_path / "hostile", trained_run.tracking_uri)
    assert compare(["--experiment", EXPERIMENT, "--tracking-uri", uri, "--out", str(tmp_path / "compare")]) == 0
    assert analyze([*ids, "--tracking-uri", uri, "--out", str(tmp_path / "analysis"), "--no-log"]) == 0
    row = completions()["rows"][0]
    page = tmp_path / "completions_step000001.html"
    page.write_text(render_completions(1, [{**row, "pieces": [tuple(p) for p in row["pieces"]]}], RUN_NAME))
    files = [tmp_path / "compare" / "report.html", tmp_path / "analysis" / "report.html",
             tmp_path / "analysis" / "token_viewer.html", page]
    for path in files:
        browser.open(path.as_uri())
        assert not browser.evaluate(XSS_FIRED) and browser.evaluate(SCRIPT_URLS) == 0, path
        assert RUN_NAME in browser.evaluate("document.body.innerText"), path  # the name, shown as text
    browser.open(files[0].as_uri())
    assert "algorithm=<missing>" in browser.evaluate("document.body.innerText")

    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(f"{EXPERIMENT}-compare").experiment_id])
    named = client.get_run(ids[0])  # the run whose name is an <img onerror=...>
    pages = [(named.info.experiment_id, named.info.run_id, "onerror="),  # its name in the page header, as text
             (run.info.experiment_id, run.info.run_id, "Differences vs")]  # the report as the compare run's description
    for experiment_id, run_id, ready in pages:
        address = f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
        browser.open("about:blank")  # a fresh load: a hash change inside MLflow's app can stay on "loading"
        browser.open(f"{mlflow_ui}/{address}", ready=f"document.body.innerText.includes('{ready}')", timeout_s=120)
        assert not browser.evaluate(XSS_FIRED) and browser.evaluate(SCRIPT_URLS) == 0, address
