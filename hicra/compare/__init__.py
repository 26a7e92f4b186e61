"""`hicra-compare`: the arms of a study side by side: mean +- 95% CI over seeds, differences vs a baseline,
learning curves with CI bands, eval scores of linked hicra-eval runs; Markdown + PNG + JSON, logged to MLflow.

collect.py (which runs, finished or not, linked eval runs) -> grouping.py (arms from Hydra choices and swept keys)
-> summary.py (the numbers, via hicra.metrics.stats) -> plots.py / report.py -> cli.py (files, stdout, MLflow).
"""
