"""The token viewer's colourings and legend, in-process (the CLI path is tests/analyze/test_analyze_cli.py)."""

from __future__ import annotations

from hicra.analyze.runs import RunInfo
from hicra.analyze.token_viewer import render_token_viewer


def _samples(token_advantages, advantage):
    pieces = [[f" t{i}", i == 1] for i in range(len(token_advantages))]
    return [{"step": 0, "rows": [{"prompt": "q", "pieces": pieces, "token_advantages": token_advantages,
                                  "reward": 0.0, "advantage": advantage}]}]


def test_an_all_zero_page_says_so_instead_of_a_zero_scale():
    run = RunInfo(run_id="r", name="s0 grpo", algorithm="grpo", planner="none", seed="0", status="FINISHED")
    html = render_token_viewer([run], {"r": _samples([0.0, 0.0], 0.0)})
    assert "-0.000" not in html and "0 on every token of this page" in html
    assert "<body class='by-a'>" in html  # no boost anywhere (GRPO): opens on the token advantage


def test_grpo_has_no_boost_and_hicra_shows_it():
    grpo = RunInfo(run_id="g", name="s0 grpo", algorithm="grpo", planner="none", seed="0", status="FINISHED")
    hicra = RunInfo(run_id="h", name="s0 hicra grams", algorithm="hicra", planner="strategic_grams", seed="0",
                    status="FINISHED")
    html = render_token_viewer([grpo, hicra], {"g": _samples([-1.0, -1.0], -1.0), "h": _samples([-1.0, -0.8], -1.0)})
    assert "A = -1.0000, boost = +0.0000 | planning token" in html  # GRPO's planning token: nothing changed
    assert "A = -0.8000, boost = +0.2000 | planning token" in html  # HICRA: A + 0.2|A| on a planning token
    assert "<body class='by-boost'>" in html and "Side by side" in html
