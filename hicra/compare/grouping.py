"""Group runs into the arms of a study: by Hydra choices and by the config keys that were swept.

Automatic keys: `choice.algorithm`, `choice.planner`, then any other `choice.<group>` tag (experiment, task,
model, ...) that splits the runs further, then every flattened config param that splits them further. "Splits
further" is what separates a swept key from a consequence of a choice: `algorithm.token_advantage_fn._target_`
differs between grpo and hicra but adds no split once `choice.algorithm` is a key, whereas `algorithm.alpha=0.1`
vs `0.2` inside hicra does. Params are tried shortest name first, so an interpolated copy
(`algorithm.token_advantage_fn.alpha: ${..alpha}`) never shows up beside the key it copies.

Per-run keys never define an arm: `seed`, a `*.seed` that equals the run's seed (`planner.seed: ${seed}`),
everything under `logger.`, `paths.`, `hydra.`; tags other than `choice.*` (git, command, run dir) are not read.

A param with one value wherever it is present, absent from other runs, is not a sweep: a key added to the config
between runs (a study run over several commits), so it splits nothing and a note names it.
A run without a key is grouped under `key=<missing>` and named in a note. An automatic param key absent from a
whole cell of choices (grpo has no `algorithm.alpha`) is "not applicable" there: left out of that group's label.

A label says what the runs used. The planner (`choice.planner`, `planner.*`) only reaches training through the
planning mask, which an algorithm with `algorithm.needs_planning_mask` false (GRPO) never reads: for those runs it is
left out of the label, as run names leave it out (hicra.tracking.store.default_run_name), unless it differs between
them (a planner swept on purpose, which also changes their planning diagnostics). Runs logged without that param
(older ones) keep it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hicra.analyze.runs import AnalyzeError, RunInfo
from hicra.compare.collect import TrainRun
from hicra.tracking.html_report import md_code, md_text

MISSING = "<missing>"
DEFAULT_KEYS = ("choice.algorithm", "choice.planner")
IGNORED_CHOICES = ("choice.logger", "choice.paths", "choice.hydra")  # where outputs go, not what was trained
PER_RUN_PREFIXES = ("logger.", "paths.", "hydra.")
READS_PLANNER = "algorithm.needs_planning_mask"  # a logged param; false: the planner does not change training


@dataclass
class Group:
    label: str
    values: dict[str, str | None]  # grouping key -> value (None: missing); not-applicable keys are absent
    runs: list[TrainRun]


@dataclass
class Grouping:
    keys: list[str]
    source: str  # "automatic" or "--group-by"
    groups: list[Group]
    notes: list[str] = field(default_factory=list)


def lookup(info: RunInfo, key: str) -> str | None:
    """A tag, else a param (`seed` is both and they agree), else None."""
    return info.tags.get(key, info.params.get(key))


def short_name(key: str) -> str:
    return key.removeprefix("choice.")


def _cells(infos: list[RunInfo], keys: list[str]) -> set[tuple]:
    return {tuple(lookup(i, k) for k in keys) for i in infos}


def _refines(infos: list[RunInfo], keys: list[str], key: str) -> bool:
    return len(_cells(infos, [*keys, key])) > len(_cells(infos, keys))


def _per_run(key: str, infos: list[RunInfo]) -> bool:
    if key == "seed" or key.startswith(PER_RUN_PREFIXES):
        return True
    # `planner.seed: ${seed}` follows the run's seed; a `task.seed` fixed across seeds and swept on purpose does not
    return key.endswith(".seed") and all(lookup(i, key) in (None, lookup(i, "seed")) for i in infos)


def added_between_runs(infos: list[RunInfo], key: str) -> bool:
    """A param some runs lack that has one value in every run that has it: added to the config, not swept."""
    present = [v for i in infos if (v := i.params.get(key)) is not None]
    return 0 < len(present) < len(infos) and len(set(present)) == 1


def _automatic(infos: list[RunInfo]) -> tuple[list[str], list[str]]:
    """(the grouping keys, the params that would have split the runs only by being absent from some of them)."""
    keys, added = list(DEFAULT_KEYS), []
    choices = sorted({k for i in infos for k in i.tags if k.startswith("choice.")} - set(keys))
    params = sorted({k for i in infos for k in i.params}, key=lambda k: (k.count("."), k))
    for key in [c for c in choices if not c.startswith(IGNORED_CHOICES)] + params:
        if not _per_run(key, infos) and _refines(infos, keys, key):
            (added if added_between_runs(infos, key) else keys).append(key)
    return keys, added


def automatic_keys(infos: list[RunInfo]) -> list[str]:
    return _automatic(infos)[0]


def added_key_notes(infos: list[RunInfo], added: list[str]) -> list[str]:
    notes = []
    for key in added:
        lacking = [i for i in infos if key not in i.params]
        value = next(i.params[key] for i in infos if key in i.params)
        notes.append(f"{md_code(key)} is {md_code(value)} in every run that has it and absent from "
                     f"{len(lacking)} run(s) ({_names(lacking)}): a key added to the config between runs, "
                     "not a sweep, so it does not split them")
    return notes


def explicit_keys(infos: list[RunInfo], names: list[str]) -> list[str]:
    """`--group-by` names as given, or `choice.<name>` when only that exists; a name no run has is an error."""
    keys, absent = [], []
    for name in names:
        if any(lookup(i, name) is not None for i in infos):
            keys.append(name)
        elif any(lookup(i, f"choice.{name}") is not None for i in infos):
            keys.append(f"choice.{name}")
        else:
            absent.append(name)
    if absent:
        choices = sorted({k for i in infos for k in i.tags if k.startswith("choice.")})
        params = sorted({k for i in infos for k in i.params})
        raise AnalyzeError(f"--group-by key(s) {', '.join(absent)} not found in any of the {len(infos)} runs; "
                           f"available: tags {', '.join(choices) or '(no choice.* tags)'} or one of "
                           f"{len(params)} params (e.g. {', '.join(params[:6]) or 'none'})")
    return keys


def _not_applicable(infos: list[RunInfo], keys: list[str], cell_of: dict) -> set[tuple]:
    """(cell, key): an automatic param key that no run of the cell of choices has."""
    out = set()
    for key in (k for k in keys if not k.startswith("choice.")):
        for cell in set(cell_of.values()):
            if all(lookup(i, key) is None for i in infos if cell_of[i.run_id] == cell):
                out.add((cell, key))
    return out


def reads_planner(info: RunInfo) -> bool:
    """False only when the run says its algorithm never reads the planning mask (GRPO); unknown counts as read."""
    return info.params.get(READS_PLANNER, "").strip().lower() not in ("false", "0")


def unused_planner_keys(infos: list[RunInfo], keys: list[str]) -> set[tuple[str, str]]:
    """(run id, key): a planner key of a run that does not read the planner, unless it differs between such runs."""
    blind = [i for i in infos if not reads_planner(i)]
    out = set()
    for key in (k for k in keys if k == "choice.planner" or k.startswith("planner.")):
        if len({lookup(i, key) for i in blind}) == 1:
            out |= {(i.run_id, key) for i in blind}
    return out


def make_grouping(runs: list[TrainRun], group_by: list[str] | None) -> Grouping:
    infos = [r.info for r in runs]
    keys, added = (explicit_keys(infos, group_by), []) if group_by else _automatic(infos)
    choice_keys = [k for k in keys if k.startswith("choice.")]
    cell_of = {i.run_id: tuple(lookup(i, k) for k in choice_keys) for i in infos}
    not_applicable = set() if group_by else _not_applicable(infos, keys, cell_of)
    unused = unused_planner_keys(infos, keys)

    by_label: dict[str, Group] = {}
    for run in runs:
        rid = run.info.run_id
        values = {k: lookup(run.info, k) for k in keys
                  if (cell_of[rid], k) not in not_applicable and (rid, k) not in unused}
        label = " ".join(f"{short_name(k)}={MISSING if v is None else v}" for k, v in values.items()) or "all runs"
        by_label.setdefault(label, Group(label, values, [])).runs.append(run)
    groups = sorted(by_label.values(), key=lambda g: g.label)
    notes = _notes(runs, keys, groups, lambda i, k: (cell_of[i.run_id], k) in not_applicable, unused)
    notes += added_key_notes(infos, added)
    return Grouping(keys, "--group-by" if group_by else "automatic", groups, notes)


def _names(infos: list[RunInfo]) -> str:
    return ", ".join(f"{md_text(i.name)} ({i.run_id})" for i in infos)


def _notes(runs, keys, groups, not_applicable, unused) -> list[str]:
    """The notes, as Markdown: what came from the runs is escaped here (report.md shows them as they are).
    `not_applicable(info, key)`: the key is not in the config of the run's cell; `unused`: (run id, key) pairs."""
    notes = []
    for key in keys:
        lacking = [r.info for r in runs if lookup(r.info, key) is None and not not_applicable(r.info, key)
                   and (r.info.run_id, key) not in unused]
        if lacking:
            notes.append(f"{len(lacking)} run(s) have no {md_code(key)} and are grouped under "
                         f"{md_code(f'{short_name(key)}={MISSING}')}: {_names(lacking)}")
    for key in keys:
        absent = [g for g in groups if key not in g.values]
        blind = [md_code(g.label) for g in absent if (g.runs[0].info.run_id, key) in unused]
        if blind:
            notes.append(f"{md_code(key)} is left out of the label of group(s) {', '.join(blind)}: their algorithm "
                         f"does not read the planning mask ({md_code(READS_PLANNER + ' false')}), so the planner did "
                         "not change their training")
        other = [md_code(g.label) for g in absent if (g.runs[0].info.run_id, key) not in unused]
        if other:
            notes.append(f"{md_code(key)} is not in the config of group(s) {', '.join(other)}: not applicable to "
                         "their Hydra choices, so left out of their labels")
    for group in groups:
        counted = [r for r in group.runs if not r.unfinished] or group.runs  # the runs statistics are drawn from
        seeds = [r.info.seed for r in counted]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            notes.append(f"{md_code(group.label)}: several runs share seed(s) {md_text(', '.join(repeated))}; each "
                         "run counts as one sample, so n overstates the number of independent seeds")
    return notes
