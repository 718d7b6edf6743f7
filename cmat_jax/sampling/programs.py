"""The sampler's compiled programs: top-level jitted functions over (graphdef, state) and a KV cache.

`Sampler` (sampler.py) and `SlotSampler` (slots.py) call only these. Every program takes, besides its arrays:

- `spec`, a `ProgramSpec` (static): the model's structure and what the programs are compiled for (cache
  dtype, LoRA on or off, unrolled decode layers, the mesh). It is hashed by identity: each Sampler owns one,
  so its programs are its own and `spec.trace_counts` counts exactly its traces (one per compilation;
  `Sampler.num_compiles`).
- where a token is drawn, `operands`, a `PolicyOperands` pytree: the policy's temperature, top-k and top-p,
  the EOS ids and max new tokens are traced (new values compile nothing); the `PolicyMode` is static, part of
  the pytree's structure.
- where decoding starts, `rows`, a `RowStarts` pytree: each row's next position, whether it is a request,
  its PRNG key.

Programs trace under `activation_sharding(spec.mesh)`, so activations and the cache follow the mesh
(CACHE_AXES) whoever calls them. Programs that produce a new cache from an old one donate the old one, and
`decode` donates its state, so the cache is updated in place. `decode_program(options)` is the decode
program compiled with given XLA options (GPU_DECODE_XLA_OPTIONS on GPU by default; see docs/sampling.md).

Program names in `trace_counts`: prefill, decode (Sampler); slot_init, slot_repack (also the resize),
slot_shared, slot_append, slot_begin (slots).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from cmat_jax.models.config import ModelConfig
from cmat_jax.models.kv_cache import KVCache
from cmat_jax.sampling.policy import PolicyMode, PolicyValues, SamplingPolicy, draw, policy_log_probs
from cmat_jax.sharding import activation_sharding, constrain

# Finish codes kept on device; the host maps them to the result's strings.
RUNNING, EOS, LENGTH, STOPPED = 0, 1, 2, 3
FINISH_NAMES = {EOS: "eos", LENGTH: "length", STOPPED: "stop"}
CACHE_AXES = ("layers", "batch", "cache_seq", "act_kv_heads", None)

# XLA options of the decode program on GPU. A decode step reads every weight
# once, so any copy of the weights costs as much as the matmul that reads them
# (measured in docs/benchmarks.md, CodeLlama-7B batch 32: 20.0 -> 10.9 ms/step):
#  - Triton GEMM fusions cannot read a layer's slice of the stacked weights in
#    place, so the layer scan copied every weight out of the stack each step;
#    cuBLAS with dynamic-slice fusion reads the slice where it lies.
#  - The dot merger joins GEMMs that share an input (k and v) by concatenating
#    their weights: another copy per step.
GPU_DECODE_XLA_OPTIONS = {
    "xla_gpu_enable_triton_gemm": False,
    "xla_gpu_enable_dynamic_slice_fusion": True,
    "xla_disable_hlo_passes": "dot-merger",
}


def default_decode_xla_options(platform: str) -> Optional[dict]:
    """The decode program's XLA options on `platform` ('gpu', 'cpu', 'tpu'), or None for XLA's defaults."""
    return dict(GPU_DECODE_XLA_OPTIONS) if platform == "gpu" else None


@dataclasses.dataclass(frozen=True, eq=False)
class ProgramSpec:
    """What a sampler's programs are compiled for (a static argument, hashed by identity).

    JAX's jit caches (LRU, a few thousand entries) hold a spec and its executables until evicted, also after
    its Sampler is gone; a run builds its few Samplers once.
    """

    graphdef: nnx.GraphDef
    model_cfg: ModelConfig
    cache_dtype: Any
    pad_id: int
    use_lora: bool  # False samples the frozen base
    unroll_decode_layers: bool
    mesh: Optional[Mesh]
    trace_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PolicyOperands:
    """The policy operands of the programs that draw tokens."""

    policy: PolicyValues  # temperature, top-k, top-p (traced) and the mode (static)
    eos_e: jax.Array  # int32 ids that end a row, padded with -1
    max_new: jax.Array  # int32 scalar: max new tokens

    @classmethod
    def of(cls, policy: SamplingPolicy, eos_e: np.ndarray) -> "PolicyOperands":
        return cls(policy.values(), jnp.asarray(eos_e), jnp.asarray(policy.max_new_tokens, jnp.int32))

    @property
    def mode(self) -> PolicyMode:
        return self.policy.mode


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RowStarts:
    """Per cache row, where decoding starts."""

    next_pos_b: Any  # int32: the position of the first generated token
    active_b: Any  # bool: a request (padding rows start finished)
    row_keys_b: jax.Array  # typed PRNG key per row


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
    cache: KVCache
    tokens_bg: jax.Array  # generated ids, column i = step i
    logprobs_bg: jax.Array
    last_token_b: jax.Array  # the token fed at the next step
    next_pos_b: jax.Array  # its position
    done_b: jax.Array
    length_b: jax.Array  # tokens generated so far (final once done)
    reason_b: jax.Array  # RUNNING / EOS / LENGTH / STOPPED
    row_keys_b: jax.Array  # typed PRNG key per row
    step: jax.Array  # int32 scalar: columns [0, step) are written


# -- building blocks (traced inside the programs) ------------------------------


def model_forward(spec: ProgramSpec, state, tokens_bt, positions_bt, segments_bt, cache: KVCache, *,
                  unroll_layers: bool = False) -> tuple[jax.Array, KVCache]:
    """Float32 logits [b, v] of each row's last slot, and the cache with the new slots written at its end."""
    model = nnx.merge(spec.graphdef, state)
    h_btd, cache = model.hidden_states(tokens_bt, positions_bt, segments_bt, cache, use_lora=spec.use_lora,
                                       unroll_layers=unroll_layers and tokens_bt.shape[1] == 1)
    cache = dataclasses.replace(cache, k_lbskh=constrain(cache.k_lbskh, CACHE_AXES),
                                v_lbskh=constrain(cache.v_lbskh, CACHE_AXES))
    return model.logits(h_btd[:, -1:])[:, 0], cache


