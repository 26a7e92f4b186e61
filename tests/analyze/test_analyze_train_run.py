"""End to end: `hicra-analyze` on the session's real tiny training run (tests/conftest.py: `trained_run`)."""

from __future__ import annotations

from pathlib import Path

from support import exit_code


def test_train_then_analyze(trained_run, tmp_path, capsys):
    import matplotlib.image as mpimg
    import mlflow

    from hicra.analyze.cli import main

    out = tmp_path / "analysis"
    assert exit_code(main, [trained_run.run_id, "--tracking-uri", trained_run.tracking_uri, "--out", str(out)]) in (0, None)
    assert "Traceback" not in capsys.readouterr().err

    pngs = sorted(out.glob("*.png"))
    assert {"validation.png", "training.png", "two_phase_dynamics.png"} <= {p.name for p in pngs}
    for png in pngs:
        assert png.stat().st_size > 10_000 and mpimg.imread(png).ndim == 3
    html = (out / "token_viewer.html").read_text()
    assert "class='t" in html and "title='A = " in html
    client = mlflow.MlflowClient(tracking_uri=trained_run.tracking_uri)
    report = (out / "report.md").read_text()
    assert client.get_run(trained_run.run_id).info.run_name in report and "| hicra | strategic_grams | 1 |" in report
    logged = {Path(f.path).name for f in client.list_artifacts(trained_run.run_id, "analysis")}
    assert {"report.md", "token_viewer.html", "validation.png"} <= logged
