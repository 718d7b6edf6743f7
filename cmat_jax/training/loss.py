"""Token-mean cross-entropy over loss-masked targets, computed in sequence chunks.

A [b, t, v] float32 logits tensor for a 150k vocabulary is gigabytes, so the
loss walks over the sequence in chunks of `chunk_size` positions with
`lax.map`: each chunk projects its hidden states to float32 logits, takes a
float32 logsumexp and the target logit, and keeps only a masked sum. The chunk
body is rematerialised, so the backward pass recomputes one chunk's logits at
a time instead of storing all of them. `chunked_sums` and `chunked_map` are
that chunking for any per-token function; the RL objectives use them too.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from cmat_jax.sharding import constrain


def _chunk_nll_sum(h_bcd: jax.Array, kernel_dv: jax.Array, targets_bc: jax.Array, mask_bc: jax.Array) -> jax.Array:
    logits_bcv = jnp.einsum("bcd,dv->bcv", h_bcd, kernel_dv.astype(h_bcd.dtype), preferred_element_type=jnp.float32)
    logits_bcv = constrain(logits_bcv, ("batch", "seq", "act_vocab"))
    log_z_bc = jax.nn.logsumexp(logits_bcv, axis=-1)
    target_logit_bc = jnp.take_along_axis(logits_bcv, targets_bc[..., None], axis=-1)[..., 0]
    # where, not multiply: a masked position must contribute exactly 0 even if its logits overflow.
    return jnp.sum(jnp.where(mask_bc, log_z_bc - target_logit_bc, 0.0))


def _sequence_chunks(xs, chunk_size: int):
    """Every [b, t, ...] leaf of `xs` -> [m, b, c, ...] (m chunks of c = chunk_size positions), zero-padded
    (False for masks) at the end."""
    t = jax.tree.leaves(xs)[0].shape[1]
    m = -(-t // chunk_size)
    pad = m * chunk_size - t

    def split(x):
        if pad:  # padded positions carry mask 0, so they add nothing
            x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
        return x.reshape(x.shape[0], m, chunk_size, *x.shape[2:]).swapaxes(0, 1)

    return jax.tree.map(split, xs)


def _check_chunk_size(chunk_size: Optional[int], t: int) -> bool:
    """True when the sequence is to be chunked."""
    if chunk_size is None or chunk_size >= t:
        return False
    if chunk_size <= 0:
        raise ValueError(f"loss chunk size must be positive, found {chunk_size}")
    return True


def chunked_sums(chunk_fn, xs, chunk_size: Optional[int] = None):
    """Σ over sequence chunks of `chunk_fn(xs_chunk)`, a pytree of sums over one chunk's positions.

    `xs` is a pytree of [b, t, ...] arrays (hidden states, targets, masks, ...);
    each chunk holds `chunk_size` positions of every leaf, the last one padded
    with zeros, so `chunk_fn` must give padded (mask 0) positions no weight.
    The chunk body is rematerialised: the backward pass recomputes one chunk's
    logits at a time. `chunk_size` None or >= t calls `chunk_fn(xs)` once.
    """
    if not _check_chunk_size(chunk_size, jax.tree.leaves(xs)[0].shape[1]):
        return chunk_fn(xs)
    sums = jax.lax.map(jax.checkpoint(chunk_fn), _sequence_chunks(xs, chunk_size))
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), sums)


def chunked_map(chunk_fn, xs, chunk_size: Optional[int] = None):
    """`chunk_fn(xs_chunk)` -> a pytree of per-position [b, c, ...] arrays, over sequence chunks,
    reassembled to [b, t, ...] (for per-token values such as log-probs)."""
    t = jax.tree.leaves(xs)[0].shape[1]
    if not _check_chunk_size(chunk_size, t):
        return chunk_fn(xs)
    out = jax.lax.map(chunk_fn, _sequence_chunks(xs, chunk_size))
    return jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(x.shape[1], -1, *x.shape[3:])[:, :t], out)


def nll_sum_and_count(h_btd: jax.Array, kernel_dv: jax.Array, targets_bt: jax.Array, loss_mask_bt: jax.Array,
                      chunk_size: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
    """(sum of -log p(target) over masked positions, number of masked positions), float32.

    `chunk_size` None or >= t computes the whole sequence at once.
    """
    mask_bt = loss_mask_bt.astype(bool)
    targets_bt = targets_bt.astype(jnp.int32)
    count = jnp.sum(mask_bt, dtype=jnp.float32)

    def one_chunk(xs):
        h_bcd, targets_bc, mask_bc = xs
        return _chunk_nll_sum(h_bcd, kernel_dv, targets_bc, mask_bc)

    return chunked_sums(one_chunk, (h_btd, targets_bt, mask_bt), chunk_size), count


def token_mean_loss(h_btd, kernel_dv, targets_bt, loss_mask_bt, chunk_size: Optional[int] = None) -> jax.Array:
    """Mean negative log-likelihood per loss-masked token (0 when no token is masked in)."""
    total, count = nll_sum_and_count(h_btd, kernel_dv, targets_bt, loss_mask_bt, chunk_size)
    return total / jnp.maximum(count, 1.0)
