"""What a run measures rather than optimises, as pure functions on tensors and lists (no Lightning, Hydra, MLflow):

    diagnostics   the paper's hierarchy diagnostics: semantic entropy, planning vs execution entropy / NLL, ...
    pass_at_k     unbiased pass@k and its mean over problems
    stats         seed statistics of hicra-compare: mean with a Student-t CI, Welch difference CI
    paired        paired-by-seed differences: pairing, power of the paired t-test (noncentral t), detectable difference,
                  seeds needed

May use `hicra.algorithms` helpers (masked sums); `hicra.algorithms` never imports this package.
"""
