"""Token-level policy-gradient objectives over packed RL rows (rl/rows.py), as a training-step loss.

Objectives (OBJECTIVES, chosen by rl.objective), per trained token with
advantage A, current log-prob log π and the sampler's recorded log π_old:

  reinforce  -A · log π
  ppo        -min(ρ A, clip(ρ, 1 - ε, 1 + ε_high) A),  ρ = exp(log π - log π_old)

plus, with kl_coef > 0, kl_coef · k3, the k3 estimator of KL(π || π_ref):
exp(log π_ref - log π) - (log π_ref - log π) - 1. The reference π_ref is the
same model with its adapters off (`use_lora=False`): the frozen base, so no
second copy of the weights exists. A model without LoRA adapters has no
reference distinct from the policy; kl_coef > 0 is then refused.

log π is the log-prob under the policy the sampler drew from (its temperature,
top-k and top-p; sampling/policy.py), so with unchanged weights it equals the
recorded log-prob and ρ = 1. The KL term compares the two models at that
temperature without top-k/top-p cuts (a cut could exclude the sampled token
from the reference's support and make the estimate infinite). Entropy is that
of the sampling policy at each trained position.

Masking: only tokens with loss_mask 1 count. Masked positions are replaced by
0 with `jnp.where` before any exp or log, so garbage there (padding, -inf
log-probs, NaN) contributes exactly nothing, to the value or the gradient.
Samples of a group without signal (advantages.py) are removed from the
objective *and* from the KL term by giving their tokens loss_mask 0; nothing
else is needed.

Aggregation matches SFT: the loss returns sums and the number of trained
tokens; the step (training/step.py) divides by the count over the whole batch.
Reported token means: kl (when computed), entropy, clip_frac (the fraction of
tokens whose clipped term is the smaller, i.e. gets no gradient). Logits are
computed in sequence chunks (training/loss.py's chunking), never as a full
[b, t, v] float32 tensor.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from cmat_jax.models.lora import LoRA
from cmat_jax.sampling.policy import SamplingPolicy, policy_log_probs
from cmat_jax.sharding import constrain
from cmat_jax.training.loss import chunked_map, chunked_sums
from cmat_jax.training.step import LossFn


def reinforce_terms(logp_bc, old_logp_bc, adv_bc, cfg: "ObjectiveConfig"):
    """(per-token loss, clipped flag): -A log π, never clipped."""
    del old_logp_bc, cfg
    return -adv_bc * logp_bc, jnp.zeros(logp_bc.shape, bool)


def ppo_terms(logp_bc, old_logp_bc, adv_bc, cfg: "ObjectiveConfig"):
    """(per-token loss, clipped flag) of the clipped surrogate."""
    ratio_bc = jnp.exp(logp_bc - old_logp_bc)
    unclipped_bc = ratio_bc * adv_bc
    clipped_bc = jnp.clip(ratio_bc, 1.0 - cfg.clip_eps, 1.0 + cfg.clip_high) * adv_bc
    return -jnp.minimum(unclipped_bc, clipped_bc), clipped_bc < unclipped_bc


OBJECTIVES = {"reinforce": reinforce_terms, "ppo": ppo_terms}


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """rl.objective and its settings; `sampling` is the rollout's SamplingPolicy (its log-probs are recomputed)."""

    name: str = "ppo"
    clip_eps: float = 0.2  # ppo: lower (and default upper) clip range
    clip_eps_high: float = 0.0  # ppo: upper clip range; 0 = clip_eps
    kl_coef: float = 0.0  # weight of the k3 KL to the frozen base; 0 = no penalty
    measure_kl: bool = False  # report kl even when kl_coef is 0 (one more forward pass)
    sampling: SamplingPolicy = SamplingPolicy()

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise ValueError(f"rl.objective is {self.name!r}; choose from {', '.join(OBJECTIVES)}")
        if not 0.0 < self.clip_eps < 1.0:
            raise ValueError(f"rl.clip_eps must be in (0, 1), found {self.clip_eps}")
        if not 0.0 <= self.clip_eps_high or not math.isfinite(self.clip_eps_high):
            raise ValueError(f"rl.clip_eps_high must be >= 0 (0: same as rl.clip_eps), found {self.clip_eps_high}")
        if not 0.0 <= self.kl_coef or not math.isfinite(self.kl_coef):
            raise ValueError(f"rl.kl_coef must be a finite value >= 0, found {self.kl_coef}")
        if not isinstance(self.sampling, SamplingPolicy):
            raise TypeError(f"ObjectiveConfig.sampling must be the rollout's SamplingPolicy, found "
                            f"{type(self.sampling).__name__}")

    @property
    def clip_high(self) -> float:
        return self.clip_eps_high or self.clip_eps

    @property
    def uses_reference(self) -> bool:
        return self.kl_coef > 0 or self.measure_kl


def check_reference(cfg: ObjectiveConfig, lora_state) -> None:
    """Refuses a KL term when the model has no LoRA adapters: "adapters off" would be the policy itself."""
    if cfg.uses_reference and not jax.tree.leaves(lora_state):
        what = f"rl.kl_coef is {cfg.kl_coef}" if cfg.kl_coef > 0 else "the KL is to be measured"
        raise ValueError(f"{what}, but the model has no LoRA adapters, so the reference (the model with adapters "
                         "off) is the policy itself; give the model LoRA adapters or set rl.kl_coef=0")


