"""Completion samples as MLflow artifacts: an HTML page (planning tokens highlighted) and the same rows as JSON
(tokens, planning flags, token advantages) for later analysis; plus the corpus of correct completions."""

from __future__ import annotations

import html
import json

import pytorch_lightning as pl

from hicra.tracking.artifacts import cap_text, cut_marker, log_artifacts
from hicra.training.distributed import gather_objects
from hicra.training.step_output import step_output

# Per-field caps of the completion samples, so that one step cannot log megabytes (a 10 MB question once made a
# step's HTML and JSON 160 MB). Neither touches a normal run: a 2,048-token prompt (the paper recipes' budget) is
# ~8k characters and a paper-length 8k-token reply ~30k.
MAX_PROMPT_CHARS = 8_000
MAX_RESPONSE_CHARS = 32_000

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:64em}
.g{border-top:2px solid #999;margin-top:1.6em;padding-top:.4em}
.c{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;margin:.8em 0}
.resp{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.9em;line-height:1.5}
.plan{background:#ffd54f;border-radius:3px}
.meta{color:#555;font-size:.85em}.ok{color:#2e7d32}.bad{color:#c62828}.cut{color:#c62828;font-weight:bold}
code{background:#f3f3f3;padding:0 3px}
"""


def render_completions(step: int, rows: list[dict], title: str = "") -> str:
    """rows: {"prompt", "pieces": [(token_text, is_planning)], "reward", "advantage"} per completion, grouped
    prompt by prompt, plus (when known) "gold", "extracted", "rule" (how `Task.read_answer` read it) and
    "truncated". Each prompt is shown once, above its group, with the group's rewards and advantages."""
    heading = f"{title}: completions at step {step}" if title else f"Completions at step {step}"
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(heading)}</title><style>{STYLE}</style>",
             f"<h2>{html.escape(heading)}</h2>",
             ("<p class='meta'>Sampled at this step (the policy had had this many updates). Highlighted: planning "
              "tokens (the detector's mask). Reward 1 = correct; the answer read and how it was read decide it: "
              "<code>boxed</code> = the last \\boxed{}, <code>last number</code> = the fallback for a reply without "
              "one; <code>no answer</code>, <code>too long</code> and <code>non-ASCII digits</code> score 0 unseen "
              "by the verifier.</p>")]
    groups: dict[str, list[tuple[int, dict]]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row["prompt"], []).append((i, row))
    for prompt, members in groups.items():
        gold = members[0][1].get("gold")
        summary = ", ".join(f"#{i} {row['reward']:.2f} / {row['advantage']:+.2f}" for i, row in members)
        gold_html = f"gold answer <code>{html.escape(str(gold))}</code> &middot; " if gold is not None else ""
        parts.append(f"<div class='g'><details><summary class='meta'>prompt</summary><pre>{html.escape(prompt)}"
                     f"</pre></details><div class='meta'>{gold_html}reward / advantage: {summary}</div></div>")
        for i, row in members:
            parts.append(_card(i, row))
    return "\n".join(parts)


def _card(i: int, row: dict) -> str:
    verdict = "ok" if row["reward"] >= 1.0 else "bad"
    tokens = "".join(f"<span class='plan'>{html.escape(t)}</span>" if plan else html.escape(t)
                     for t, plan in row["pieces"])
    read = (f" &middot; answer read <code>{html.escape(str(row['extracted']))}</code> ({html.escape(row['rule'])})"
            if row.get("extracted") is not None else f" &middot; {html.escape(row['rule'])}" if "rule" in row else "")
    cut = " &middot; <span class='cut'>truncated at the token budget</span>" if row.get("truncated") else ""
    return (f"<div class='c'><div class='meta'>#{i} &middot; <span class='{verdict}'>reward {row['reward']:.2f}"
            f"</span> &middot; advantage {row['advantage']:+.3f}{read}{cut}</div>"
            f"<div class='resp'>{tokens}</div></div>")


def capped_response(pieces: list[tuple[str, bool]], token_advantages: list[float], limit: int):
    """(pieces, token_advantages) of a reply within about `limit` characters: whole if it fits, else its first and
    last tokens of up to `limit // 2` characters each around one `cut_marker` piece, whose advantage is None (the
    two lists stay aligned token for token)."""
    lengths = [len(text) for text, _ in pieces]
    if sum(lengths) <= limit:
        return pieces, token_advantages
    head, tail = _fitting(lengths, limit // 2), _fitting(lengths[::-1], limit // 2)
    rest = len(pieces) - tail
    marker = (cut_marker(sum(lengths[head:rest])), False)
    return pieces[:head] + [marker] + pieces[rest:], token_advantages[:head] + [None] + token_advantages[rest:]


def _fitting(lengths: list[int], budget: int) -> int:
    """How many of the leading items fit in `budget` characters together."""
    used = count = 0
    for length in lengths:
        if used + length > budget:
            break
        used, count = used + length, count + 1
    return count


class CompletionSampleLogger(pl.Callback):
    """Every `every_n_steps` steps and at the last step, write the first `num_samples` completions of the rollout as
    HTML (`title` names the run on the page) and JSON, and log both."""

    def __init__(self, every_n_steps: int, num_samples: int, out_dir, title: str = ""):
        self.every_n_steps, self.num_samples, self.out_dir, self.title = every_n_steps, num_samples, out_dir, title

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        out = step_output(outputs)
        max_steps = getattr(trainer, "max_steps", -1)
        last = max_steps is not None and max_steps > 0 and getattr(trainer, "global_step", 0) >= max_steps
        if out is None or self.every_n_steps <= 0 or (batch_idx % self.every_n_steps and not last):
            return
        rollout, tokenizer = out.rollout, pl_module.tokenizer
        group_size = pl_module.algorithm.group_size
        examples = (batch or {}).get("examples")
        read_answer = getattr(getattr(pl_module, "task", None), "read_answer", None)  # hicra's Task has it
        rows = []
        for i in range(min(self.num_samples, len(out.texts))):
            mask = rollout.response_mask[i].cpu()  # (T,) the response's own tokens
            ids = rollout.response_ids[i].cpu()[mask].tolist()
            plan = out.planning_mask[i][mask].tolist()
            pieces, token_adv = capped_response([(tokenizer.decode([t]), p) for t, p in zip(ids, plan)],
                                                out.token_advantages[i][mask].tolist(), MAX_RESPONSE_CHARS)
            row = {"prompt": cap_text(out.prompts[i // group_size], MAX_PROMPT_CHARS), "pieces": pieces,
                   "token_advantages": token_adv, "reward": float(out.rewards[i]),
                   "correct": float(out.correctness[i]) >= 1.0, "advantage": float(out.advantages[i]),
                   "truncated": bool(rollout.truncated[i])}
            if examples is not None and read_answer is not None:  # why this reply got this reward
                example = examples[i // group_size]
                extracted, rule = read_answer(out.texts[i], example)
                row |= {"gold": cap_text(str(example.answer), MAX_PROMPT_CHARS), "rule": rule,
                        "extracted": None if extracted is None else cap_text(extracted, MAX_PROMPT_CHARS)}
            rows.append(row)
        path = self.out_dir / f"completions_step{out.step:06d}.html"  # the step the rollout was sampled at
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_completions(out.step, rows, self.title), encoding="utf-8")
        as_json = path.with_suffix(".json")
        as_json.write_text(json.dumps({"step": out.step, "title": self.title, "rows": rows}), encoding="utf-8")
        log_artifacts(trainer.loggers, [path, as_json], "completions")


class CorrectCompletionsRecorder(pl.Callback):
    """Appends every correct completion (correctness 1, whatever the format term) to `corpus/correct_completions.jsonl`, logged at the end.

    This is the corpus of successful solutions that Strategic-Gram mining reads from a run. Under DDP/FSDP every rank
    samples its own share: rank 0 gathers them and is the only writer (appends from several nodes to one file on NFS
    are not atomic). Every rank takes part in the gather at every step, with nothing to send too, so none waits.
    """

    def __init__(self, out_dir):
        self.path = out_dir / "corpus" / "correct_completions.jsonl"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        out = step_output(outputs)
        lines = [] if out is None else [json.dumps({"step": out.step, "text": text})
                                        for text, score in zip(out.texts, out.correctness.tolist()) if score >= 1.0]
        per_rank = gather_objects(lines, trainer)  # a collective: before any rank returns
        lines = [line for rank_lines in per_rank for line in rank_lines]
        if not trainer.is_global_zero or not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as corpus:
            corpus.write("".join(line + "\n" for line in lines))

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and self.path.is_file():
            log_artifacts(trainer.loggers, [self.path], "corpus")
