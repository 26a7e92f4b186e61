"""`hicra-compare`: the arms of a study side by side: mean +- 95% CI over seeds, differences vs a baseline (Welch, or
paired by seed with `--paired`), learning curves with CI bands, eval scores of linked hicra-eval runs; Markdown + PNG
+ JSON, logged to MLflow.

collect.py (which runs, finished or not, linked eval runs) -> grouping.py (arms from Hydra choices and swept keys)
-> summary.py (the numbers, via hicra.metrics.stats; paired.py: per-seed differences, via hicra.metrics.paired)
-> plots.py / report.py (paired_report.py: its section) -> cli.py (files, stdout, MLflow).
"""
