"""What `train(cfg)` is built from holds its shape: sweep syntax read by Hydra's own parser, importing the run
changes no global state (the filters are installed when a run starts, once), the run context cannot be changed
once built, and hicra's import graph has no circle."""

from __future__ import annotations

import ast
import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from support import PROJECT_ROOT, cli_env

from hicra.config.sweep import is_sweep, swept_keys
from hicra.training.console import RANK_ZERO_LOGGERS, LightningChatter, quiet_lightning
from hicra.training.run_context import RunContext


def test_sweep_syntax_is_what_hydras_parser_says():
    assert is_sweep("0.1,0.2") and is_sweep("range(0,3)") and is_sweep("choice(a,b)") and is_sweep("interval(0,1)")
    assert not is_sweep("[1,2]") and not is_sweep("{a:1,b:2}") and not is_sweep("'a, b'") and not is_sweep("0.1")
    assert not is_sweep(r"a\,b")  # an escaped comma is part of one value (a regex on ',' said otherwise)


def test_swept_keys_drop_prefixes_and_ignore_flags_and_plain_values():
    args = ["-m", "--config-name=train", "seed=0,1", "+extra@pkg=x,y", "~gone=1", "algorithm=hicra", "lr=[1,2]"]
    assert swept_keys(args) == {"seed", "extra@pkg"}


@pytest.mark.slow  # a whole training run or a fresh interpreter (make test-fast leaves it out)
def test_importing_the_run_installs_no_filter():
    probe = ("import logging, warnings; before = list(warnings.filters); import hicra.training.run; "
             "added = [f for f in warnings.filters if f not in before and f[1] is not None and "
             "any(s in f[1].pattern for s in ('LeafSpec', 'transfer_batch', 'ModelCheckpoint', 'dirpath'))]; "
             f"print(added, [logging.getLogger(n).filters for n in {RANK_ZERO_LOGGERS!r}])")
    out = subprocess.run([sys.executable, "-c", probe], check=False, cwd=PROJECT_ROOT, env=cli_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[] [[], [], [], []]"


def test_quiet_lightning_filters_its_chatter_once_per_logger():
    quiet_lightning(), quiet_lightning()
    for name in RANK_ZERO_LOGGERS:
        assert sum(isinstance(f, LightningChatter) for f in logging.getLogger(name).filters) == 1
    chatter = LightningChatter()

    def passes(message: str) -> bool:
        return chatter.filter(logging.LogRecord("x", logging.INFO, "", 0, message, None, None))

    assert not passes("GPU available: False, used: False")
    assert not passes("`Trainer(val_check_interval=1)` was configured so validation will run")
    assert passes("Restoring states from the checkpoint path at last.ckpt")


def test_the_run_context_is_frozen_and_counts_prompt_batches():
    algorithm = type("Algorithm", (), {"num_iterations": 2})()
    cfg = OmegaConf.create({"trainer": {"max_steps": 5}})
    run = RunContext(cfg, {}, algorithm, None, None, None, out_dir=Path("run"), is_main=True)
    assert run.num_batches == 3  # 5 optimizer steps, 2 per prompt batch
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.is_main = False


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The hicra modules a file imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found & modules


def test_hicras_import_graph_has_no_circle():
    files = {".".join(p.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (PROJECT_ROOT / "hicra").rglob("*.py")}
    graph = {m: _imports(p, set(files)) - {m} for m, p in files.items()}
    done, circles = set(), []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph[module]):
            if dep in path:
                circles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in done:
                done.add(dep)
                visit(dep, path + [dep])

    for module in sorted(graph):
        if module not in done:
            done.add(module)
            visit(module, [module])
    assert circles == []
