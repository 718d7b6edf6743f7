"""Batched generation with a KV cache: see sampler.py (calls, passes, stop strings), programs.py (the compiled
programs), policy.py (the sampling policy and what the reported log-probabilities mean)."""

from cmat_jax.sampling.policy import PolicyMode, PolicyValues, SamplingPolicy, policy_log_probs
from cmat_jax.sampling.sampler import GenerateResult, Sampler, SamplerConfig, greedy_generate

__all__ = [
    "GenerateResult", "PolicyMode", "PolicyValues", "Sampler", "SamplerConfig", "SamplingPolicy", "greedy_generate",
    "policy_log_probs",
]
