"""Decoder behaviour that parity with a single forward pass does not cover."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cmat_jax.models.config import preset
from cmat_jax.models.kv_cache import KVCache
from cmat_jax.models.lora import LoRA, LoRAConfig, merge_lora
from cmat_jax.models.transformer import Transformer

CFG = preset("tiny")


def make(lora=None, **kw):
    return Transformer(CFG, lora=lora, attention_impl="xla", rngs=nnx.Rngs(0), **kw)


def randomize_adapters(model, seed=1, scale=0.3):
    state = nnx.state(model, LoRA)
    keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(state))))
    nnx.update(model, jax.tree.map(lambda x: scale * jax.random.normal(next(keys), x.shape), state))


def tokens(shape, seed=0):
    return jnp.asarray(np.random.RandomState(seed).randint(0, CFG.vocab_size, shape), jnp.int32)


def test_packed_rows_equal_separate_sequences():
    model = make()
    a, b = tokens((1, 5), 1), tokens((1, 7), 2)
    packed = jnp.concatenate([a, b, jnp.zeros((1, 4), jnp.int32)], axis=1)
    segments = jnp.asarray([[1] * 5 + [2] * 7 + [0] * 4])
    positions = jnp.asarray([list(range(5)) + list(range(7)) + [0] * 4])
    out, _ = model(packed, positions, segments)
    np.testing.assert_allclose(out[:, :5], model(a)[0], atol=1e-5)
    np.testing.assert_allclose(out[:, 5:12], model(b)[0], atol=1e-5)


def test_cache_prefill_then_decode_equals_full_forward():
    model = make()
    seq = tokens((2, 9))
    full, _ = model(seq)
    cache = KVCache.init(CFG, 2, 16, jnp.float32)
    first, cache = model(seq[:, :6], cache=cache)
    steps = [first]
    for t in range(6, 9):
        out, cache = model(seq[:, t:t + 1], cache=cache)
        steps.append(out)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)
    assert int(cache.end_index) == 9


def test_unrolled_layers_equal_the_scan_with_a_cache():
    model = make(LoRAConfig(rank=2))
    randomize_adapters(model, scale=0.05)
    seq = tokens((2, 7))
    for unroll in (False, True):
        cache = KVCache.init(CFG, 2, 8, jnp.float32)
        first, cache = model(seq[:, :6], cache=cache, unroll_layers=unroll)
        last, cache = model(seq[:, 6:], cache=cache, unroll_layers=unroll)
        if not unroll:
            expected = (first, last, cache.k_lbskh)
    np.testing.assert_allclose(first, expected[0], atol=1e-5)
    np.testing.assert_allclose(last, expected[1], atol=1e-5)
    np.testing.assert_allclose(cache.k_lbskh, expected[2], atol=1e-5)


def test_fresh_adapters_change_nothing_and_disabling_them_gives_the_base():
    model = make(LoRAConfig(rank=4))
    seq = tokens((2, 6))
    base = model(seq, use_lora=False)[0]
    np.testing.assert_allclose(model(seq)[0], base, atol=1e-6)
    randomize_adapters(model)
    assert np.abs(model(seq)[0] - base).max() > 1e-2
    np.testing.assert_array_equal(model(seq, use_lora=False)[0], base)


def test_merge_folds_adapters_into_kernels():
    model = make(LoRAConfig(rank=4, targets="q|v|down"))
    randomize_adapters(model)
    seq = tokens((2, 6))
    before = model(seq)[0]
    merge_lora(model)
    assert not jax.tree.leaves(nnx.state(model, LoRA))
    np.testing.assert_allclose(model(seq)[0], before, atol=1e-4)


def test_lora_targets_by_list_and_regex():
    assert LoRAConfig(targets=["q", "v"]).target_set() == {"q", "v"}
    assert LoRAConfig(targets="gate|up|down").target_set() == {"gate", "up", "down"}
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        LoRAConfig(targets=["q_proj"])
    with pytest.raises(ValueError, match="matches none"):
        LoRAConfig(targets="attn.*")


@pytest.mark.parametrize("remat", ["full", "dots", "save_linear"])
def test_remat_policies_keep_gradients(remat):
    seq = tokens((2, 6))

    def grads(model):
        graphdef, lora_state, rest = nnx.split(model, LoRA, ...)

        def loss(lora_state):
            logits, _ = nnx.merge(graphdef, lora_state, rest)(seq)
            return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

        return jax.grad(loss)(lora_state)

    plain, rematted = make(LoRAConfig(rank=2)), make(LoRAConfig(rank=2), remat=remat)
    randomize_adapters(plain, scale=0.05), randomize_adapters(rematted, scale=0.05)
    for g1, g2 in zip(jax.tree.leaves(grads(plain)), jax.tree.leaves(grads(rematted))):
        np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-6)


def test_bf16_compute_stays_close_to_float32():
    seq = tokens((2, 8))
    exact = make()(seq)[0]
    fast = Transformer(CFG, dtype=jnp.bfloat16, attention_impl="xla", rngs=nnx.Rngs(0))(seq)[0]
    assert fast.dtype == jnp.float32  # logits are always float32
    assert np.abs(fast - exact).max() < 0.05 * np.abs(exact).max()


def test_unknown_remat_policy_is_refused():
    with pytest.raises(ValueError, match="remat policy 'some'"):
        make(remat="some")
