"""Batched generation with a KV cache: see sampler.py (programs, stop strings)
and policy.py (what the reported log-probabilities mean)."""

from cmat_jax.sampling.policy import PolicyMode, SamplingParams, policy_log_probs
from cmat_jax.sampling.sampler import GenerateResult, Sampler, SamplerConfig, greedy_generate

__all__ = [
    "GenerateResult", "PolicyMode", "Sampler", "SamplerConfig", "SamplingParams", "greedy_generate",
    "policy_log_probs",
]
