"""The decoder: Qwen2 / Llama / original Qwen, with stacked, scanned layers.

Parameters of the L decoder layers are stacked along a leading 'layers' axis
and run with `lax.scan`, so compile time does not grow with depth. Rematerial-
isation wraps the scanned layer with a named policy.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from cmat_jax.models import attention as attn_lib
from cmat_jax.models import decode_attention as decode_lib
from cmat_jax.models.config import ModelConfig
from cmat_jax.models.kv_cache import KVCache
from cmat_jax.models.layers import Embedding, Linear, RMSNorm, apply_rope, rope_inv_freq, rope_sin_cos
from cmat_jax.models.lora import LoRAConfig
from cmat_jax.sharding import constrain

REMAT_POLICIES = {
    "none": None,  # no rematerialisation
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # Saves each projection's output (base + LoRA summed) and the attention
    # output, recomputing only cheap elementwise work. The dots policies would
    # also keep every LoRA up-projection's output, doubling activation memory.
    "save_linear": jax.checkpoint_policies.save_only_these_names("linear_out", "attn_out"),
}


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, lora, dtype, param_dtype, impl: str, decode_impl: str,
                 rngs: nnx.Rngs):
        d, h = cfg.hidden_size, cfg.head_dim
        common = dict(lora=lora, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q = Linear(d, cfg.num_heads * h, ("embed", "q_heads"), name="q", use_bias=cfg.qkv_bias, **common)
        self.k = Linear(d, cfg.num_kv_heads * h, ("embed", "kv_heads"), name="k", use_bias=cfg.qkv_bias, **common)
        self.v = Linear(d, cfg.num_kv_heads * h, ("embed", "kv_heads"), name="v", use_bias=cfg.qkv_bias, **common)
        self.o = Linear(cfg.num_heads * h, d, ("q_heads", "embed"), name="o", **common)
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, h
        self.impl = impl
        self.decode_impl = decode_impl

    def __call__(self, x_btd, sin_bth, cos_bth, mask_bts, kv, write_index, *, use_lora, keys):
        b, t, _ = x_btd.shape
        q_btnh = self.q(x_btd, use_lora=use_lora, dropout_key=keys[0]).reshape(b, t, self.num_heads, self.head_dim)
        k_btkh = self.k(x_btd, use_lora=use_lora, dropout_key=keys[1]).reshape(b, t, self.num_kv_heads, self.head_dim)
        v_btkh = self.v(x_btd, use_lora=use_lora, dropout_key=keys[2]).reshape(b, t, self.num_kv_heads, self.head_dim)
        q_btnh = constrain(apply_rope(q_btnh, sin_bth, cos_bth), ("batch", "seq", "act_heads", None))
        k_btkh = constrain(apply_rope(k_btkh, sin_bth, cos_bth), ("batch", "seq", "act_kv_heads", None))
        v_btkh = constrain(v_btkh, ("batch", "seq", "act_kv_heads", None))
        impl = self.impl
        if kv is None:
            k_bskh, v_bskh, new_kv = k_btkh, v_btkh, None
        else:
            # The whole stacked cache is updated in place at (layer, :, write_index):
            # only the new slots are written, never a copy of a layer's cache.
            k_cache, v_cache, layer = kv
            start = (layer, 0, write_index, 0, 0)
            k_cache = jax.lax.dynamic_update_slice(k_cache, k_btkh[None].astype(k_cache.dtype), start)
            v_cache = jax.lax.dynamic_update_slice(v_cache, v_btkh[None].astype(v_cache.dtype), start)
            new_kv = (k_cache, v_cache)
        if kv is not None and t == 1 and self.decode_impl == "pallas":
            # Reads the stacked cache in place at `layer`, so XLA has no layer slice to relayout (the einsums
            # of a grouped-query slice make it transpose the whole cache); interpreted off GPU.
            out_btnh = decode_lib.decode_attention(q_btnh, k_cache, v_cache, layer, mask_bts,
                                                   interpret=jax.default_backend() != "gpu")
        else:
            if kv is not None:
                k_bskh = jax.lax.dynamic_index_in_dim(k_cache, layer, keepdims=False).astype(q_btnh.dtype)
                v_bskh = jax.lax.dynamic_index_in_dim(v_cache, layer, keepdims=False).astype(q_btnh.dtype)
                if t == 1:
                    impl = "xla"  # one query per row: a fused kernel has nothing to tile
            out_btnh = attn_lib.dot_product_attention(q_btnh, k_bskh, v_bskh, mask_bts, impl)
        out_btnh = checkpoint_name(out_btnh, "attn_out")
        out_btd = self.o(out_btnh.reshape(b, t, -1), use_lora=use_lora, dropout_key=keys[3])
        return out_btd, new_kv


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, lora, dtype, param_dtype, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        common = dict(lora=lora, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate = Linear(d, f, ("embed", "mlp"), name="gate", **common)
        self.up = Linear(d, f, ("embed", "mlp"), name="up", **common)
        self.down = Linear(f, d, ("mlp", "embed"), name="down", **common)

    def __call__(self, x_btd, *, use_lora, keys):
        gate_btf = self.gate(x_btd, use_lora=use_lora, dropout_key=keys[0])
        up_btf = self.up(x_btd, use_lora=use_lora, dropout_key=keys[1])
        h_btf = constrain(jax.nn.silu(gate_btf) * up_btf, ("batch", "seq", "act_mlp"))
        return self.down(h_btf, use_lora=use_lora, dropout_key=keys[2])


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, lora, dtype, param_dtype, impl, decode_impl, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.attn = Attention(cfg, lora=lora, dtype=dtype, param_dtype=param_dtype, impl=impl,
                              decode_impl=decode_impl, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.mlp = MLP(cfg, lora=lora, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x_btd, sin_bth, cos_bth, mask_bts, kv, write_index, *, use_lora, dropout_key):
        keys = [None] * 7 if dropout_key is None else list(jax.random.split(dropout_key, 7))
        attn_out, new_kv = self.attn(self.attn_norm(x_btd), sin_bth, cos_bth, mask_bts, kv, write_index,
                                     use_lora=use_lora, keys=keys[:4])
        x_btd = x_btd + attn_out
        mlp_out = self.mlp(self.mlp_norm(x_btd), use_lora=use_lora, keys=keys[4:])
        x_btd = x_btd + mlp_out
        return constrain(x_btd, ("batch", "seq", "act_embed")), new_kv


def _stack_layer_axes(module: nnx.Module) -> None:
    """Records the leading 'layers' axis that vmap-stacking added to every variable."""
    for _, var in nnx.iter_graph(module):
        if isinstance(var, nnx.Variable) and "axes" in var.get_metadata():
            var.set_metadata("axes", ("layers",) + tuple(var.get_metadata()["axes"]))


class Transformer(nnx.Module):
    """Decoder-only language model.

    Args:
      cfg: the model's shape and math.
      lora: LoRA settings, or None for no adapters.
      dtype: compute dtype of activations and matmuls (norms, softmax, RoPE and
        logits are always float32).
      param_dtype: storage dtype of parameters.
      remat: rematerialisation policy of a layer, a key of REMAT_POLICIES.
      attention_impl: 'xla' (exact), 'cudnn' (fused GPU kernel) or 'auto'.
      decode_attention: attention of one-token steps with a cache: 'xla' (attention_impl's exact path on the
        layer's cache slice) or 'pallas' (models/decode_attention.py: reads the stacked cache in place).
    """

    def __init__(self, cfg: ModelConfig, *, lora: Optional[LoRAConfig] = None, dtype=jnp.float32,
                 param_dtype=jnp.float32, remat: str = "none", attention_impl: str = "auto",
                 decode_attention: str = "xla", rngs: nnx.Rngs):
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat policy {remat!r} is unknown; choose from {', '.join(REMAT_POLICIES)}")
        if decode_attention not in decode_lib.DECODE_ATTENTION_IMPLS:
            raise ValueError(f"decode_attention {decode_attention!r} is unknown; choose from "
                             f"{', '.join(decode_lib.DECODE_ATTENTION_IMPLS)}")
        self.cfg = cfg
        self.lora_config = lora
        self.dtype = dtype
        self.remat = remat
        impl = attn_lib.resolve_impl(attention_impl, dtype)
        self.embed = Embedding(cfg.vocab_size, cfg.hidden_size, param_dtype=param_dtype, rngs=rngs)

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(rngs: nnx.Rngs):
            return Block(cfg, lora=lora, dtype=dtype, param_dtype=param_dtype, impl=impl,
                         decode_impl=decode_attention, rngs=rngs)

        self.blocks = make_blocks(rngs)
        _stack_layer_axes(self.blocks)
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(
            cfg.hidden_size, cfg.vocab_size, ("embed", "vocab"), name="lm_head", dtype=dtype,
            param_dtype=param_dtype, rngs=rngs,
        )

    # -- forward ---------------------------------------------------------

    def hidden_states(self, tokens_bt, positions_bt=None, segment_ids_bt=None, cache: Optional[KVCache] = None,
                      *, use_lora: bool = True, dropout_key=None, collect_layers: bool = False,
                      unroll_layers: bool = False):
        """Final-normed hidden states [b, t, d] and the updated cache (or None).

        positions_bt defaults to 0..t-1 (after the cache's written slots);
        segment_ids_bt defaults to all ones. Segment 0 marks padding. With
        `collect_layers`, a third result holds every layer's output [l, b, t, d]
        (for locating where two implementations diverge).

        `unroll_layers` runs the layers as a Python loop over static slices of
        the stacked weights instead of `lax.scan`: same math, a longer compile;
        for decode steps see SamplerConfig.unroll_decode_layers.
        """
        t = tokens_bt.shape[1]
        write_index, kv_segment_bs, mask_bts, sin_bth, cos_bth = self._attention_inputs(
            tokens_bt, positions_bt, segment_ids_bt, cache)
        x_btd = constrain(self.embed(tokens_bt, self.dtype), ("batch", "seq", "act_embed"))
        graphdef, layer_state = nnx.split(self.blocks)
        layer_keys = (None if dropout_key is None
                      else jax.random.split(dropout_key, self.cfg.num_layers))

        def layer(carry, xs):
            x_btd, kv = carry
            state, index, key = xs
            block = nnx.merge(graphdef, state)
            x_btd, kv = block(x_btd, sin_bth, cos_bth, mask_bts, None if kv is None else (*kv, index),
                              write_index, use_lora=use_lora, dropout_key=key)
            return (x_btd, kv), (x_btd if collect_layers else None)

        policy = REMAT_POLICIES[self.remat]
        if self.remat != "none":
            layer = jax.checkpoint(layer, policy=policy, prevent_cse=False)
        kv = None if cache is None else (cache.k_lbskh, cache.v_lbskh)
        if unroll_layers:
            outputs = []
            for i in range(self.cfg.num_layers):
                xs = jax.tree.map(lambda a: a[i], (layer_state, layer_keys))
                (x_btd, kv), out = layer((x_btd, kv), (xs[0], i, xs[1]))
                outputs.append(out)
            new_kv = kv
            layers_lbtd = jnp.stack(outputs) if collect_layers else None
        else:
            layer_index = jnp.arange(self.cfg.num_layers, dtype=jnp.int32)
            (x_btd, new_kv), layers_lbtd = jax.lax.scan(layer, (x_btd, kv), (layer_state, layer_index, layer_keys))
        h_btd = self.final_norm(x_btd)
        new_cache = None if cache is None else KVCache(
            k_lbskh=new_kv[0], v_lbskh=new_kv[1], segment_ids_bs=kv_segment_bs, end_index=write_index + t
        )
        return (h_btd, new_cache, layers_lbtd) if collect_layers else (h_btd, new_cache)

    def _attention_inputs(self, tokens_bt, positions_bt, segment_ids_bt, cache: Optional[KVCache]):
        """What every layer of one hidden_states call shares: the cache's write index, the key slots' segment
        ids [b, s] (the cache's, with this call's written in), the attention mask [b, t, s] and RoPE's sin/cos
        [b, t, h], with hidden_states' defaults for positions and segment ids."""
        b, t = tokens_bt.shape
        write_index = jnp.zeros((), jnp.int32) if cache is None else cache.end_index
        if positions_bt is None:
            positions_bt = jnp.broadcast_to(write_index + jnp.arange(t, dtype=jnp.int32), (b, t))
        if segment_ids_bt is None:
            segment_ids_bt = jnp.ones((b, t), jnp.int32)
        self.cfg.check_length(t if cache is None else cache.size)

        q_slot_bt = jnp.broadcast_to(write_index + jnp.arange(t, dtype=jnp.int32), (b, t))
        if cache is None:
            kv_segment_bs = segment_ids_bt
        else:
            kv_segment_bs = jax.lax.dynamic_update_slice(cache.segment_ids_bs, segment_ids_bt.astype(jnp.int32),
                                                         (0, write_index))
        mask_bts = attn_lib.attention_mask(segment_ids_bt, q_slot_bt, kv_segment_bs)
        inv_freq = rope_inv_freq(self.cfg.head_dim, self.cfg.rope_theta, self.cfg.rope_scaling_factor)
        sin_bth, cos_bth = rope_sin_cos(positions_bt, inv_freq)
        return write_index, kv_segment_bs, mask_bts, sin_bth, cos_bth

    def output_kernel(self) -> jax.Array:
        """The [d, v] output projection (the embedding table's transpose when tied)."""
        if self.lm_head is None:
            return self.embed.table[...].T
        return self.lm_head.kernel[...]

    def logits(self, h_btd: jax.Array) -> jax.Array:
        """Float32 logits [b, t, v] from hidden states."""
        logits = jnp.einsum("btd,dv->btv", h_btd, self.output_kernel().astype(h_btd.dtype),
                            preferred_element_type=jnp.float32)
        return constrain(logits, ("batch", "seq", "act_vocab"))

    def __call__(self, tokens_bt, positions_bt=None, segment_ids_bt=None, cache: Optional[KVCache] = None,
                 *, use_lora: bool = True, dropout_key=None, unroll_layers: bool = False):
        """Logits [b, t, v] (float32) and the updated cache (None without one)."""
        h_btd, new_cache = self.hidden_states(tokens_bt, positions_bt, segment_ids_bt, cache,
                                              use_lora=use_lora, dropout_key=dropout_key,
                                              unroll_layers=unroll_layers)
        return self.logits(h_btd), new_cache
