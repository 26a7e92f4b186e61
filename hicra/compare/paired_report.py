"""The "Paired by seed" section of report.md and its lines on stdout, from summary.json's `paired` part
(compare/paired.py)."""

from __future__ import annotations

from hicra.tracking.html_report import md_code, md_text


def _num(value: float | None, sign: bool = False) -> str:
    return "n/a" if value is None else f"{value:+.3f}" if sign else f"{value:.3f}"


def _ci(arm: dict) -> str:
    return "n/a" if arm["ci_low"] is None else f"[{arm['ci_low']:+.3f}, {arm['ci_high']:+.3f}]"


def _unpaired(arm: dict, text=str) -> str:
    parts = [f"{who} only: {', '.join(text(s) for s in seeds)}"
             for who, seeds in (("group", arm["unpaired"]["group_only"]),
                                ("baseline", arm["unpaired"]["baseline_only"])) if seeds]
    return "; ".join(parts) or "none"


def _seeds_needed(arm: dict) -> str:
    return "n/a" if arm["seeds_needed"] is None else str(arm["seeds_needed"])  # < 2 pairs, or no spread


def _headers(paired: dict) -> list[str]:
    headers = ["group", "pairs", "mean difference", "95% CI (paired t)", "SD of differences",
               f"detectable difference (power {paired['power']:g})"]
    if paired["effect"] is not None:
        headers.append(f"seeds for a difference of {paired['effect']:g}")
    return [*headers, "unpaired seeds", "verdict"]


def _row(arm: dict, effect: float | None) -> list[str]:
    row = [md_text(arm["group"]), str(arm["n_pairs"]), _num(arm["mean_diff"], sign=True), _ci(arm),
           _num(arm["sd_diff"]), _num(arm["detectable_difference"])]
    if effect is not None:
        row.append(_seeds_needed(arm))
    return [*row, _unpaired(arm, md_text), md_text(arm["verdict"])]


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(headers)} |", "|" + "---|" * len(headers), *[f"| {' | '.join(r)} |" for r in rows]]


def _pairs_lines(arm: dict) -> list[str]:
    rows = [[md_text(p["seed"]), f"{p['value']:.3f}", f"{p['baseline_value']:.3f}", f"{p['diff']:+.3f}"]
            for p in arm["pairs"]]
    lines = [f"### {md_text(arm['group'])} minus baseline", ""]
    lines += _table(["seed", "group", "baseline", "difference"], rows) if rows else ["No pair."]
    left = [(side, r) for side in ("group", "baseline") for r in arm["left_out"][side]]
    if left or arm["overflowed_seeds"]:
        lines += ["", "Left out of the pairing:", ""]
        lines += [f"- {side}: {md_text(r['name'])} ({md_code(r['run_id'])}, seed "
                  f"{md_text('?' if r['seed'] is None else r['seed'])}): {md_text(r['reason'])}" for side, r in left]
        lines += [f"- seed {md_text(seed)}: its difference is past float range" for seed in arm["overflowed_seeds"]]
    return [*lines, ""]


def markdown_section(summary: dict) -> list[str]:
    """`## Paired by seed`: one row per arm, then each arm's pairs and the runs left out of them."""
    paired = summary["paired"]
    effect = paired["effect"]
    lines = ["## Paired by seed", "",
             (f"Baseline: {md_code(paired['baseline'])}. For each seed that both arms ran, the arm's "
              f"{md_text(paired['quantity'])} minus the baseline's; the mean of these differences with a 95% "
              "t-interval (n - 1 degrees of freedom, n = pairs) and their SD. Seeds run by one arm only are listed, "
              "not paired; runs left out (unfinished, no seed, no final value, a seed repeated in its arm) are named "
              "below. Detectable difference: the smallest true mean difference that a two-sided paired t-test at "
              f"alpha {paired['alpha']:g} detects with power {paired['power']:g}, given this many pairs and this SD of "
              f"differences ({paired['power_method']})."
              + ("" if effect is None else
                 f" Seeds for a difference of {effect:g}: the number of pairs (seeds per arm) the same test needs "
                 f"to detect it with power {paired['power']:g} at this SD.")), "",
             *_table(_headers(paired), [_row(arm, effect) for arm in paired["arms"]]), ""]
    for arm in paired["arms"]:
        lines += _pairs_lines(arm)
    return lines


def stdout_block(summary: dict) -> str:
    paired = summary["paired"]
    lines = [(f"Paired by seed vs baseline `{paired['baseline']}` ({paired['quantity']}, 95% t-interval over the "
              "per-seed differences):")]
    for arm in paired["arms"]:
        extra = (f"SD {_num(arm['sd_diff'])}, detectable {_num(arm['detectable_difference'])} "
                 f"(power {paired['power']:g})")
        if paired["effect"] is not None:
            extra += f", seeds for {paired['effect']:g}: {_seeds_needed(arm)}"
        lines.append(f"- {arm['group']}: {arm['verdict']}; {extra}; unpaired seeds: {_unpaired(arm)}")
    return "\n".join(lines)
