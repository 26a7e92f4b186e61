"""End to end: a real 3-step `hicra-train` smoke run (tiny model), then `hicra-analyze` on it (~30-60 s)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_train_then_analyze(tmp_path):
    import matplotlib.image as mpimg
    import mlflow

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    train = subprocess.run([str(BIN / "hicra-train"), "experiment=smoke", "trainer.max_steps=3",
                            f"hydra.run.dir={tmp_path}/run", f"logger.tracking_uri={uri}",
                            f"logger.artifact_location={tmp_path}/art"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL)
    assert train.returncode == 0, train.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("hicra").experiment_id])
    out = tmp_path / "analysis"
    result = subprocess.run([str(BIN / "hicra-analyze"), run.info.run_id, "--tracking-uri", uri, "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    pngs = sorted(out.glob("*.png"))
    assert {"validation.png", "training.png", "two_phase_dynamics.png"} <= {p.name for p in pngs}
    for png in pngs:
        assert png.stat().st_size > 10_000 and mpimg.imread(png).ndim == 3
    html = (out / "token_viewer.html").read_text()
    assert "class='t" in html and "title='A = " in html
    report = (out / "report.md").read_text()
    assert run.info.run_name in report and "| hicra | strategic_grams | 0 |" in report
    logged = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "analysis")}
    assert {"report.md", "token_viewer.html", "validation.png"} <= logged
