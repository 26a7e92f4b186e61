"""`hicra-analyze [RUN_ID ...] [--experiment NAME] [--tracking-uri URI] [--out DIR] [--no-log]`."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from hicra.analyze.runs import AnalyzeError, first_line
from hicra.tracking.store import absolute_tracking_uri

PROG = "hicra-analyze"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URI = f"sqlite:///{PROJECT_ROOT / 'outputs' / 'mlflow.db'}"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise AnalyzeError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Figures, a token-advantage viewer and a report for hicra MLflow runs.")
    p.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs to analyse (default: every finished or "
                   "failed run of --experiment)")
    p.add_argument("--experiment", default="hicra", help="MLflow experiment name (default: hicra)")
    p.add_argument("--tracking-uri", default=DEFAULT_URI, help="MLflow tracking URI (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/analysis/<timestamp>)")
    p.add_argument("--no-log", action="store_true", help="do not log the folder back to the runs as artifacts")
    p.add_argument("--max-steps", type=int, default=30, help="completion steps per run in the token viewer "
                   "(latest first, default: 30)")
    return p


def analyze(args: argparse.Namespace) -> Path:
    from hicra.analyze.figures import render_figures
    from hicra.analyze.report import render_report
    from hicra.analyze.runs import fetch_completions, fetch_metrics, open_client, resolve_runs
    from hicra.analyze.token_viewer import render_token_viewer
    from hicra.tracking.html_report import markdown_page

    uri = absolute_tracking_uri(args.tracking_uri)
    client = open_client(uri)
    runs = resolve_runs(client, args.run_ids, args.experiment)
    print(f"{PROG}: {len(runs)} run(s): {', '.join(r.name for r in runs)}")
    out = args.out or PROJECT_ROOT / "outputs" / "analysis" / datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AnalyzeError(f"cannot create output folder {out}: {err.strerror}") from None

    frame = fetch_metrics(client, runs)
    figures = render_figures(frame, runs, out)
    print(f"{PROG}: {len(figures.written)} figure(s), {len(figures.skipped)} panel(s) skipped (metrics not logged)")

    samples = {r.run_id: fetch_completions(client, r.run_id, args.max_steps) for r in runs}
    viewer = None
    if any(samples.values()):
        viewer = "token_viewer.html"
        (out / viewer).write_text(render_token_viewer(runs, samples), encoding="utf-8")
    else:
        print(f"{PROG}: no completion samples logged; token viewer not written")
    report = render_report(runs, frame, figures, viewer, uri)
    (out / "report.md").write_text(report, encoding="utf-8")
    (out / "report.html").write_text(markdown_page(report, out, "hicra analysis"), encoding="utf-8")  # for MLflow
    print(f"{PROG}: wrote {out}/report.md (+ report.html, figures embedded)")

    if not args.no_log:
        for r in runs:
            try:
                client.log_artifacts(r.run_id, str(out), "analysis")
            except Exception as err:  # noqa: BLE001 - the local report is done; say why the upload failed
                raise AnalyzeError(f"report written to {out}, but logging it to run {r.run_id} failed: "
                                   f"{first_line(err)}") from None
        print(f"{PROG}: logged to MLflow as artifacts analysis/ of {len(runs)} run(s)")
    return out


def run_main(prog: str, body) -> int:
    """Run a CLI body: a user's mistake (AnalyzeError) is one line and exit 2, Ctrl-C exit 130, no traceback."""
    try:
        body()
    except AnalyzeError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    return 0


def main(argv: list[str] | None = None) -> int:
    def body():
        args = build_parser().parse_args(argv)
        if args.max_steps < 1:
            raise AnalyzeError(f"--max-steps={args.max_steps} is not allowed; use an integer >= 1")
        analyze(args)

    return run_main(PROG, body)


if __name__ == "__main__":
    main()
