"""The sampling policy: what a caller asks the sampler for, and how raw logits become the distribution a token
is drawn from.

`SamplingPolicy` is the one description of a policy. It travels unchanged from whoever sets it (a rollout
config, an evaluation, a test) through the reply sources (agents/replies.py) to `Sampler` / `SlotSampler`,
and the RL objective (rl/objectives.py) holds the same value to recompute the sampler's log-probabilities.

The policy of a step is the softmax of `logits / temperature`, restricted to the top-k tokens and then to the
smallest set of the remaining tokens whose renormalised mass reaches top-p, and renormalised over what is
left. Tokens tied with the last one kept are kept too. Temperature 0 means greedy decoding; its "policy"
log-probabilities are the plain log-softmax of the logits.

Compiled code sees a policy as `PolicyValues`: the numbers are traced (a new temperature compiles nothing),
the `PolicyMode` (greedy, top-k on, top-p on) is static, part of the pytree's structure.
`policy_log_probs` is public so that other code (tests, the RL update) can recompute exactly the
log-probabilities the sampler reports.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class PolicyMode(NamedTuple):
    """The static (compile-time) shape of the policy; the values stay traced."""

    greedy: bool
    use_top_k: bool
    use_top_p: bool


@dataclasses.dataclass(frozen=True)
class SamplingPolicy:
    """How to sample one reply.

    max_new_tokens: the most ids a reply may have (the RL objective's log-probs do not read it).
    temperature: 0 = greedy (argmax).
    top_k: keep the k most likely tokens; None/0 = off.
    top_p: keep the smallest set of tokens whose mass reaches top_p; None/1.0 = off.
    stop_strings: a reply ends with the token whose text completes one (the sampler then needs a tokenizer).
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    stop_strings: Sequence[str] = ()

    def __post_init__(self):
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {n!r}")
        t = self.temperature
        if not isinstance(t, (int, float)) or t != t or t < 0:
            raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {t!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 0):
            raise ValueError(f"top_k must be a non-negative int or None (0/None = off), got {self.top_k!r}")
        if self.top_p is not None and (not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1] or None (1.0/None = off), got {self.top_p!r}")
        object.__setattr__(self, "max_new_tokens", int(n))
        object.__setattr__(self, "stop_strings", _checked_stop_strings(self.stop_strings))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def mode(self) -> PolicyMode:
        use_top_k = not self.greedy and bool(self.top_k)
        use_top_p = not self.greedy and self.top_p is not None and self.top_p < 1.0
        return PolicyMode(self.greedy, use_top_k, use_top_p)

    def values(self) -> "PolicyValues":
        """The policy as compiled code takes it: traced numbers, static mode."""
        return PolicyValues(
            mode=self.mode,
            temperature=jnp.asarray(self.temperature if self.temperature > 0 else 1.0, jnp.float32),
            top_k=jnp.asarray(self.top_k or 0, jnp.int32),
            top_p=jnp.asarray(1.0 if self.top_p is None else self.top_p, jnp.float32),
        )


def _checked_stop_strings(stop_strings) -> tuple[str, ...]:
    if isinstance(stop_strings, str):
        raise TypeError(
            f"stop_strings must be a list of strings, got the single string {stop_strings!r}; wrap it in a list"
        )
    out = tuple(stop_strings)
    for s in out:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop_strings must be non-empty strings, got {s!r} in {list(out)!r}")
    return out


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PolicyValues:
    """A SamplingPolicy inside compiled code: `mode` is static (pytree structure), the rest traced scalars."""

    mode: PolicyMode = dataclasses.field(metadata=dict(static=True))
    temperature: jax.Array  # float32; 1.0 when greedy (unused)
    top_k: jax.Array  # int32; 0 = off
    top_p: jax.Array  # float32; 1.0 = off


def policy_log_probs(logits_bv: jax.Array, values: PolicyValues) -> jax.Array:
    """Log-probabilities [b, v] of the policy (-inf outside its support), float32."""
    mode = values.mode
    logits_bv = logits_bv.astype(jnp.float32)
    if mode.greedy:
        return jax.nn.log_softmax(logits_bv, axis=-1)
    scaled_bv = logits_bv / values.temperature
    if mode.use_top_k or mode.use_top_p:
        vocab = scaled_bv.shape[-1]
        sorted_bv = -jnp.sort(-scaled_bv, axis=-1)  # descending
        if mode.use_top_k:
            k = jnp.clip(values.top_k, 1, vocab)
            kth_b1 = jax.lax.dynamic_slice_in_dim(sorted_bv, k - 1, 1, axis=-1)
            scaled_bv = jnp.where(scaled_bv >= kth_b1, scaled_bv, -jnp.inf)
            sorted_bv = jnp.where(jnp.arange(vocab) < k, sorted_bv, -jnp.inf)
        if mode.use_top_p:
            probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
            mass_before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv
            last_kept_b1 = jnp.sum(mass_before_bv < values.top_p, axis=-1, keepdims=True) - 1
            pth_b1 = jnp.take_along_axis(sorted_bv, jnp.maximum(last_kept_b1, 0), axis=-1)
            scaled_bv = jnp.where(scaled_bv >= pth_b1, scaled_bv, -jnp.inf)
    return jax.nn.log_softmax(scaled_bv, axis=-1)


def draw(log_probs_bv: jax.Array, logits_bv: jax.Array, keys_b: jax.Array, mode: PolicyMode):
    """(token_b, log_prob_b): argmax when greedy, else one categorical draw per row key."""
    if mode.greedy:
        token_b = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
    else:
        token_b = jax.vmap(jax.random.categorical)(keys_b, log_probs_bv).astype(jnp.int32)
    log_prob_b = jnp.take_along_axis(log_probs_bv, token_b[:, None], axis=-1)[:, 0]
    return token_b, log_prob_b
