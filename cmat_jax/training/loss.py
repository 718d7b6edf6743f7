"""Token-mean cross-entropy over loss-masked targets, computed in sequence chunks.

A [b, t, v] float32 logits tensor for a 150k vocabulary is gigabytes, so the
loss walks over the sequence in chunks of `chunk_size` positions with
`lax.map`: each chunk projects its hidden states to float32 logits, takes a
float32 logsumexp and the target logit, and keeps only a masked sum. The chunk
body is rematerialised, so the backward pass recomputes one chunk's logits at
a time instead of storing all of them.
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


def nll_sum_and_count(h_btd: jax.Array, kernel_dv: jax.Array, targets_bt: jax.Array, loss_mask_bt: jax.Array,
                      chunk_size: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
    """(sum of -log p(target) over masked positions, number of masked positions), float32.

    `chunk_size` None or >= t computes the whole sequence at once.
    """
    b, t, d = h_btd.shape
    mask_bt = loss_mask_bt.astype(bool)
    targets_bt = targets_bt.astype(jnp.int32)
    count = jnp.sum(mask_bt, dtype=jnp.float32)
    if chunk_size is None or chunk_size >= t:
        return _chunk_nll_sum(h_btd, kernel_dv, targets_bt, mask_bt), count
    if chunk_size <= 0:
        raise ValueError(f"loss chunk size must be positive, found {chunk_size}")
    n = -(-t // chunk_size)
    pad = n * chunk_size - t
    if pad:  # padded positions are masked out
        h_btd = jnp.pad(h_btd, ((0, 0), (0, pad), (0, 0)))
        targets_bt = jnp.pad(targets_bt, ((0, 0), (0, pad)))
        mask_bt = jnp.pad(mask_bt, ((0, 0), (0, pad)))
    h_nbcd = h_btd.reshape(b, n, chunk_size, d).swapaxes(0, 1)
    targets_nbc = targets_bt.reshape(b, n, chunk_size).swapaxes(0, 1)
    mask_nbc = mask_bt.reshape(b, n, chunk_size).swapaxes(0, 1)

    @jax.checkpoint
    def one_chunk(xs):
        h_bcd, targets_bc, mask_bc = xs
        return _chunk_nll_sum(h_bcd, kernel_dv, targets_bc, mask_bc)

    sums_n = jax.lax.map(one_chunk, (h_nbcd, targets_nbc, mask_nbc))
    return jnp.sum(sums_n), count


def token_mean_loss(h_btd, kernel_dv, targets_bt, loss_mask_bt, chunk_size: Optional[int] = None) -> jax.Array:
    """Mean negative log-likelihood per loss-masked token (0 when no token is masked in)."""
    total, count = nll_sum_and_count(h_btd, kernel_dv, targets_bt, loss_mask_bt, chunk_size)
    return total / jnp.maximum(count, 1.0)
