"""hicra: reinforcement learning of LLM reasoning with Hierarchy-Aware Credit Assignment."""

__version__ = "0.1.0"
