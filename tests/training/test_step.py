"""The train step: gradient accumulation, non-finite handling, the schedule, memorisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cmat_jax.models.config import preset
from cmat_jax.models.lora import LoRA, LoRAConfig
from cmat_jax.models.transformer import Transformer
from cmat_jax.settings.run import parse_run
from cmat_jax.training.optimizer import make_optimizer, make_schedule
from cmat_jax.training.step import loss_and_grads, make_train_step
from cmat_jax.training.trainer import Trainer
from tests.training.common import relative_difference, tiny_config


def _setup(seed=0, b=8, t=24):
    model = Transformer(preset("tiny"), lora=LoRAConfig(rank=4), rngs=nnx.Rngs(seed))
    graphdef, lora, frozen = nnx.split(model, LoRA, ...)
    # Non-zero B so that every adapter has a gradient.
    lora = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), lora)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 1024, (b, t)).astype(np.int32)
    segments = np.ones((b, t), np.int32)
    segments[1, t // 2:] = 2  # a packed row
    segments[2, -5:] = 0  # a padded row
    positions = np.tile(np.arange(t, dtype=np.int32), (b, 1))
    positions[1, t // 2:] -= t // 2
    batch = {"tokens": tokens, "targets": np.roll(tokens, -1, axis=1),
             "loss_mask": ((rng.random((b, t)) < 0.5) & (segments > 0)).astype(np.float32),
             "segment_ids": segments, "positions": positions}
    return graphdef, lora, frozen, batch


def test_gradient_accumulation_equals_one_big_batch():
    graphdef, lora, frozen, batch = _setup()
    results = {}
    for micro in (1, 4):
        fn = jax.jit(lambda f, l, b, m=micro: loss_and_grads(graphdef, f, l, b, microbatches=m, chunk_size=8))
        results[micro] = fn(frozen, lora, batch)
    loss1, count1, grads1 = results[1]
    for micro in (4,):
        loss, count, grads = results[micro]
        assert count == count1
        np.testing.assert_allclose(loss, loss1, rtol=1e-6)
        for g, g1 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads1)):
            assert relative_difference(g, g1) <= 1e-5


def test_non_finite_step_leaves_state_untouched():
    graphdef, lora, frozen, batch = _setup()
    tx = make_optimizer(weight_decay=0.1)
    step = make_train_step(graphdef, tx, make_schedule(peak_lr=1e-2, total_steps=10))
    opt_state = tx.init(lora)
    before = jax.tree.map(np.asarray, (lora, opt_state))
    # A NaN embedding row for a token of the batch makes loss and gradients NaN.
    bad = jax.tree.map(lambda x: x, frozen)
    table = bad["embed"]["table"]
    table[...] = table[...].at[int(batch["tokens"][0, 0])].set(jnp.nan)
    new_lora, new_opt, metrics = step(bad, jax.tree.map(jnp.copy, lora), jax.tree.map(jnp.copy, opt_state),
                                      batch, jnp.int32(0))
    assert not bool(metrics["finite"]) and not np.isfinite(float(metrics["loss"]))
    for after, old in zip(jax.tree.leaves((new_lora, new_opt)), jax.tree.leaves(before)):
        np.testing.assert_array_equal(after, old)
    # The same step on finite weights updates the adapters.
    new_lora, _, metrics = step(frozen, jax.tree.map(jnp.copy, lora), jax.tree.map(jnp.copy, opt_state),
                                batch, jnp.int32(0))
    assert bool(metrics["finite"])
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new_lora), jax.tree.leaves(before[0])))


def test_schedule_warmup_then_decay():
    s = make_schedule(peak_lr=1.0, total_steps=10, warmup_steps=4, decay="linear", end_lr_ratio=0.1)
    lrs = [float(s(i)) for i in range(11)]
    np.testing.assert_allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0], rtol=1e-6)
    np.testing.assert_allclose(lrs[10], 0.1, rtol=1e-6)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    cosine = make_schedule(peak_lr=2.0, total_steps=5, warmup_steps=0, decay="cosine")
    np.testing.assert_allclose([float(cosine(0)), float(cosine(5))], [2.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="train.decay"):
        make_schedule(peak_lr=1.0, total_steps=10, decay="exp")


def test_tiny_model_memorises_small_set(tmp_path):
    config = tiny_config(str(tmp_path / "run"), str(tmp_path / "data"), **{
        "train.steps": 60, "train.warmup_steps": 5, "train.learning_rate": 2e-2, "lora.rank": 8,
        "checkpoint.every": 1000})
    trainer = Trainer(parse_run(config))
    history = trainer.train()
    trainer.close()
    first, last = history[0]["loss"], np.mean([h["loss"] for h in history[-5:]])
    assert last < 0.2 * first, (first, last)
