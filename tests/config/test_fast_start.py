"""A bad option or value and `--help` are answered before torch, Lightning, transformers, MLflow or pandas load.

Those imports take seconds; a typo should not. Proven on `sys.modules` of a fresh interpreter (a property, not a
timing), and `--help` of the Hydra CLIs is checked to be exactly Hydra's own text.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys

import pytest
from support import CONF_DIR, PROJECT_ROOT

HEAVY = ("torch", "pytorch_lightning", "lightning", "transformers", "mlflow", "pandas")
ALGORITHMS = ", ".join(sorted(p.stem for p in (CONF_DIR / "algorithm").glob("*.yaml")))

# (console script module, prog, args, exit code, a line of the output)
CASES = [
    ("hicra.training.cli", "hicra-train", ["algorithm=nope"], 2,
     "hicra-train: error: unknown algorithm 'nope'; allowed: " + ALGORITHMS),
    ("hicra.training.cli", "hicra-train", ["nope.key=1"], 2, "hicra-train: error: Could not override 'nope.key'"),
    ("hicra.training.cli", "hicra-train", ["seed=abc"], 2,
     "hicra-train: error: seed='abc' is not allowed; allowed: an integer in [0, 4294967295]"),
    ("hicra.training.cli", "hicra-train", ["-m", "algorithm.group_size=4,1"], 2,
     "hicra-train: error: job 1 of 2 (algorithm.group_size=1): algorithm.group_size=1 is not allowed"),
    ("hicra.training.cli", "hicra-train", ["+prompts_per_stepp=4"], 2, "did you mean prompts_per_step?"),
    ("hicra.training.cli", "hicra-train", ["--help"], 0, "algorithm: " + ALGORITHMS),
    ("hicra.training.cli", "hicra-train", ["algorithm=grpo", "-h"], 0, "  _target_: hicra.algorithms.Algorithm"),
    ("hicra.evaluation.cli", "hicra-eval", ["benchmark=nope"], 2, "hicra-eval: error: unknown benchmark 'nope'"),
    ("hicra.evaluation.cli", "hicra-eval", ["--help"], 0, "== Configuration groups =="),
    ("hicra.compare.cli", "hicra-compare", ["--help"], 0, "usage: hicra-compare"),
    ("hicra.compare.cli", "hicra-compare", ["--bogus"], 2, "hicra-compare: error: unrecognized arguments: --bogus"),
    ("hicra.analyze.cli", "hicra-analyze", ["--help"], 0, "usage: hicra-analyze"),
    ("hicra.analyze.cli", "hicra-analyze", ["--bogus"], 2, "hicra-analyze: error: unrecognized arguments: --bogus"),
    ("hicra.grams.cli", "hicra-grams", ["mine", "--help"], 0, "usage: hicra-grams mine"),
    ("hicra.grams.cli", "hicra-grams", ["mine"], 2, "hicra-grams: error: the following arguments are required"),
]

# Runs every case in one fresh interpreter, in order, as the console script would (`sys.exit(main())`), and records
# which heavy modules each case loaded. One interpreter for all: a case that loads torch is the first to report it.
PROBE = """
import contextlib, importlib, io, json, sys
heavy, cases, results = sys.argv[1].split(","), json.loads(sys.argv[2]), []
for module, prog, args in cases:
    sys.argv = [prog, *args]
    out, err = io.StringIO(), io.StringIO()
    before = {m for m in heavy if m in sys.modules}
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = importlib.import_module(module).main() or 0
        except SystemExit as exc:
            code = exc.code or 0
    loaded = sorted(m for m in heavy if m in sys.modules and m not in before)
    results.append({"code": code, "output": out.getvalue() + err.getvalue(), "loaded": loaded})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def probed() -> list[dict]:
    cases = [[module, prog, args] for module, prog, args, _, _ in CASES]
    done = subprocess.run([sys.executable, "-c", PROBE, ",".join(HEAVY), json.dumps(cases)], cwd=PROJECT_ROOT, check=False,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{c[1]} {' '.join(c[2])}" for c in CASES])
def test_a_mistake_or_help_is_answered_before_heavy_imports(probed, case):
    _, _, _, code, line = CASES[case]
    result = probed[case]
    assert result["loaded"] == [], result
    assert result["code"] == code, result
    assert line in result["output"], result
    assert "Traceback" not in result["output"]


def _printed(main, args: list[str], monkeypatch) -> str:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.setattr(sys, "argv", ["hicra-train", *args])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # Hydra configures logging while it composes
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main()
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # Hydra's main set it: a later in-process `train(cfg)` would read its run dir
        root.handlers[:], root.level = handlers, level
    return out.getvalue()


def test_help_is_hydras_own_text(monkeypatch):
    from hicra.training import cli

    args = ["algorithm=grpo", "+extra=1", "~diagnostics", "--help"]
    ours = _printed(cli.main, args, monkeypatch)
    hydras = _printed(cli._hydra_main, args, monkeypatch)  # Hydra's own app help: ~1.5 s of listing groups
    assert "== Configuration groups ==" in ours and "extra: 1" in ours
    assert ours == hydras


@pytest.fixture(scope="module")
def composed():
    from hicra.config.checks import check_composes

    return check_composes([], CONF_DIR, "train", job_name="cli")


@pytest.mark.parametrize("args", [["-m", "--help"], ["seed=0,1", "--help"], ["hydra.job.name=x", "--help"],
                                  ["--help", "--resolve"], ["--cfg", "job", "--help"]])
def test_help_leaves_what_it_cannot_reproduce_to_hydra(args, composed):
    from hicra.config.help import app_help

    assert app_help(composed, args, CONF_DIR) is None
