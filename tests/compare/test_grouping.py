"""hicra.compare.grouping on hand-built RunInfo objects (no MLflow): swept keys, per-run keys, labels, notes."""

import pytest

from hicra.analyze.runs import AnalyzeError, RunInfo
from hicra.compare.collect import TrainRun
from hicra.compare.grouping import automatic_keys, make_grouping


def run(i: int, algo: str | None, planner: str | None, seed: int, **params) -> TrainRun:
    tags = {"seed": str(seed), "git.sha": f"sha{i}", "hicra.run_dir": f"/tmp/{i}", "choice.logger": f"x{i}"}
    tags |= {"choice.algorithm": algo} if algo else {}
    tags |= {"choice.planner": planner} if planner else {}
    params = {"seed": str(seed), "logger.run_name": f"r{i}", "paths.output_dir": f"/o/{i}", **params}
    info = RunInfo(f"id{i}", f"run{i}", algo or "unknown", planner or "unknown", str(seed), "FINISHED",
                   tags=tags, params={k.replace("__", "."): str(v) for k, v in params.items()})
    return TrainRun(info, 10, 10, None)


def test_swept_key_inside_a_choice_is_found_and_copies_and_per_run_keys_are_not():
    runs = [run(0, "grpo", "none", 0, algorithm__target="identity"),
            run(1, "grpo", "none", 1, algorithm__target="identity"),
            run(2, "hicra", "strategic_grams", 0, algorithm__target="hicra", algorithm__alpha=0.1,
                algorithm__fn__alpha=0.1, planner__seed=0),
            run(3, "hicra", "strategic_grams", 1, algorithm__target="hicra", algorithm__alpha=0.2,
                algorithm__fn__alpha=0.2, planner__seed=1)]
    # algorithm.target follows the algorithm choice, algorithm.fn.alpha copies algorithm.alpha, planner.seed
    # follows seed, logger/paths/git/choice.logger differ per run: none of them is an arm
    assert automatic_keys([r.info for r in runs]) == ["choice.algorithm", "choice.planner", "algorithm.alpha"]
    grouping = make_grouping(runs, None)
    assert [g.label for g in grouping.groups] == ["algorithm=grpo planner=none",
                                                  "algorithm=hicra planner=strategic_grams algorithm.alpha=0.1",
                                                  "algorithm=hicra planner=strategic_grams algorithm.alpha=0.2"]
    assert [len(g.runs) for g in grouping.groups] == [2, 1, 1]
    assert any("`algorithm.alpha` is not in the config of group(s) `algorithm=grpo planner=none`" in n
               for n in grouping.notes)


def test_a_seed_key_swept_on_purpose_is_an_arm():
    runs = [run(i, "grpo", "none", i % 2, task__seed=i // 2) for i in range(4)]  # task.seed 0,0,1,1 vs seed 0,1,0,1
    assert automatic_keys([r.info for r in runs])[-1] == "task.seed"


def test_other_choices_only_when_they_split():
    runs = [run(0, "grpo", "none", 0), run(1, "grpo", "none", 1)]
    runs[0].info.tags["choice.experiment"] = runs[1].info.tags["choice.experiment"] = "study/grpo"
    runs[1].info.tags["choice.task"] = "countdown"
    runs[0].info.tags["choice.task"] = "chain_sum"
    assert automatic_keys([r.info for r in runs]) == ["choice.algorithm", "choice.planner", "choice.task"]


def test_runs_without_choice_tags_are_grouped_as_missing_with_a_note():
    grouping = make_grouping([run(0, "grpo", "none", 0), run(1, None, None, 0)], None)
    assert [g.label for g in grouping.groups] == ["algorithm=<missing> planner=<missing>",
                                                  "algorithm=grpo planner=none"]
    assert any("have no `choice.algorithm`" in n and "run1 (id1)" in n for n in grouping.notes)


def test_group_by_short_choice_names_and_duplicate_seed_note():
    runs = [run(0, "hicra", "a", 0), run(1, "hicra", "b", 0)]
    grouping = make_grouping(runs, ["algorithm"])
    assert grouping.keys == ["choice.algorithm"] and [g.label for g in grouping.groups] == ["algorithm=hicra"]
    assert any("share seed(s) 0" in n for n in grouping.notes)


def test_group_by_key_that_no_run_has_is_an_error():
    with pytest.raises(AnalyzeError, match=r"alpah not found in any of the 1 runs; available: tags "
                                           r"choice.algorithm, choice.logger, choice.planner"):
        make_grouping([run(0, "grpo", "none", 0)], ["choice.algorithm", "algorithm.alpah"])


def test_planner_is_left_out_of_the_label_of_runs_that_do_not_read_it():
    """A user's 2x2 sweep (algorithm=grpo,hicra x 2 seeds, the default planner): GRPO never reads the planning mask,
    so its group is `algorithm=grpo`, not `algorithm=grpo planner=strategic_grams`, as its run names say."""
    runs = [run(2 * a + s, algo, "strategic_grams", s, algorithm__needs_planning_mask=algo == "hicra",
                planner__top_fraction=0.3) for a, algo in enumerate(("grpo", "hicra")) for s in (0, 1)]
    for group_by in (None, ["algorithm", "planner", "planner.top_fraction"]):
        grouping = make_grouping(runs, group_by)
        hicra = "algorithm=hicra planner=strategic_grams" + (" planner.top_fraction=0.3" if group_by else "")
        assert [g.label for g in grouping.groups] == ["algorithm=grpo", hicra]
        assert [len(g.runs) for g in grouping.groups] == [2, 2]
        assert any("`choice.planner` is left out of the label of group(s) `algorithm=grpo`: their algorithm does not "
                   "read the planning mask" in n for n in grouping.notes), grouping.notes
        assert not any("<missing>" in n or "not applicable" in n for n in grouping.notes), grouping.notes


def test_a_planner_swept_under_an_algorithm_that_does_not_read_it_still_names_the_arms():
    runs = [run(i, "grpo", planner, 0, algorithm__needs_planning_mask=False)
            for i, planner in enumerate(("strategic_grams", "random"))]
    assert [g.label for g in make_grouping(runs, None).groups] == ["algorithm=grpo planner=random",
                                                                   "algorithm=grpo planner=strategic_grams"]


def test_a_key_added_to_the_config_between_runs_does_not_split_an_arm():
    """A study run over several commits: older runs lack a param newer ones log with one value; one arm per choice."""
    runs = [run(0, "grpo", "none", 0), run(1, "grpo", "none", 1, reduce_gradients_every_micro_batch=False),
            run(2, "hicra", "grams", 0), run(3, "hicra", "grams", 1, reduce_gradients_every_micro_batch=False),
            run(4, "hicra", "grams", 2, algorithm__alpha=0.5, reduce_gradients_every_micro_batch=False)]
    # algorithm.alpha: 0.5 in one run, absent in the others -> added, not swept, like the micro-batch flag
    grouping = make_grouping(runs, None)
    assert grouping.keys == ["choice.algorithm", "choice.planner"]
    assert [(g.label, len(g.runs)) for g in grouping.groups] == [("algorithm=grpo planner=none", 2),
                                                                 ("algorithm=hicra planner=grams", 3)]
    note = next(n for n in grouping.notes if "reduce_gradients_every_micro_batch" in n)
    assert "absent from 2 run(s)" in note and "run0 (id0)" in note and "run2 (id2)" in note
    # the same flag with two values present is a sweep
    runs[0].info.params["reduce_gradients_every_micro_batch"] = "True"
    assert "reduce_gradients_every_micro_batch" in automatic_keys([r.info for r in runs])