def left_padding(lengths_b, width: int) -> tuple[jax.Array, jax.Array]:
    """(segments, positions) [b, width] of rows left-padded to `width`: the last lengths_b[r] slots of row r
    are segment 1 with positions 0, 1, ...; padding is segment 0 at position 0."""
    segments_bp = (jnp.arange(width)[None, :] >= (width - lengths_b)[:, None]).astype(jnp.int32)
    positions_bp = jnp.maximum(jnp.cumsum(segments_bp, axis=1) - 1, 0)
    return segments_bp, positions_bp


def initial_state(cache: KVCache, new_bucket: int, rows: RowStarts, pad_id: int) -> DecodeState:
    """A decode state before its first token: inactive rows start finished."""
    b = rows.active_b.shape[0]
    return DecodeState(
        cache=cache,
        tokens_bg=jnp.full((b, new_bucket), pad_id, jnp.int32),
        logprobs_bg=jnp.zeros((b, new_bucket), jnp.float32),
        last_token_b=jnp.full((b,), pad_id, jnp.int32),
        next_pos_b=jnp.asarray(rows.next_pos_b, jnp.int32),
        done_b=~jnp.asarray(rows.active_b),
        length_b=jnp.zeros((b,), jnp.int32),
        reason_b=jnp.zeros((b,), jnp.int32),
        row_keys_b=rows.row_keys_b,
        step=jnp.zeros((), jnp.int32),
    )


def sample_step(ds: DecodeState, logits_bv, operands: PolicyOperands, pad_id: int) -> DecodeState:
    """Draws one token per row from `logits_bv` and records it for running rows."""
    keys_b = jax.vmap(jax.random.fold_in, in_axes=(0, None))(ds.row_keys_b, ds.step)
    log_probs_bv = policy_log_probs(logits_bv, operands.policy)
    token_b, log_prob_b = draw(log_probs_bv, logits_bv, keys_b, operands.mode)
    running_b = ~ds.done_b
    column = (0, ds.step)
    tokens_bg = jax.lax.dynamic_update_slice(ds.tokens_bg, jnp.where(running_b, token_b, pad_id)[:, None], column)
    logprobs_bg = jax.lax.dynamic_update_slice(
        ds.logprobs_bg, jnp.where(running_b, log_prob_b, 0.0)[:, None], column)
    count = ds.step + 1
    hit_eos_b = running_b & jnp.any(token_b[:, None] == operands.eos_e[None, :], axis=-1)
    hit_length_b = running_b & ~hit_eos_b & (count >= operands.max_new)
    return dataclasses.replace(
        ds,
        tokens_bg=tokens_bg,
        logprobs_bg=logprobs_bg,
        last_token_b=token_b,
        done_b=ds.done_b | hit_eos_b | hit_length_b,
        length_b=jnp.where(running_b, count, ds.length_b),
        reason_b=jnp.where(hit_eos_b, EOS, jnp.where(hit_length_b, LENGTH, ds.reason_b)),
        step=count,
    )


def _traced(name: str):
    """Counts each trace of the program in spec.trace_counts[name] and traces it on spec.mesh."""

    def wrap(fn):
        @functools.wraps(fn)
        def program(*args, spec: ProgramSpec, **kwargs):
            spec.trace_counts[name] += 1
            with activation_sharding(spec.mesh):
                return fn(*args, spec=spec, **kwargs)

        return program

    return wrap


