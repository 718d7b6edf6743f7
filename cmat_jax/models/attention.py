"""Attention math: masks, an exact XLA path, and the fused kernel path.

Masks are boolean [b, t, s]: query t may attend key slot s when s is not after
t, both belong to the same segment, and the slot is not padding (segment 0).
This one rule covers causal batches, left padding, packed sequences and the
KV cache (whose empty slots have segment 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ATTENTION_IMPLS = ("auto", "xla", "cudnn")


def attention_mask(q_segment_bt: jax.Array, q_slot_bt: jax.Array, kv_segment_bs: jax.Array) -> jax.Array:
    """[b, t, s] bool mask from segment ids and the slot index of each query."""
    kv_slot_s = jnp.arange(kv_segment_bs.shape[1], dtype=jnp.int32)
    causal = kv_slot_s[None, None, :] <= q_slot_bt[:, :, None]
    same = q_segment_bt[:, :, None] == kv_segment_bs[:, None, :]
    return causal & same & (kv_segment_bs[:, None, :] != 0)


def _xla_attention(q_btnh, k_bskh, v_bskh, mask_bts):
    """Exact reference path: float32 scores and softmax, grouped-query einsums."""
    b, t, n, h = q_btnh.shape
    kv = k_bskh.shape[2]
    q_btkqh = q_btnh.reshape(b, t, kv, n // kv, h)  # q: the query heads that share one kv head
    scores = jnp.einsum("btkqh,bskh->bkqts", q_btkqh, k_bskh, preferred_element_type=jnp.float32)
    scores = scores * jnp.float32(h ** -0.5)
    scores = jnp.where(mask_bts[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_bskh.dtype)
    out = jnp.einsum("bkqts,bskh->btkqh", probs, v_bskh, preferred_element_type=jnp.float32)
    return out.reshape(b, t, n, h).astype(q_btnh.dtype)


def _fused_attention(q_btnh, k_bskh, v_bskh, mask_bts, implementation):
    return jax.nn.dot_product_attention(
        q_btnh, k_bskh, v_bskh, mask=mask_bts[:, None, :, :], implementation=implementation
    )


def resolve_impl(impl: str, dtype) -> str:
    """'auto' picks cuDNN's fused kernel on GPU for 16-bit compute, else the exact XLA path."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl {impl!r} is not one of {ATTENTION_IMPLS}")
    if impl != "auto":
        return impl
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and jnp.dtype(dtype).itemsize == 2 else "xla"


def dot_product_attention(q_btnh, k_bskh, v_bskh, mask_bts, impl: str = "xla"):
    if impl == "xla":
        return _xla_attention(q_btnh, k_bskh, v_bskh, mask_bts)
    return _fused_attention(q_btnh, k_bskh, v_bskh, mask_bts, impl)
