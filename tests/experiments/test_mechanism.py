"""experiments/mechanism/run.py: the weighting it applies is HICRA's, and its first-order change of the held-out
decision log-prob is what a real SGD step does (on the tiny model, a task with mixed rewards)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.support import PROJECT_ROOT, run_in_process

SCRIPT = PROJECT_ROOT / "experiments" / "mechanism" / "run.py"


def load_script():
    spec = importlib.util.spec_from_file_location("mechanism_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_token_weights_are_hicras_transform_and_alpha_zero_is_grpo():
    from hicra.algorithms import hicra_token_advantages

    run = load_script()
    adv, mask = torch.tensor([1.0, -0.5]), torch.tensor([[True, False], [False, True]])
    torch.testing.assert_close(run.token_weights(adv, mask, 0.2), torch.tensor([[1.2, 1.0], [-0.5, -0.4]]))
    torch.testing.assert_close(run.token_weights(adv, mask, 0.2), hicra_token_advantages(adv, mask, 0.2))
    assert torch.equal(run.token_weights(adv, mask, 0.0), adv[:, None].expand(2, 2))


def test_bootstrap_ratio_brackets_the_ratio_of_sums():
    run = load_script()
    num, den = [1.2, 2.4, 0.6, 1.8], [1.0, 2.0, 0.5, 1.5]  # every batch's ratio is 1.2
    assert run.bootstrap_ratio(num, den) == pytest.approx((1.2, 1.2))


@pytest.mark.slow
def test_first_order_change_matches_a_real_sgd_step(tmp_path):
    """The script's main as `python run.py ...` runs it, in this process (run_in_process: argv patched, output
    captured); a fresh interpreter proved nothing more and cost seconds of imports."""
    out = tmp_path / "mechanism.json"
    done = run_in_process(load_script().main, str(SCRIPT), [
        "--out", str(out), "--batches", "1", "--check", "1", "--heldout", "8", "experiment=smoke",
        "task._target_=support.ParityTask", "score_truncated=true", "format_reward=0.5",
        "demonstrations=null"])  # the tiny model on a short prompt: a step large enough to measure
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["summary"]["batches"] == 1 and len(result["checks"]) == 2  # GRPO and HICRA
    for check in result["checks"]:  # lr 1e-2 on the tiny model: the step is small enough to be close to linear
        assert check["first_order"] != 0
        assert check["measured"] == pytest.approx(check["first_order"], rel=0.3), check