# -- the Sampler's programs ----------------------------------------------------


@functools.partial(jax.jit, static_argnames=("spec", "cache_size", "new_bucket"))
@_traced("prefill")
def prefill(state, tokens_bp, rows: RowStarts, operands: PolicyOperands, *, spec: ProgramSpec, cache_size: int,
            new_bucket: int) -> DecodeState:
    """Prefills left-padded prompts (row r's length is rows.next_pos_b[r]) into a new cache of `cache_size`
    slots and draws each row's first token."""
    b, p = tokens_bp.shape
    segments_bp, positions_bp = left_padding(rows.next_pos_b, p)
    cache = KVCache.init(spec.model_cfg, b, cache_size, spec.cache_dtype)
    logits_bv, cache = model_forward(spec, state, tokens_bp, positions_bp, segments_bp, cache)
    ds = initial_state(cache, new_bucket, rows, spec.pad_id)
    return sample_step(ds, logits_bv, operands, spec.pad_id)


def _decode(state, ds: DecodeState, stopped_b, operands: PolicyOperands, chunk_end, *,
            spec: ProgramSpec) -> DecodeState:
    """Marks `stopped_b` rows finished, then runs decode steps until `min(chunk_end, max_new)` tokens or every
    row is done."""
    newly_b = stopped_b & ~ds.done_b
    ds = dataclasses.replace(ds, done_b=ds.done_b | stopped_b, reason_b=jnp.where(newly_b, STOPPED, ds.reason_b))
    limit = jnp.minimum(chunk_end, operands.max_new)

    def cond(ds):
        return (ds.step < limit) & ~jnp.all(ds.done_b)

    def body(ds):
        # Finished rows write segment 0: their slots stay masked, so a cache kept after this call
        # (sampling/slots.py) holds only the ids each row was fed.
        segments_b1 = (~ds.done_b).astype(jnp.int32)[:, None]
        logits_bv, cache = model_forward(spec, state, ds.last_token_b[:, None], ds.next_pos_b[:, None],
                                         segments_b1, ds.cache, unroll_layers=spec.unroll_decode_layers)
        ds = dataclasses.replace(ds, cache=cache, next_pos_b=ds.next_pos_b + 1)
        return sample_step(ds, logits_bv, operands, spec.pad_id)

    return jax.lax.while_loop(cond, body, ds)


_DECODE_PROGRAMS: dict = {}


def decode_program(xla_options: Optional[Mapping[str, Any]] = None):
    """The decode program `(state, ds, stopped_b, operands, chunk_end, *, spec) -> DecodeState` compiled with
    `xla_options` (None or {}: XLA's defaults); `ds` is donated. One jitted function per set of options."""
    key = tuple(sorted((xla_options or {}).items()))
    if key not in _DECODE_PROGRAMS:
        _DECODE_PROGRAMS[key] = jax.jit(_traced("decode")(_decode), static_argnames=("spec",),
                                        donate_argnames=("ds",), compiler_options=dict(key) or None)
    return _DECODE_PROGRAMS[key]


# -- the SlotSampler's programs ------------------------------------------------


@functools.partial(jax.jit, static_argnames=("spec", "rows", "slots"))
@_traced("slot_init")
def init_cache(*, spec: ProgramSpec, rows: int, slots: int) -> KVCache:
    """An empty cache of `rows` x `slots`, laid out on the mesh."""
    cache = KVCache.init(spec.model_cfg, rows, slots, spec.cache_dtype)
    return dataclasses.replace(cache, k_lbskh=constrain(cache.k_lbskh, CACHE_AXES),
                               v_lbskh=constrain(cache.v_lbskh, CACHE_AXES))


