"""The KV cache: per-layer keys and values plus the segment id of each slot.

Keys and values are stored [layers, batch, kv_heads, slots, head_dim]: the layout the decode step's attention
reads (a batched matmul over (batch, kv head) with the slots major to head_dim). Stored slot-major
([l, b, s, k, h]), XLA gave the decode loop's carried cache this layout anyway and copied the whole cache into
it on entry and back on exit, holding it twice (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmat_jax.models.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    k_lbksh: jax.Array
    v_lbksh: jax.Array
    segment_ids_bs: jax.Array  # 0 marks an empty or padding slot
    end_index: jax.Array  # int32 scalar: slots [0, end_index) are written

    @property
    def size(self) -> int:
        return self.k_lbksh.shape[3]

    @classmethod
    def init(cls, cfg: ModelConfig, batch: int, size: int, dtype=jnp.bfloat16) -> "KVCache":
        cfg.check_length(size)
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, size, cfg.head_dim)
        return cls(
            k_lbksh=jnp.zeros(shape, dtype),
            v_lbksh=jnp.zeros(shape, dtype),
            segment_ids_bs=jnp.zeros((batch, size), jnp.int32),
            end_index=jnp.zeros((), jnp.int32),
        )
