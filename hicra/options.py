"""The allowed values of every setting that names one of a few modes: one home for each list.

The schema (hicra/config/schema.py) quotes them in its one-line errors before anything heavy loads, and the code that
acts on a value checks it against the same tuple. Plain tuples, no imports: the command line reads this module
before torch loads, and the maths (hicra/algorithms/, one floor below hicra/config/) can import it without an
upward arrow.
"""

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")  # algorithms.losses.aggregate
KL_ESTIMATORS = ("k1", "k2", "k3")  # algorithms.losses.kl_penalty
ADVANTAGE_SCALES = ("group", "batch", "none")  # algorithms.advantages
REINFORCE_PP_BASELINES = ("group", "none")  # algorithms.advantages.reinforce_pp_advantages
SAMPLER_CORRECTIONS = ("none", "token_truncate", "sequence_mask")  # algorithms.sampler_correction
LR_DECAYS = ("constant", "linear", "cosine")  # algorithms.schedules
PLACEBO_MODES = ("spans", "tokens")  # planning.random_placebo: random spans like gram occurrences, or tokens
MODEL_DTYPES = ("float32", "bfloat16", "float16")  # models.loaders: the torch dtype of the same name
# rollout.hf, besides null (transformers' dynamic cache): "static" is a fixed-size cache whose decoding step
# transformers compiles (torch.compile, CUDA graphs on GPU)
CACHE_IMPLEMENTATIONS = ("static",)
# ckpt_path keywords besides a path (training.find_checkpoint): the newest checkpoint of the named run folder or under
# outputs/, and the run folder's own checkpoint if any, else start (SLURM requeue)
CKPT_KEYWORDS = ("last", "auto")
