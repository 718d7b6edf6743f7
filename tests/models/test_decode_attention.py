"""The Pallas decode attention kernel (models/decode_attention.py) against the einsum path it replaces.

Off GPU the kernel runs interpreted (the same kernel code as plain JAX); on GPU (JAX_PLATFORMS=cuda) these
tests run the Triton kernel itself.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cmat_jax.models.attention import _xla_attention, attention_mask
from cmat_jax.models.config import preset
from cmat_jax.models.decode_attention import decode_attention
from cmat_jax.models.transformer import Transformer
from cmat_jax.sampling import Sampler, SamplingPolicy
from cmat_jax.settings.fields import SettingError
from cmat_jax.settings.model import ModelSettings
from cmat_jax.training.config import default_config

INTERPRET = jax.default_backend() != "gpu"
LAYERS, HEAD_DIM, BLOCK_S = 3, 16, 16


def inputs(b, s, n, k, t=1, seed=0, q_dtype=jnp.float32, cache_dtype=jnp.float32):
    """(q, k cache, v cache, mask) of rows that differ in what they hold: a full row; left padding, then
    filled slots, then empty ones; a short row far into the cache; a finished row (query segment 0: every
    slot masked). Each live row's t queries are its last t filled slots."""
    rng = np.random.RandomState(seed)
    cache = lambda: jnp.asarray(rng.randn(LAYERS, b, s, k, HEAD_DIM), cache_dtype)  # noqa: E731
    k_cache, v_cache = cache(), cache()
    q = jnp.asarray(rng.randn(b, t, n, HEAD_DIM), q_dtype)
    spans = [(0, s), (3, s // 2), (s // 3, t + 2), (2, s // 2)]  # (left padding, filled slots) per row
    kv_segment = np.zeros((b, s), np.int32)
    q_slot = np.zeros((b, t), np.int32)
    for r in range(b):
        pad, filled = spans[r % len(spans)]
        kv_segment[r, pad:pad + filled] = 1
        q_slot[r] = pad + filled - t + np.arange(t)
    q_segment = np.ones((b, t), np.int32)
    q_segment[3::len(spans)] = 0  # finished rows
    mask = attention_mask(jnp.asarray(q_segment), jnp.asarray(q_slot), jnp.asarray(kv_segment))
    return q, k_cache, v_cache, mask


def reference(q, k_cache, v_cache, layer, mask):
    return _xla_attention(q, k_cache[layer].astype(q.dtype), v_cache[layer].astype(q.dtype), mask)


@pytest.mark.parametrize("n, k", [(4, 4), (6, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("s", [64, 37])  # 37: the last slot block runs past the cache
def test_equals_the_einsum_path(n, k, s):
    q, k_cache, v_cache, mask = inputs(4, s, n, k)
    assert not mask[3].any() and mask[0].all()  # a fully masked row and a full one
    out = decode_attention(q, k_cache, v_cache, jnp.int32(1), mask, interpret=INTERPRET, block_s=BLOCK_S)
    assert out.shape == q.shape and out.dtype == q.dtype
    np.testing.assert_allclose(out, reference(q, k_cache, v_cache, 1, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("splits", [1, 2, 5])  # 5: more splits than a short row has slot blocks
def test_any_number_of_splits_gives_the_same_result(splits):
    q, k_cache, v_cache, mask = inputs(4, 80, 6, 2, seed=1)
    out = decode_attention(q, k_cache, v_cache, jnp.int32(2), mask, interpret=INTERPRET, block_s=BLOCK_S,
                           splits=splits)
    np.testing.assert_allclose(out, reference(q, k_cache, v_cache, 2, mask), atol=1e-5, rtol=1e-5)


def test_several_query_tokens_and_a_traced_layer_in_a_scan():
    q, k_cache, v_cache, mask = inputs(4, 50, 6, 2, t=3, seed=2)

    @jax.jit
    def every_layer(q, k_cache, v_cache, mask):
        def step(_, layer):
            return None, decode_attention(q, k_cache, v_cache, layer, mask, interpret=INTERPRET, block_s=BLOCK_S)

        return jax.lax.scan(step, None, jnp.arange(LAYERS, dtype=jnp.int32))[1]

    outs = every_layer(q, k_cache, v_cache, mask)
    for layer in range(LAYERS):
        np.testing.assert_allclose(outs[layer], reference(q, k_cache, v_cache, layer, mask), atol=1e-5, rtol=1e-5)


def test_bfloat16():
    q, k_cache, v_cache, mask = inputs(4, 64, 6, 2, seed=3, q_dtype=jnp.bfloat16, cache_dtype=jnp.bfloat16)
    out = decode_attention(q, k_cache, v_cache, jnp.int32(0), mask, interpret=INTERPRET, block_s=BLOCK_S)
    assert out.dtype == jnp.bfloat16
    # Both round the probabilities to bfloat16 before the value product (the kernel before normalising).
    np.testing.assert_allclose(out.astype(jnp.float32), reference(q, k_cache, v_cache, 0, mask).astype(jnp.float32),
                               atol=2e-2, rtol=2e-2)


def test_a_bfloat16_cache_under_float32_compute():
    q, k_cache, v_cache, mask = inputs(4, 40, 6, 2, seed=4, cache_dtype=jnp.bfloat16)
    out = decode_attention(q, k_cache, v_cache, jnp.int32(1), mask, interpret=INTERPRET, block_s=BLOCK_S)
    np.testing.assert_allclose(out, reference(q, k_cache, v_cache, 1, mask), atol=1e-5, rtol=1e-5)


def test_a_tiny_model_decodes_the_same_tokens_with_either_path(monkeypatch):
    from cmat_jax.models import decode_attention as decode_lib

    traced = []  # the kernel's traces: the pallas model must reach it, the xla one never
    real = decode_lib.decode_attention
    monkeypatch.setattr(decode_lib, "decode_attention", lambda *a, **kw: traced.append(1) or real(*a, **kw))

    def model(decode):
        made = Transformer(preset("tiny"), attention_impl="xla", decode_attention=decode, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(made)  # larger weights than the init, so logits are far from uniform
        return nnx.merge(graphdef, jax.tree.map(lambda x: x * 6.0 if x.ndim > 1 else x, state))

    prompts = [list(range(3, 9)), [40, 41, 7], list(range(100, 119))]  # 3 rows: the batch has a padding row
    policy = SamplingPolicy(10, temperature=0.0)
    runs = {}
    for decode in ("xla", "pallas"):
        m = model(decode)
        runs[decode] = Sampler(m).generate(m, prompts, policy, eos_ids=())
        assert bool(traced) == (decode == "pallas")
    assert runs["pallas"].token_ids == runs["xla"].token_ids
    assert all(len(set(row)) > 2 for row in runs["xla"].token_ids), "degenerate reference: too few distinct tokens"
    for ours, theirs in zip(runs["pallas"].logprobs, runs["xla"].logprobs):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_an_unknown_decode_attention_is_refused():
    config = default_config()
    config.model.random_init = True
    config.model.decode_attention = "flash"
    with pytest.raises(SettingError, match=r"model\.decode_attention is 'flash'; choose from xla, pallas"):
        ModelSettings.parse(config)
    with pytest.raises(ValueError, match="decode_attention 'flash' is unknown; choose from xla, pallas"):
        Transformer(preset("tiny"), decode_attention="flash", rngs=nnx.Rngs(0))


def test_tiles_triton_cannot_make_are_refused():
    q, k_cache, v_cache, mask = inputs(2, 32, 4, 2)
    with pytest.raises(ValueError, match="powers of 2 >= 16"):
        decode_attention(q, k_cache, v_cache, jnp.int32(0), mask, interpret=True, block_s=24)