@_traced("slot_repack")
def _repack(cache: KVCache, source_b, keep_b, *, spec: ProgramSpec, slots: int) -> KVCache:
    """Row r of the result: the first keep_b[r] context slots of row source_b[r] (-1: none), at slots
    [0, keep_b[r])."""
    layers = spec.model_cfg.num_layers
    rows, size = source_b.shape[0], cache.size
    # Each row's context slots first, in timeline (= position) order; then the rest.
    order_bs = jnp.argsort(cache.segment_ids_bs == 0, axis=1, stable=True).astype(jnp.int32)
    row_r = jnp.maximum(source_b, 0)
    order_rs = order_bs[row_r]
    order_rs = order_rs[:, :slots] if slots <= size else jnp.pad(order_rs, ((0, 0), (0, slots - size)))
    kept_rs = (jnp.arange(slots)[None, :] < keep_b[:, None]) & (source_b[:, None] >= 0)
    in_place = (rows, slots) == tuple(cache.segment_ids_bs.shape)

    def gather(x_bskh):
        return jax.vmap(lambda x_skh, o_s: x_skh[o_s])(x_bskh[row_r], order_rs)

    def move(x_lbskh):
        if in_place:  # read each layer from the carry: layer l is still the old one when it is read
            out = jax.lax.fori_loop(0, layers, lambda l, y: y.at[l].set(gather(y[l])), x_lbskh)
        else:
            empty = jnp.zeros((layers, rows, slots) + x_lbskh.shape[3:], x_lbskh.dtype)
            out = jax.lax.fori_loop(0, layers, lambda l, y: y.at[l].set(gather(x_lbskh[l])), empty)
        return constrain(out, CACHE_AXES)

    return KVCache(move(cache.k_lbskh), move(cache.v_lbskh), kept_rs.astype(jnp.int32), jnp.zeros((), jnp.int32))


# Into a cache of the same shape, in place (the old cache is donated); `resize`: into one of another shape.
repack = jax.jit(_repack, static_argnames=("spec", "slots"), donate_argnames=("cache",))
resize = jax.jit(_repack, static_argnames=("spec", "slots"))


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnames=("cache",))
@_traced("slot_shared")
def shared_prefill(state, cache: KVCache, tokens_ut, lengths_u, members_gu, *,
                   spec: ProgramSpec) -> tuple[KVCache, jax.Array]:
    """Prefills one row per group from scratch (left-padded tokens_ut, lengths_u); copies its block (slots
    [0, t)) and its last logits to the rows of its members (members_gu[:, j]; index = rows marks none). The
    logits of other rows are 0."""
    cfg = spec.model_cfg
    u, t = tokens_ut.shape
    logits_bv = jnp.zeros((cache.segment_ids_bs.shape[0], cfg.vocab_size), jnp.float32)
    segments_ut, positions_ut = left_padding(lengths_u, t)
    block = KVCache.init(cfg, u, t, spec.cache_dtype)
    logits_uv, block = model_forward(spec, state, tokens_ut, positions_ut, segments_ut, block)
    k, v, segments_bs = cache.k_lbskh, cache.v_lbskh, cache.segment_ids_bs
    for rows_u in members_gu:  # one copy per member column; absent members (index = rows) are dropped
        k = k.at[:, rows_u, :t].set(block.k_lbskh, mode="drop")
        v = v.at[:, rows_u, :t].set(block.v_lbskh, mode="drop")
        segments_bs = segments_bs.at[rows_u, :t].set(block.segment_ids_bs, mode="drop")
        logits_bv = logits_bv.at[rows_u].set(logits_uv, mode="drop")
    cache = KVCache(constrain(k, CACHE_AXES), constrain(v, CACHE_AXES), segments_bs, cache.end_index)
    return cache, logits_bv


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AppendBlock:
    """Each row's new ids, left-padded to one width [b, t] (segment 0: no id)."""

    tokens_bt: Any
    positions_bt: Any
    segments_bt: Any


@functools.partial(jax.jit, static_argnames=("spec", "new_bucket"), donate_argnames=("cache",))
@_traced("slot_begin")
def begin(cache: KVCache, logits_bv, start, rows: RowStarts, operands: PolicyOperands, *, spec: ProgramSpec,
          new_bucket: int) -> DecodeState:
    """The decode state after each active row's first token (drawn from logits_bv); decoding writes from slot
    `start` on."""
    ds = initial_state(dataclasses.replace(cache, end_index=start), new_bucket, rows, spec.pad_id)
    return sample_step(ds, logits_bv, operands, spec.pad_id)


@functools.partial(jax.jit, static_argnames=("spec", "new_bucket"), donate_argnames=("cache",))
@_traced("slot_append")
def append(state, cache: KVCache, logits_bv, block: AppendBlock, start, rows: RowStarts,
           operands: PolicyOperands, *, spec: ProgramSpec, new_bucket: int) -> DecodeState:
    """Runs each row's new ids at slots [start, start + t), then draws the first tokens as `begin` does; rows
    without new ids take theirs from `logits_bv` (the shared prefill's; None when there was none)."""
    new_bv, cache = model_forward(spec, state, block.tokens_bt, block.positions_bt, block.segments_bt,
                                  dataclasses.replace(cache, end_index=start))
    if logits_bv is not None:
        new_bv = jnp.where((block.segments_bt[:, -1] != 0)[:, None], new_bv, logits_bv)
    ds = initial_state(cache, new_bucket, rows, spec.pad_id)
    return sample_step(ds, new_bv, operands, spec.pad_id)
