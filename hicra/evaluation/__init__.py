"""`hicra-eval`: score a trained checkpoint (or a base model) on a benchmark under an evaluation protocol.

    sources.py     checkpoint=... -> what to evaluate: a model folder, a training run, every run of an experiment
    benchmarks.py  benchmark=...  -> the questions and the scorer (a `hicra.tasks.Task`, as in training)
    protocols.py   protocol=...   -> how many samples, at which temperature, which pass@k
    generation.py  batched sampling with a progress bar -> one record per sample
    metrics.py     records -> eval/* numbers (pass@k maths in hicra.metrics.pass_at_k)
    tracking.py    one MLflow eval run per (checkpoint, benchmark, protocol), linked to its training run by tags
    report.py      the printed table, eval_results.md / .json
    evaluate.py    the loop over checkpoints; cli.py the Hydra entry point
"""