def _logits(h_bcd, kernel_dv):
    logits_bcv = jnp.einsum("bcd,dv->bcv", h_bcd, kernel_dv.astype(h_bcd.dtype), preferred_element_type=jnp.float32)
    return constrain(logits_bcv, ("batch", "seq", "act_vocab"))


def _policy_log_probs(logits_bcv, cfg: ObjectiveConfig):
    """The sampling policy's log-probabilities [b, c, v] (-inf outside its support)."""
    return policy_log_probs(logits_bcv, cfg.sampling.values())


def _at(log_probs_bcv, targets_bc):
    return jnp.take_along_axis(log_probs_bcv, targets_bc[..., None], axis=-1)[..., 0]


def _chunk_sums(xs: dict, kernel_dv, cfg: ObjectiveConfig) -> dict:
    """Sums over one chunk's trained positions: loss, clip_frac, entropy (and kl)."""
    mask_bc = xs["mask"]
    logits_bcv = _logits(xs["h"], kernel_dv)
    log_probs_bcv = _policy_log_probs(logits_bcv, cfg)
    # where before any exp: masked positions may hold -inf log-probs or garbage inputs.
    policy_logp_bc = _at(log_probs_bcv, xs["targets"])
    logp_bc = jnp.where(mask_bc, policy_logp_bc, 0.0)
    old_bc = jnp.where(mask_bc, xs["old_logprobs"], 0.0)
    adv_bc = jnp.where(mask_bc, xs["advantages"], 0.0)
    loss_bc, clipped_bc = OBJECTIVES[cfg.name](logp_bc, old_bc, adv_bc, cfg)
    lp_bcv = jax.lax.stop_gradient(log_probs_bcv)
    p_bcv = jnp.exp(lp_bcv)
    entropy_bc = -jnp.sum(jnp.where(p_bcv > 0, p_bcv * lp_bcv, 0.0), axis=-1)
    sums = {
        "loss": jnp.sum(jnp.where(mask_bc, loss_bc, 0.0)),
        "clip_frac": jnp.sum(mask_bc & clipped_bc, dtype=jnp.float32),
        "entropy": jnp.sum(jnp.where(mask_bc, entropy_bc, 0.0)),
    }
    if cfg.uses_reference:
        values = cfg.sampling.values()
        temperature, mode = values.temperature, values.mode
        pol_bc = policy_logp_bc
        if mode.use_top_k or mode.use_top_p:
            pol_bc = _at(jax.nn.log_softmax(logits_bcv / temperature, axis=-1), xs["targets"])
        ref_bc = _at(jax.nn.log_softmax(_logits(xs["h_ref"], kernel_dv) / temperature, axis=-1), xs["targets"])
        delta_bc = jnp.where(mask_bc, ref_bc - pol_bc, 0.0)
        kl_sum = jnp.sum(jnp.where(mask_bc, jnp.exp(delta_bc) - delta_bc - 1.0, 0.0))
        sums["kl"] = kl_sum
        if cfg.kl_coef > 0:
            sums["loss"] = sums["loss"] + cfg.kl_coef * kl_sum
    return sums


def objective_loss(cfg: ObjectiveConfig) -> LossFn:
    """The training-step loss (training/step.py LossFn) of `cfg` over RL batches (rows.RL_BATCH_KEYS)."""

    def loss_fn(model, mb: dict, chunk_size: Optional[int], dropout_key):
        check_reference(cfg, nnx.state(model, LoRA))
        args = (mb["tokens"], mb["positions"], mb["segment_ids"])
        h_btd, _ = model.hidden_states(*args, use_lora=True, dropout_key=dropout_key)
        mask_bt = mb["loss_mask"].astype(bool)
        xs = {"h": h_btd, "targets": mb["targets"].astype(jnp.int32), "mask": mask_bt,
              "old_logprobs": mb["old_logprobs"].astype(jnp.float32),
              "advantages": mb["advantages"].astype(jnp.float32)}
        if cfg.uses_reference:
            h_ref_btd, _ = model.hidden_states(*args, use_lora=False)
            xs["h_ref"] = jax.lax.stop_gradient(h_ref_btd)
        kernel_dv = model.output_kernel()
        sums = chunked_sums(lambda c: _chunk_sums(c, kernel_dv, cfg), xs, chunk_size)
        loss = sums.pop("loss")
        return loss, jnp.sum(mask_bt, dtype=jnp.float32), sums

    return loss_fn


def token_logprobs(model, batch: dict, cfg: ObjectiveConfig = ObjectiveConfig(), *, chunk_size: Optional[int] = None,
                   use_lora: bool = True) -> jax.Array:
    """log π(target) [b, t] under the sampling policy of `cfg`, as the objective computes it (any position)."""
    h_btd, _ = model.hidden_states(batch["tokens"], batch["positions"], batch["segment_ids"], use_lora=use_lora)
    kernel_dv = model.output_kernel()

    def one_chunk(xs):
        h_bcd, targets_bc = xs
        return _at(_policy_log_probs(_logits(h_bcd, kernel_dv), cfg), targets_bc)

    return chunked_map(one_chunk, (h_btd, jnp.asarray(batch["targets"], jnp.int32)), chunk_size)
