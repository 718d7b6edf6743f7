"""Building blocks: RMSNorm, projections with optional LoRA, rotary embeddings."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from cmat_jax.models.lora import LoRA, LoRAConfig

INIT_STD = 0.02  # Hugging Face's initializer_range for these families


class RMSNorm(nnx.Module):
    """RMSNorm as Hugging Face computes it: normalise in float32, cast back, scale."""

    def __init__(self, dim: int, eps: float, *, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), axes=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        normed = (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
        return self.scale[...].astype(x.dtype) * normed


class Linear(nnx.Module):
    """y = x @ W (+ b), plus a LoRA update when adapters are attached and enabled.

    The kernel is stored [in, out] (the transpose of torch's nn.Linear weight).
    """

    def __init__(self, in_features: int, out_features: int, axes: tuple[str, str], *, name: str,
                 use_bias: bool = False, lora: Optional[LoRAConfig] = None, param_dtype=jnp.float32,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.kernel = nnx.Param(
            INIT_STD * jax.random.normal(rngs.params(), (in_features, out_features), param_dtype), axes=axes
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype), axes=(axes[1],)) if use_bias else None
        lora_a = lora_b = None
        self.lora_scale = self.lora_dropout = 0.0
        if lora is not None and lora.applies_to(name):
            # A ~ kaiming-uniform as in the LoRA reference code, B = 0.
            bound = 1.0 / in_features ** 0.5
            lora_a = LoRA(
                jax.random.uniform(rngs.params(), (in_features, lora.rank), param_dtype, -bound, bound),
                axes=(axes[0], "lora_rank"),
            )
            lora_b = LoRA(jnp.zeros((lora.rank, out_features), param_dtype), axes=("lora_rank", axes[1]))
            self.lora_scale, self.lora_dropout = lora.scale, lora.dropout
        self.lora_a, self.lora_b = lora_a, lora_b

    def __call__(self, x: jax.Array, *, use_lora: bool = True, dropout_key: Optional[jax.Array] = None):
        x = x.astype(self.dtype)
        y = jnp.matmul(x, self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        if use_lora and self.lora_a is not None:
            xa = x
            if dropout_key is not None and self.lora_dropout > 0.0:
                keep = jax.random.bernoulli(dropout_key, 1.0 - self.lora_dropout, x.shape)
                xa = jnp.where(keep, x / (1.0 - self.lora_dropout), 0).astype(x.dtype)
            low = jnp.matmul(xa, self.lora_a[...].astype(self.dtype))
            y = y + jnp.matmul(low, self.lora_b[...].astype(self.dtype)) * jnp.asarray(self.lora_scale, self.dtype)
        return checkpoint_name(y, "linear_out")  # what the 'save_linear' remat policy keeps


class Embedding(nnx.Module):
    def __init__(self, vocab_size: int, dim: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.table = nnx.Param(
            INIT_STD * jax.random.normal(rngs.params(), (vocab_size, dim), param_dtype), axes=("vocab", "embed")
        )

    def __call__(self, tokens_bt: jax.Array, dtype) -> jax.Array:
        return jnp.take(self.table[...], tokens_bt, axis=0).astype(dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling_factor: float = 1.0) -> jax.Array:
    """Inverse frequencies, computed in float32 as Hugging Face does (linear scaling divides them)."""
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.int32).astype(jnp.float32) / head_dim
    return (1.0 / (jnp.float32(theta) ** exponents)) / jnp.float32(scaling_factor)


def rope_sin_cos(positions_bt: jax.Array, inv_freq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """sin, cos of shape [b, t, head_dim] in float32 (rotate-half layout)."""
    angles = positions_bt.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.sin(angles), jnp.cos(angles)


def apply_rope(x_btnh: jax.Array, sin_bth: jax.Array, cos_bth: jax.Array) -> jax.Array:
    """Rotate-half RoPE in float32; returns x's dtype."""
    x32 = x_btnh.astype(jnp.float32)
    half = x32.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    out = x32 * cos_bth[:, :, None, :] + rotated * sin_bth[:, :, None, :]
    return out.astype(x_btnh.dtype)
