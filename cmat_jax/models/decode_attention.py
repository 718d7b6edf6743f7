"""Decode attention as a Pallas (Triton) kernel that reads the stacked KV cache in place.

The einsum path (attention._xla_attention) takes one layer's cache slice [b, s, k, h]; for grouped-query
models XLA on GPU relayouts (transposes) the whole cache around the decode loop to feed those einsums. This
kernel instead takes the whole stacked cache [l, b, s, k, h] in its stored slot-major layout and the (traced)
layer index, and loads each [block_s, h] tile of one (layer, row, kv head) straight from it: no copy of the
cache, whatever its layout's strides.

Grid: (batch row, kv head, split). The n // k query heads that share a kv head (times the t query tokens)
form one tile of `rows` query rows, so each key and value tile is read once per (row, kv head). Each split
(flash-decoding) runs an online softmax (running max, sum and float32 accumulator) over its share of the
row's slot blocks; a small combine in XLA merges the splits. Splits exist for parallelism: batch * kv heads
alone (64 for Qwen2.5-1.5B at batch 32) leaves most of a GPU idle.

Only slots before a row's last attendable slot are read (at decode: the filled slots, not the empty tail).
The math equals _xla_attention: float32 scores scaled by h ** -0.5, masked slots scored finfo.min, the
probabilities cast to the compute dtype before the value product. A row whose every slot is masked (a
finished row writes segment 0) gets what the reference gives, uniform weights over all s slots, so such a
row reads the whole slot range.

On a backend other than GPU, pass interpret=True (Attention does): the same kernel then runs as plain JAX.
The pallas_call has no sharding rule: under a multi-device mesh XLA would gather its operands, so use it on
one device.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

DECODE_ATTENTION_IMPLS = ("xla", "pallas")
MIN_DOT_ROWS = 16  # Triton's dot needs every dimension >= 16


def _next_power_of_2(x: int) -> int:
    return 1 << (x - 1).bit_length()


def default_splits(batch: int, kv_heads: int) -> int:
    """Splits of each row's slots so that the grid has about 512 programs (a few per GPU multiprocessor)."""
    return max(1, min(16, 512 // (batch * kv_heads)))


def _kernel(layer_ref, kv_len_ref, q_ref, k_ref, v_ref, mask_ref, acc_ref, m_ref, l_ref, *, tokens: int,
            group: int, slots: int, block_s: int, splits: int):
    row, head, split = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    layer = layer_ref[0]
    q = q_ref[...]  # [rows, h]; row r is query token r // group, q head r % group of this kv head
    rows = q.shape[0]
    row_r = jnp.arange(rows, dtype=jnp.int32)
    min_score = jnp.finfo(jnp.float32).min

    # This split's share of the row's slot blocks (a split past the last block does nothing).
    n_blocks = pl.cdiv(kv_len_ref[row], block_s)
    per_split = pl.cdiv(n_blocks, splits)
    first = split * per_split
    last = jnp.minimum(first + per_split, n_blocks)

    def body(i, carry):
        m, l, acc = carry
        start = i * block_s
        slot = start + jnp.arange(block_s, dtype=jnp.int32)
        in_bounds = slot < slots  # the last block may run past the cache
        k = plgpu.load(k_ref.at[layer, row, pl.ds(start, block_s), head, :], mask=in_bounds[:, None], other=0)
        v = plgpu.load(v_ref.at[layer, row, pl.ds(start, block_s), head, :], mask=in_bounds[:, None], other=0)
        scores = jax.lax.dot_general(q, k.astype(q.dtype), (((1,), (1,)), ((), ())),
                                     preferred_element_type=jnp.float32) * jnp.float32(q.shape[1] ** -0.5)
        allowed = jnp.zeros((rows, block_s), jnp.bool_)
        for token in range(tokens):  # each query token's mask row, for that token's `group` query rows
            mask_s = plgpu.load(mask_ref.at[row, jnp.int32(token), pl.ds(start, block_s)], mask=in_bounds, other=0) != 0
            mine = (row_r >= token * group) & (row_r < (token + 1) * group)
            allowed = allowed | (mine[:, None] & mask_s[None, :])
        scores = jnp.where(allowed, scores, min_score)
        m_new = jnp.maximum(m, scores.max(axis=1))
        correction = jnp.exp(m - m_new)
        # Slots past the cache get no weight even in a fully masked row (whose scores all equal m_new).
        p = jnp.where(in_bounds[None, :], jnp.exp(scores - m_new[:, None]), 0.0)
        pv = jax.lax.dot_general(p.astype(q.dtype), v.astype(q.dtype), (((1,), (0,)), ((), ())),
                                 preferred_element_type=jnp.float32)
        return m_new, correction * l + p.sum(axis=1), correction[:, None] * acc + pv

    init = (jnp.full((rows,), min_score, jnp.float32), jnp.zeros((rows,), jnp.float32),
            jnp.zeros(q.shape, jnp.float32))
    m, l, acc = jax.lax.fori_loop(first, last, body, init)
    real = row_r < tokens * group  # padding rows are not written
    plgpu.store(acc_ref, acc, mask=real[:, None])
    plgpu.store(m_ref, m, mask=real)
    plgpu.store(l_ref, l, mask=real)


def decode_attention(q_btnh, k_cache_lbskh, v_cache_lbskh, layer, mask_bts, *, interpret: bool = False,
                     block_s: int = 64, splits: int | None = None):
    """Attention of t query tokens per row over layer `layer` of the stacked cache, read in place.

    Equals attention._xla_attention(q_btnh, k_cache_lbskh[layer], v_cache_lbskh[layer], mask_bts), fully
    masked rows included. `layer`: an int32 scalar, traced or not. `mask_bts`: bool [b, t, s]
    (attention.attention_mask). Meant for small t (decode: t == 1): the query rows of one kv head, t * n // k,
    share one tile padded to a power of 2 >= 16. `block_s`: slots per tile (a power of 2 >= 16); `splits`:
    how many programs share one row's slots (default: default_splits).
    """
    b, t, n, h = q_btnh.shape
    _, _, s, kv, _ = k_cache_lbskh.shape
    group = n // kv
    if h < MIN_DOT_ROWS or h & (h - 1) or block_s < MIN_DOT_ROWS or block_s & (block_s - 1):
        raise ValueError(f"decode_attention needs head_dim and block_s powers of 2 >= {MIN_DOT_ROWS} (Triton "
                         f"tiles), got head_dim {h}, block_s {block_s}")
    splits = default_splits(b, kv) if splits is None else splits
    rows = max(MIN_DOT_ROWS, _next_power_of_2(t * group))
    # [b, k, t * group, h], padded to `rows`: q is small, so this transpose costs nothing.
    q_bkrh = q_btnh.reshape(b, t, kv, group, h).transpose(0, 2, 1, 3, 4).reshape(b, kv, t * group, h)
    q_bkrh = jnp.pad(q_bkrh, ((0, 0), (0, 0), (0, rows - t * group), (0, 0)))
    # Slots a row reads: up to its last attendable slot, or all s when it has none (the reference's uniform
    # weights over every slot).
    last_b = jnp.max(jnp.where(mask_bts.any(axis=1), jnp.arange(1, s + 1, dtype=jnp.int32), 0), axis=1)
    kv_len_b = jnp.where(last_b > 0, last_b, s).astype(jnp.int32)
    layer_1 = jnp.reshape(jnp.asarray(layer, jnp.int32), (1,))

    whole = pl.BlockSpec()  # the kernel indexes these arrays itself (the cache: by the traced layer)
    per_program = lambda *block: pl.BlockSpec((None, None, None, *block),  # noqa: E731
                                              lambda i, j, k: (i, j, k) + (0,) * len(block))
    kernel = functools.partial(_kernel, tokens=t, group=group, slots=s, block_s=block_s, splits=splits)
    acc, m, l = pl.pallas_call(
        kernel,
        grid=(b, kv, splits),
        in_specs=[whole, whole, pl.BlockSpec((None, None, rows, h), lambda i, j, k: (i, j, 0, 0)),
                  whole, whole, whole],
        out_specs=[per_program(rows, h), per_program(rows), per_program(rows)],
        out_shape=[jax.ShapeDtypeStruct((b, kv, splits, rows, h), jnp.float32),
                   jax.ShapeDtypeStruct((b, kv, splits, rows), jnp.float32),
                   jax.ShapeDtypeStruct((b, kv, splits, rows), jnp.float32)],
        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2),
        interpret=interpret,
        name="decode_attention",
    )(layer_1, kv_len_b, q_bkrh, k_cache_lbskh, v_cache_lbskh, mask_bts.astype(jnp.int8))

    # Combine the splits (flash-decoding): rescale each to the common max, then normalise.
    acc, m, l = acc[:, :, :, :t * group], m[..., :t * group], l[..., :t * group]
    weight = jnp.exp(m - m.max(axis=2, keepdims=True))
    out = (weight[..., None] * acc).sum(axis=2) / (weight * l).sum(axis=2)[..., None]
    out = out.reshape(b, kv, t, group, h).transpose(0, 2, 1, 3, 4).reshape(b, t, n, h)
    return out.astype(q_btnh.dtype)
