"""Sampling G responses per prompt: `hf` (transformers generate, the default; RolloutBatch and the log-prob pass
shared with training) and `vllm` (optional, needs the vllm package)."""
