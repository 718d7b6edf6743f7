"""The KV cache: per-layer keys and values plus the segment id of each slot."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmat_jax.models.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    k_lbskh: jax.Array
    v_lbskh: jax.Array
    segment_ids_bs: jax.Array  # 0 marks an empty or padding slot
    end_index: jax.Array  # int32 scalar: slots [0, end_index) are written

    @property
    def size(self) -> int:
        return self.k_lbskh.shape[2]

    @classmethod
    def init(cls, cfg: ModelConfig, batch: int, size: int, dtype=jnp.bfloat16) -> "KVCache":
        cfg.check_length(size)
        shape = (cfg.num_layers, batch, size, cfg.num_kv_heads, cfg.head_dim)
        return cls(
            k_lbskh=jnp.zeros(shape, dtype),
            v_lbskh=jnp.zeros(shape, dtype),
            segment_ids_bs=jnp.zeros((batch, size), jnp.int32),
            end_index=jnp.zeros((), jnp.int32),
        )
