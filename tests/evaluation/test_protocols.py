"""Protocols: every conf/protocol option instantiates with the issue's settings; bad values fail in one line."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from support import CONF_DIR

from hicra.errors import ConfigError
from hicra.evaluation.protocols import Protocol


def test_every_protocol_option_instantiates(compose_eval):
    options = sorted(p.stem for p in (CONF_DIR / "protocol").glob("*.yaml"))
    assert options == ["greedy", "paper", "pass_at_k"]
    built = {name: instantiate(compose_eval(f"protocol={name}").protocol) for name in options}
    paper, greedy, pass_k = built["paper"], built["greedy"], built["pass_at_k"]
    assert (paper.num_samples, paper.temperature, paper.top_p, paper.greedy, paper.ks) == (4, 0.6, 0.95, False, (1,))
    assert paper.strict and not greedy.strict and not pass_k.strict  # the paper: strict \boxed{} matching
    # the paper's k: 32 on AIME24/25, 4 on AMC23; 4 elsewhere (hicra's choice, said in conf/protocol/paper.yaml)
    assert [paper.samples_for(b) for b in ("aime24", "AIME25", "amc23", "math500", "held_out")] == [32, 32, 4, 4, 4]
    assert (greedy.num_samples, greedy.greedy, greedy.ks) == (1, True, (1,))
    assert (pass_k.num_samples, pass_k.temperature, pass_k.ks) == (16, 1.0, (1, 2, 4, 8, 16))
    sampler = paper.sampler(max_new_tokens=32, max_prompt_tokens=64)
    assert (sampler.temperature, sampler.top_p, sampler.max_new_tokens, sampler.val_max_new_tokens) == (0.6, 0.95,
                                                                                                        32, 32)


PAPER_RECIPES = sorted(p.stem for p in (CONF_DIR / "experiment" / "paper").glob("*.yaml"))


def test_a_base_model_gets_the_budget_its_trained_counterparts_answer_within(compose_eval, compose_cfg):
    from omegaconf import OmegaConf

    from hicra.evaluation.evaluate import generation_budget
    from hicra.evaluation.sources import Source

    base = Source(label="base", checkpoint="base")  # checkpoint=null: no training run
    paper = compose_eval("protocol=paper")
    assert instantiate(paper.protocol).base_max_new_tokens == 16384
    recipes = {compose_cfg(f"experiment=paper/{name}").rollout.max_new_tokens for name in PAPER_RECIPES}
    assert len(PAPER_RECIPES) == 4 and recipes == {generation_budget(base, paper)}  # not 1024: no cut-off base replies
    trained = Source(label="run", checkpoint="run",
                     resolved=OmegaConf.create({"rollout": {"max_new_tokens": recipes.pop()}}))
    assert generation_budget(trained, paper) == generation_budget(base, paper)  # base and trained alike
    small = Source(label="run", checkpoint="run", resolved=OmegaConf.create({"rollout": {"max_new_tokens": 64}}))
    assert generation_budget(small, paper) == 64  # a trained run: its own budget, whatever the protocol
    assert [generation_budget(base, compose_eval(f"protocol={name}")) for name in ("greedy", "pass_at_k")] == [1024] * 2
    assert generation_budget(base, compose_eval("protocol.base_max_new_tokens=2048")) == 2048
    assert generation_budget(base, compose_eval("protocol=paper", "base_max_new_tokens=48")) == 48  # eval.yaml's wins


def test_pass_at_1_is_always_reported():
    assert Protocol("x", num_samples=4, ks=[4, 2]).ks == (1, 2, 4)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"num_samples": 0}, "protocol.num_samples=0"),
    ({"num_samples": 4, "greedy": True}, "greedy"),
    ({"num_samples": 4, "ks": [8]}, "protocol.ks=[8]"),
    ({"num_samples": 4, "ks": [0]}, "[1, 4]"),
    ({"num_samples": 8, "samples_per_benchmark": {"aime": 2}, "ks": [4]}, "[1, 2]"),  # the fewest any benchmark gets
    ({"num_samples": 4, "samples_per_benchmark": {"aime": 0}}, "protocol.samples_per_benchmark.aime=0"),
    ({"num_samples": 1, "greedy": True, "samples_per_benchmark": {"aime": 4}}, "greedy"),
    ({"num_samples": 4, "strict": "yes"}, "protocol.strict='yes'"),
    ({"num_samples": 4, "temperature": 0.0}, "protocol.temperature=0.0"),
    ({"num_samples": 4, "top_p": 1.5}, "protocol.top_p=1.5"),
    ({"num_samples": 4, "base_max_new_tokens": 0}, "protocol.base_max_new_tokens=0"),
    ({"num_samples": 4, "base_max_new_tokens": True}, "protocol.base_max_new_tokens=True"),
])
def test_bad_values_are_one_line_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as err:
        Protocol("x", **kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)
