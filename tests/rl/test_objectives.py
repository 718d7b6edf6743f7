"""RL objectives: hand values, a float64 numpy reference of the whole loss, masking, the ratio at
unchanged weights, the sampler's recorded log-probs recomputed, and refusals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cmat_jax.models.config import preset
from cmat_jax.models.lora import LoRA, LoRAConfig
from cmat_jax.models.transformer import Transformer
from cmat_jax.rl.objectives import (OBJECTIVES, ObjectiveConfig, check_reference, objective_loss, ppo_terms,
                                    reinforce_terms, token_logprobs)
from cmat_jax.rl.rows import Segment, pack_segments
from cmat_jax.sampling import Sampler, SamplerConfig, SamplingPolicy
from cmat_jax.training.step import loss_grads_and_metrics
from tests.training.common import relative_difference

ATOL = 1e-4  # float32 log-probabilities, as the sampler tests


def test_token_terms_match_hand_values():
    ratio = np.array([0.5, 1.1, 1.5, 0.5, 1.5], np.float32)
    adv = np.array([1.0, 1.0, 1.0, -1.0, -1.0], np.float32)
    old = np.full(5, -2.0, np.float32)
    logp = old + np.log(ratio)
    cfg = ObjectiveConfig("ppo", clip_eps=0.2, clip_eps_high=0.3)
    loss, clipped = ppo_terms(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), cfg)
    np.testing.assert_allclose(loss, [-0.5, -1.1, -1.3, 0.8, 1.5], rtol=1e-6)
    np.testing.assert_array_equal(clipped, [False, False, True, True, False])
    symmetric, _ = ppo_terms(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), ObjectiveConfig("ppo"))
    np.testing.assert_allclose(symmetric, [-0.5, -1.1, -1.2, 0.8, 1.5], rtol=1e-6)
    loss, clipped = reinforce_terms(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), cfg)
    np.testing.assert_allclose(loss, -adv * logp, rtol=1e-6)
    assert not np.asarray(clipped).any()


@pytest.fixture(scope="module")
def setup():
    model = Transformer(preset("tiny"), lora=LoRAConfig(rank=4), rngs=nnx.Rngs(0))
    graphdef, lora, frozen = nnx.split(model, LoRA, ...)
    # Non-zero adapters: the policy differs from the reference (adapters off).
    lora = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), lora)
    rng = np.random.default_rng(0)
    segments = []
    for _ in range(7):
        n = int(rng.integers(6, 20))
        mask = (rng.random(n) < 0.6).astype(np.int32)
        mask[0] = 0
        segments.append(Segment(ids=rng.integers(0, 1024, n), loss_mask=mask,
                                logprobs=np.where(mask > 0, -rng.random(n) * 8, 0.0),
                                advantages=rng.normal(size=n)))
    batches = pack_segments(segments, rows=4, seq_len=24)
    assert len(batches) == 1
    return graphdef, lora, frozen, batches[0]


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _reference(graphdef, lora, frozen, batch, cfg: ObjectiveConfig):
    """The objective in float64 numpy from full logits: (loss, {kl, entropy, clip_frac}) token means."""
    model = nnx.merge(graphdef, lora, frozen)
    args = (jnp.asarray(batch["tokens"]), jnp.asarray(batch["positions"]), jnp.asarray(batch["segment_ids"]))
    logits = np.asarray(model(*args)[0], np.float64) / cfg.sampling.temperature
    ref_logits = np.asarray(model(*args, use_lora=False)[0], np.float64) / cfg.sampling.temperature
    full = _log_softmax(logits)
    if cfg.sampling.top_k:
        kth = np.sort(logits, -1)[..., -cfg.sampling.top_k][..., None]
        logits = np.where(logits >= kth, logits, -np.inf)
    policy = _log_softmax(logits)
    take = lambda lp: np.take_along_axis(lp, batch["targets"][..., None], -1)[..., 0]  # noqa: E731
    m = batch["loss_mask"] > 0
    logp, old, adv = take(policy)[m], batch["old_logprobs"][m].astype(np.float64), batch["advantages"][m]
    if cfg.name == "ppo":
        ratio = np.exp(logp - old)
        unclipped, clipped = ratio * adv, np.clip(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_high) * adv
        per_token, clip = -np.minimum(unclipped, clipped), clipped < unclipped
    else:
        per_token, clip = -adv * logp, np.zeros(logp.shape, bool)
    delta = take(_log_softmax(ref_logits))[m] - take(full)[m]
    k3 = np.exp(delta) - delta - 1
    p = np.exp(policy)
    entropy = -np.sum(np.where(p > 0, p * np.where(p > 0, policy, 0), 0), -1)[m]
    loss = np.mean(per_token + cfg.kl_coef * k3)
    return loss, {"kl": np.mean(k3), "entropy": np.mean(entropy), "clip_frac": np.mean(clip)}


def _loss(graphdef, lora, frozen, batch, cfg, chunk_size=None):
    fn = jax.jit(lambda l, f, b: loss_grads_and_metrics(graphdef, f, l, b, chunk_size=chunk_size,
                                                        loss_fn=objective_loss(cfg)))
    return fn(lora, frozen, {k: jnp.asarray(v) for k, v in batch.items()})


@pytest.mark.parametrize("cfg", [
    ObjectiveConfig("ppo", clip_eps=0.2, clip_eps_high=0.28, kl_coef=0.1,
                    sampling=SamplingPolicy(temperature=0.7, top_k=20)),
    ObjectiveConfig("reinforce", measure_kl=True),
], ids=["ppo_kl_topk", "reinforce"])
def test_loss_matches_numpy_reference_and_ignores_masked_garbage(setup, cfg):
    graphdef, lora, frozen, batch = setup
    expected, expected_metrics = _reference(graphdef, lora, frozen, batch, cfg)
    loss, count, grads, metrics = _loss(graphdef, lora, frozen, batch, cfg)
    assert count == batch["loss_mask"].sum()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    for key, value in expected_metrics.items():
        np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
    if cfg.name == "ppo":
        assert 0 < float(metrics["clip_frac"]) < 1  # the recorded log-probs are far from the policy's

    # Garbage where loss_mask is 0 changes nothing, and chunking changes nothing.
    dirty = dict(batch)
    untrained = batch["loss_mask"] == 0
    dirty["old_logprobs"] = np.where(untrained, np.nan, batch["old_logprobs"]).astype(np.float32)
    dirty["advantages"] = np.where(untrained, np.inf, batch["advantages"]).astype(np.float32)
    loss2, _, grads2, metrics2 = _loss(graphdef, lora, frozen, dirty, cfg, chunk_size=7)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    for key in metrics:
        np.testing.assert_allclose(metrics2[key], metrics[key], rtol=1e-5, atol=1e-7, err_msg=key)
    for g2, g in zip(jax.tree.leaves(grads2), jax.tree.leaves(grads)):
        assert np.isfinite(g2).all() and relative_difference(g2, g) <= 1e-5


def test_ppo_at_unchanged_weights_is_reinforce(setup):
    """With the current log-probs as the old ones, ρ = 1: the surrogate's value is -mean(A) and its
    gradient is exactly REINFORCE's (∇ρ = ρ ∇log π)."""
    graphdef, lora, frozen, batch = setup
    model = nnx.merge(graphdef, lora, frozen)
    current = dict(batch, old_logprobs=np.asarray(token_logprobs(model, batch, chunk_size=5), np.float32))
    mask = batch["loss_mask"] > 0
    ratio = np.exp(np.asarray(token_logprobs(model, batch)) - current["old_logprobs"])[mask]
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-6)
    ppo = _loss(graphdef, lora, frozen, current, ObjectiveConfig("ppo"))
    reinforce = _loss(graphdef, lora, frozen, current, ObjectiveConfig("reinforce"))
    assert float(ppo[3]["clip_frac"]) == 0.0
    np.testing.assert_allclose(ppo[0], -batch["advantages"][mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(reinforce[0], -(batch["advantages"] * current["old_logprobs"])[mask].mean(),
                               rtol=1e-5)
    for g_ppo, g_rf in zip(jax.tree.leaves(ppo[2]), jax.tree.leaves(reinforce[2])):
        assert relative_difference(g_ppo, g_rf) <= 1e-5


def test_recomputed_log_probs_equal_the_samplers(setup):
    """Sampled continuations packed into rows: the objective's log π of every sampled token is the
    log-prob the sampler recorded (temperature and top-k included)."""
    graphdef, lora, frozen, _ = setup
    model = nnx.merge(graphdef, lora, frozen)
    cfg = ObjectiveConfig("ppo", sampling=SamplingPolicy(10, temperature=0.7, top_k=40))
    sampler = Sampler(model, SamplerConfig(max_len=64))
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, 1024, n).tolist() for n in (3, 9, 17, 5, 12)]
    out = sampler.generate((lora, frozen), prompts, cfg.sampling, key=jax.random.key(3), eos_ids=())
    segments = []
    for prompt, ids, logprobs in zip(prompts, out.token_ids, out.logprobs):
        n = len(prompt) + len(ids)
        mask = np.r_[np.zeros(len(prompt)), np.ones(len(ids))].astype(np.int32)
        segments.append(Segment(ids=prompt + ids, loss_mask=mask, logprobs=np.r_[np.zeros(len(prompt)), logprobs],
                                advantages=np.ones(n)))
    (batch,) = pack_segments(segments, rows=2, seq_len=64)
    recomputed = np.asarray(jax.jit(lambda b: token_logprobs(model, b, cfg, chunk_size=16))(batch))
    mask = batch["loss_mask"] > 0
    assert mask.sum() == sum(len(ids) for ids in out.token_ids) == 50
    np.testing.assert_allclose(recomputed[mask], batch["old_logprobs"][mask], atol=ATOL, rtol=0)
    _, _, _, metrics = _loss(graphdef, lora, frozen, batch, cfg)
    assert float(metrics["clip_frac"]) == 0.0


