"""One decode step (batch B, cache of 640 slots, 576 filled) under three ways of
running the stacked layers, random bf16 weights at a preset's shape:

  scan               lax.scan over the stacked weights (Transformer's default)
  static_slices      a Python loop over static slices of the stacked weights
                     (Transformer(..., unroll_layers=True))
  per_layer_buffers  a Python loop over weights copied into one buffer per layer

    python bench/bench_decode_layers.py codellama_7b 32

Prints each variant's step time and compile time, then one JSON line.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from cmat_jax.models import attention as attn_lib  # noqa: E402
from cmat_jax.models.config import preset  # noqa: E402
from cmat_jax.models.kv_cache import KVCache  # noqa: E402
from cmat_jax.models.layers import rope_inv_freq, rope_sin_cos  # noqa: E402
from cmat_jax.models.transformer import Transformer  # noqa: E402

name = sys.argv[1]; B = int(sys.argv[2]); S = 640; FILL = 576
cfg = preset(name)
mk = lambda: Transformer(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, attention_impl="auto", rngs=nnx.Rngs(0))
graphdef, state = nnx.split(nnx.eval_shape(mk))
state = jax.jit(lambda: nnx.state(mk()))()
model = nnx.merge(graphdef, state)
bgd, bstate = nnx.split(model.blocks)
per_layer = jax.jit(lambda s: [jax.tree.map(lambda a: a[i], s) for i in range(cfg.num_layers)])(bstate)

def pre(model, tok, cache):
    write_index = cache.end_index
    pos = jnp.full((B, 1), write_index, jnp.int32)
    seg = jnp.ones((B, 1), jnp.int32)
    kv_seg = jax.lax.dynamic_update_slice(cache.segment_ids_bs, seg, (0, write_index))
    mask = attn_lib.attention_mask(seg, pos, kv_seg)
    sin, cos = rope_sin_cos(pos, rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling_factor))
    return model.embed(tok, jnp.bfloat16), sin, cos, mask, kv_seg, write_index

def post(model, x, kv, kv_seg, wi):
    logits = model.logits(model.final_norm(x))
    return logits, KVCache(kv[0], kv[1], kv_seg, wi + 1)

def step_scan(state, tok, cache):
    return nnx.merge(graphdef, state)(tok, cache=cache)


def step_unrolled(state, tok, cache):
    return nnx.merge(graphdef, state)(tok, cache=cache, unroll_layers=True)

def step_layers(state, layers, tok, cache):
    m = nnx.merge(graphdef, state)
    x, sin, cos, mask, kv_seg, wi = pre(m, tok, cache)
    kv = (cache.k_lbskh, cache.v_lbskh)
    gd = nnx.graphdef(m.blocks)
    for i, layer_state in enumerate(layers):
        x, kv = nnx.merge(gd, layer_state)(x, sin, cos, mask, (*kv, i), wi, use_lora=False, dropout_key=None)
    return post(m, x, kv, kv_seg, wi)

tok = jnp.ones((B, 1), jnp.int32)
res = {}
for label, fn, extra in [("scan", step_scan, ()), ("static_slices", step_unrolled, ()), ("per_layer_buffers", step_layers, (per_layer,))]:
    cache = KVCache.init(cfg, B, S, jnp.bfloat16)
    cache = KVCache(cache.k_lbskh, cache.v_lbskh, jnp.ones((B, S), jnp.int32).at[:, FILL:].set(0), jnp.asarray(FILL, jnp.int32))
    f = jax.jit(fn, donate_argnames=("cache",))
    t0 = time.perf_counter(); logits, cache = f(state, *extra, tok, cache); logits.block_until_ready(); comp = time.perf_counter() - t0
    for _ in range(3):
        cache = KVCache(cache.k_lbskh, cache.v_lbskh, cache.segment_ids_bs, jnp.asarray(FILL, jnp.int32))
        logits, cache = f(state, *extra, tok, cache)
    logits.block_until_ready()
    n = 20; t0 = time.perf_counter()
    for _ in range(n):
        cache = KVCache(cache.k_lbskh, cache.v_lbskh, cache.segment_ids_bs, jnp.asarray(FILL, jnp.int32))
        logits, cache = f(state, *extra, tok, cache)
    logits.block_until_ready()
    res[label] = {"step_ms": (time.perf_counter() - t0) / n * 1e3, "compile_s": comp}
    print(label, res[label], flush=True)
print(json.dumps({"preset": name, "batch": B, **res}))