def test_refusals(setup):
    graphdef, lora, frozen, batch = setup
    with pytest.raises(ValueError, match="rl.objective is 'dpo'; choose from reinforce, ppo"):
        ObjectiveConfig("dpo")
    with pytest.raises(ValueError, match="rl.clip_eps must be in"):
        ObjectiveConfig("ppo", clip_eps=1.5)
    with pytest.raises(ValueError, match="rl.kl_coef must be"):
        ObjectiveConfig("ppo", kl_coef=-0.1)
    with pytest.raises(ValueError, match="temperature"):
        ObjectiveConfig("ppo", sampling=SamplingPolicy(temperature=-1.0))
    assert set(OBJECTIVES) == {"reinforce", "ppo"}

    # No adapters: "adapters off" is the policy itself, so there is no KL reference.
    bare = Transformer(preset("tiny"), lora=None, rngs=nnx.Rngs(0))
    bare_graphdef, bare_lora, bare_frozen = nnx.split(bare, LoRA, ...)
    with pytest.raises(ValueError, match="rl.kl_coef is 0.1, but the model has no LoRA adapters"):
        _loss(bare_graphdef, bare_lora, bare_frozen, batch, ObjectiveConfig("ppo", kl_coef=0.1))
    with pytest.raises(ValueError, match="no LoRA adapters"):
        check_reference(ObjectiveConfig("reinforce", measure_kl=True), bare_lora)
    check_reference(ObjectiveConfig("ppo", kl_coef=0.1), lora)
