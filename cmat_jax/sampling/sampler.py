"""Batched generation: a jit-compiled prefill and an on-device decode loop.

The model runs as pure functions of (graphdef, state). A call left-pads its
prompts into a bucket length, pads the batch to a bucket size, prefills the KV
cache in one program, then decodes inside `lax.while_loop`, which leaves as soon
as every row has finished. The decode state (KV cache included) is donated, so
each decode call updates it in place.

Stop strings are checked on the host: with stop strings, decoding runs in chunks
of `stop_check_interval` steps; between chunks the new text of every unfinished
row is detokenized and rows that produced a stop string are marked finished.
Without stop strings the whole decode is one device call.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from cmat_jax.distributed import host_values  # device_get that also gathers arrays spanning other processes
from cmat_jax.models.kv_cache import KVCache
from cmat_jax.sampling import buckets as bucket_lib
from cmat_jax.sampling import stops as stop_lib
from cmat_jax.sampling.policy import PolicyMode, SamplingParams, draw, policy_log_probs
from cmat_jax.sharding import activation_sharding, constrain, state_shardings

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


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Run settings of a Sampler.

    Buckets set to None mean powers of two (at least the matching minimum).
    `max_batch` splits larger calls into passes of at most that many rows.
    `max_len` caps prompt + new tokens (default: the model's context).
    """

    prompt_buckets: Optional[Sequence[int]] = None
    min_prompt_bucket: int = 16
    batch_buckets: Optional[Sequence[int]] = None
    max_batch: Optional[int] = None
    new_token_buckets: Optional[Sequence[int]] = None
    min_new_token_bucket: int = 16
    stop_check_interval: int = 16
    max_len: Optional[int] = None
    cache_dtype: Optional[jnp.dtype] = None  # default: the model's compute dtype
    use_lora: bool = True  # False samples the frozen base (the reference policy)
    # Decode steps run the layers as an unrolled loop over static weight slices
    # instead of a scan (see Transformer.hidden_states). Measured on one H100
    # (docs/benchmarks.md): 10-45% faster steps, ~6 s longer decode compile, and
    # more device memory (CodeLlama-7B at batch 128 fits scanned, not unrolled).
    unroll_decode_layers: bool = False
    # XLA compiler options of the decode program; None = GPU_DECODE_XLA_OPTIONS
    # on GPU and none elsewhere, {} = XLA's defaults everywhere.
    decode_xla_options: Optional[Mapping[str, Any]] = None
    pad_id: int = 0
    # Synchronise after each prefill and record a PhaseTime per pass in Sampler.phase_times (benchmarks);
    # off, prefill and decode are dispatched back to back.
    time_phases: bool = False

    def __post_init__(self):
        for name in ("min_prompt_bucket", "min_new_token_bucket", "stop_check_interval"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SamplerConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.max_batch is not None and (not isinstance(self.max_batch, int) or self.max_batch < 1):
            raise ValueError(f"SamplerConfig.max_batch must be a positive int or None, got {self.max_batch!r}")
        for name in ("prompt_buckets", "batch_buckets", "new_token_buckets"):
            bucket_lib.check_buckets(getattr(self, name), f"SamplerConfig.{name}")


@dataclasses.dataclass
class GenerateResult:
    """Per row, in prompt order.

    token_ids: generated ids. They end with the EOS token for 'eos' rows, and with
      the token that completed the stop string for 'stop' rows.
    logprobs: float32 log-probability of each generated token under the sampling
      policy that drew it (see policy.py); plain log-softmax when greedy.
    finish_reasons: 'eos' | 'stop' | 'length'.
    texts: with a tokenizer, the detokenized generation: cut right before the
      stop string for 'stop' rows, without the EOS token for 'eos' rows.
    stop_strings: the stop string that ended each 'stop' row, else None.
    """

    token_ids: list[list[int]]
    logprobs: list[np.ndarray]
    finish_reasons: list[str]
    texts: Optional[list[str]] = None
    stop_strings: Optional[list[Optional[str]]] = None


@dataclasses.dataclass
class PhaseTime:
    """One pass of a generate call (SamplerConfig.time_phases): the device is synchronised after the prefill."""

    prefill_s: float  # building the cache up to the first sampled token (for slots: repack and appends too)
    decode_s: float  # the decode loop and reading the results back
    rows: int  # requests in the pass (padding rows excluded)
    prefill_tokens: int  # ids run through the model before decoding (padding excluded)
    cache_slots: int  # the KV cache's length


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


@dataclasses.dataclass
class _Programs:
    graphdef: nnx.GraphDef
    prefill: Callable
    decode: Callable


@dataclasses.dataclass
class PreparedCall:
    """A checked generate call: what its passes need."""

    params: SamplingParams
    prompts: list[list[int]]
    stops: tuple
    detokenize: Optional[Callable]
    eos: np.ndarray
    row_keys: jax.Array  # one typed key per prompt
    state: nnx.State  # the weights, placed on the mesh
    programs: "_Programs"


class Sampler:
    """Generates from an nnx Transformer (with or without LoRA, merged or not).

    The Sampler keeps the model's structure (its graph definition), never its
    weights: every `generate` call takes the weights to sample with. A training
    step that donates the adapters therefore cannot leave a Sampler holding
    freed buffers; the caller passes the state the update returned. With `mesh`,
    the weights are placed by the project's sharding rules (a no-op when they
    already are, e.g. the training state) and activations are constrained to the
    mesh.

    `trace_counts` counts traces of the prefill and decode programs (each trace
    is one compilation); `num_compiles` is their sum.
    """

    def __init__(self, model: nnx.Module, config: SamplerConfig = SamplerConfig(), *, mesh: Optional[Mesh] = None):
        self.graphdef = nnx.graphdef(model)  # structure only: the weights come with each call
        self.dtype = model.dtype
        self.config = config
        self.mesh = mesh
        self.model_cfg = model.cfg
        self.trace_counts: collections.Counter = collections.Counter()
        self.cache_dtype = config.cache_dtype or self.dtype
        self.phase_times: list[PhaseTime] = []  # with config.time_phases: one entry per pass
        self._programs: Optional[_Programs] = None
        self._prompt_buckets = bucket_lib.check_buckets(config.prompt_buckets, "prompt_buckets")
        self._batch_buckets = bucket_lib.check_buckets(config.batch_buckets, "batch_buckets")
        self._new_buckets = bucket_lib.check_buckets(config.new_token_buckets, "new_token_buckets")
        context = self.model_cfg.context_limit or self.model_cfg.max_position_embeddings
        if config.max_len is not None and config.max_len > context:
            raise ValueError(f"SamplerConfig.max_len={config.max_len} exceeds the model's context of {context} "
                             "positions; lower it or leave it None")
        self.max_len = config.max_len or context
        self.max_batch = config.max_batch or (self._batch_buckets[-1] if self._batch_buckets else None)

    @property
    def num_compiles(self) -> int:
        return sum(self.trace_counts.values())

    # -- public API -------------------------------------------------------

    def generate(self, weights, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, key=None,
                 temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 eos_ids: Optional[Sequence[int]] = None, stop_strings: Sequence[str] = (),
                 tokenizer=None) -> GenerateResult:
        """Generates up to `max_new_tokens` for every prompt.

        weights: the weights to sample with: an nnx.State of a model with this
          Sampler's structure, a tuple of States that together make one (e.g.
          `(lora, frozen)` as the trainer holds them), or the model itself.
        key: a jax PRNG key (required unless temperature == 0), or one key per
          prompt (shape [len(prompts)]). Row i draws with its own key (fold_in(key,
          i) for a single key) and step s with fold_in(that, s), so a row's sample
          does not depend on how the batch was padded or split, and rows given
          their own keys draw the same whatever other rows share the call.
        eos_ids: ids that end a row (kept as its last token); None = the model's
          eos_token_id, () = none.
        stop_strings: end a row when its text contains one; needs `tokenizer`
          (an object with .decode(ids), or a callable ids -> str).
        """
        call = self.prepare(weights, prompts, max_new_tokens, key=key, temperature=temperature, top_k=top_k,
                            top_p=top_p, eos_ids=eos_ids, stop_strings=stop_strings, tokenizer=tokenizer)
        n = len(call.prompts)
        step = self.max_batch or n
        parts = [
            self._generate_group(call.programs, call.state, call.prompts[i:i + step], call.row_keys[i:i + step],
                                 max_new_tokens, call.params, call.eos, call.stops, call.detokenize)
            for i in range(0, n, step)
        ]
        result = GenerateResult([], [], [], [] if call.detokenize else None, [] if call.detokenize else None)
        for part in parts:
            result.token_ids += part.token_ids
            result.logprobs += part.logprobs
            result.finish_reasons += part.finish_reasons
            if call.detokenize:
                result.texts += part.texts
                result.stop_strings += part.stop_strings
        return result

    def prepare(self, weights, prompts, max_new_tokens, *, key, temperature, top_k, top_p, eos_ids, stop_strings,
                tokenizer) -> "PreparedCall":
        """Checks a generate call's arguments (see `generate`) and gathers what its passes need; compiles nothing."""
        params = SamplingParams(temperature, top_k, top_p)
        prompts = self._check_prompts(prompts, max_new_tokens)
        stops = stop_lib.check_stop_strings(stop_strings)
        detokenize = stop_lib.as_detokenize(tokenizer)
        if stops and detokenize is None:
            raise ValueError("stop_strings need a tokenizer (an object with .decode(ids) or a callable ids -> str)")
        eos = self._eos_ids(eos_ids)
        if params.mode.greedy:
            key = jax.random.key(0)  # unused by argmax
        elif key is None:
            raise ValueError(f"sampling with temperature {temperature} needs key=jax.random.key(seed); "
                             "use temperature=0 for greedy decoding")
        row_keys = _row_keys(_typed_key(key, len(prompts)), len(prompts))

        state = self._weights_state(weights)
        programs = self._programs_for(self.graphdef)
        if self.mesh is not None:
            state = jax.device_put(state, state_shardings(state, self.mesh))
        return PreparedCall(params, prompts, stops, detokenize, eos, row_keys, state, programs)

    # -- validation -------------------------------------------------------

    def _weights_state(self, weights) -> nnx.State:
        if isinstance(weights, nnx.Module):
            graphdef, state = nnx.split(weights)
            if graphdef != self.graphdef:
                raise ValueError("the model passed to generate has another structure than the one this Sampler "
                                 "was built for; build a Sampler for it")
        elif isinstance(weights, nnx.State):
            state = weights
        elif isinstance(weights, (tuple, list)) and weights and all(isinstance(w, nnx.State) for w in weights):
            state = nnx.merge_state(*weights)
        else:
            raise TypeError(f"generate's first argument must be the weights to sample with (an nnx.State, a tuple "
                            f"of States such as (lora, frozen), or the model), found {type(weights).__name__}")
        if any(isinstance(x, jax.Array) and x.is_deleted() for x in jax.tree.leaves(state)):
            raise ValueError("some of the weights passed to generate were donated to (and freed by) a training "
                             "step; pass the state that the step returned")
        return state

    def _check_prompts(self, prompts, max_new_tokens) -> list[list[int]]:
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
            prompts = prompts.tolist()
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError("prompts must be a non-empty list of token-id lists")
        vocab = self.model_cfg.vocab_size
        out = []
        for i, p in enumerate(prompts):
            if isinstance(p, (str, bytes)) or not hasattr(p, "__len__"):
                raise TypeError(f"prompt {i} must be a list of token ids, got {type(p).__name__}; tokenize it first")
            ids = [int(t) for t in p]
            if not ids:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token (e.g. BOS)")
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise ValueError(f"prompt {i} holds token id {bad[0]} outside the model's vocabulary [0, {vocab})")
            if len(ids) + max_new_tokens > self.max_len:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens; with max_new_tokens={max_new_tokens} it needs "
                    f"{len(ids) + max_new_tokens} positions, but the sampler allows {self.max_len} "
                    "(SamplerConfig.max_len, else the model's context). Shorten the prompt or ask for fewer tokens."
                )
            out.append(ids)
        longest = max(len(p) for p in out)
        bucket_lib.pick_bucket(longest, self._prompt_buckets, minimum=1, name="prompt length")
        bucket_lib.pick_bucket(max_new_tokens, self._new_buckets, minimum=1, name="max_new_tokens")
        return out

    def _eos_ids(self, eos_ids) -> np.ndarray:
        if eos_ids is None:
            eos_ids = () if self.model_cfg.eos_token_id is None else self.model_cfg.eos_token_id
        if isinstance(eos_ids, (int, np.integer)):
            eos_ids = (eos_ids,)
        ids = [int(e) for e in eos_ids]
        bad = [e for e in ids if not 0 <= e < self.model_cfg.vocab_size]
        if bad:
            raise ValueError(f"eos id {bad[0]} is outside the model's vocabulary [0, {self.model_cfg.vocab_size})")
        # Padded with -1 to a power of two so new EOS lists rarely change the program.
        out = np.full(bucket_lib.next_power_of_two(max(len(ids), 4)), -1, np.int32)
        out[: len(ids)] = ids
        return out

    # -- one pass over at most max_batch rows --------------------------------

    def _shapes(self, batch: int, longest: int, max_new: int) -> tuple[int, int, int, int]:
        """(batch bucket, prompt bucket, new-token bucket, cache size)."""
        cfg = self.config
        b = bucket_lib.pick_bucket(batch, self._batch_buckets, minimum=1, name="batch size")
        p = bucket_lib.pick_bucket(longest, self._prompt_buckets, minimum=cfg.min_prompt_bucket, name="prompt length")
        n = bucket_lib.pick_bucket(max_new, self._new_buckets, minimum=cfg.min_new_token_bucket, name="max_new_tokens")
        size = p + n
        limit = self.model_cfg.context_limit
        if limit is not None and size > limit:
            # The model refuses caches past its context; fit exactly (validated above).
            size = limit
            p = min(p, limit - max_new)
        return b, p, n, size

    def _generate_group(self, programs, state, prompts, row_keys, max_new, params, eos, stops,
                        detokenize) -> GenerateResult:
        cfg = self.config
        rows = len(prompts)
        b, p, n, cache_size = self._shapes(rows, max(len(x) for x in prompts), max_new)
        tokens_bp = np.full((b, p), cfg.pad_id, np.int32)
        lengths_b = np.ones((b,), np.int32)  # padding rows hold one pad token
        for r, ids in enumerate(prompts):
            tokens_bp[r, p - len(ids):] = ids
            lengths_b[r] = len(ids)
        active_b = np.arange(b) < rows
        row_keys_b = pad_row_keys(row_keys, b)
        policy = policy_operands(params, eos, max_new)

        timer = PhaseTimer(self)
        with activation_sharding(self.mesh):
            ds = programs.prefill(state, tokens_bp, lengths_b, active_b, row_keys_b, *policy,
                                  cache_size=cache_size, new_bucket=n, mode=params.mode)
            timer.prefilled(ds, rows, sum(len(x) for x in prompts), cache_size)
            ds, stop_at = self.decode(programs, state, ds, rows, max_new, params, policy, stops, detokenize)
        result = self.result(ds, rows, stop_at, stops, detokenize)
        timer.decoded()
        return result

    def decode(self, programs, state, ds: DecodeState, rows: int, max_new: int, params: SamplingParams, policy,
               stops, detokenize) -> tuple[DecodeState, dict[int, tuple[int, int]]]:
        """Runs the decode program on `ds` (rows [0, rows) are requests) to the end: in one call without stop
        strings, else in chunks with host stop checks between them. Returns the final state and, for rows a stop
        string ended, (kept token count, text cut)."""
        stop_at: dict[int, tuple[int, int]] = {}
        b = ds.done_b.shape[0]
        if not stops:
            ds = programs.decode(state, ds, np.zeros((b,), bool), *policy, jnp.asarray(max_new, jnp.int32),
                                 mode=params.mode)
            return ds, stop_at
        checked = [0] * rows  # per row: tokens whose text is known to hold no stop string
        while True:
            tokens_bg, done_b, length_b, reason_b, step = host_values(
                (ds.tokens_bg, ds.done_b, ds.length_b, ds.reason_b, ds.step))
            stopped_b = _find_stops(tokens_bg, done_b, length_b, reason_b, step, rows, checked, stop_at,
                                    stops, detokenize)
            if np.all((done_b | stopped_b)[:rows]) or step >= max_new:
                return ds, stop_at
            chunk_end = jnp.asarray(step + self.config.stop_check_interval, jnp.int32)
            ds = programs.decode(state, ds, stopped_b, *policy, chunk_end, mode=params.mode)

    @staticmethod
    def result(ds: DecodeState, rows: int, stop_at: dict[int, tuple[int, int]], stops,
               detokenize) -> GenerateResult:
        """The GenerateResult of rows [0, rows) of a finished decode state."""
        tokens_bg, logprobs_bg, length_b, reason_b = host_values(
            (ds.tokens_bg, ds.logprobs_bg, ds.length_b, ds.reason_b))
        out = GenerateResult([], [], [], [] if detokenize else None, [] if detokenize else None)
        for r in range(rows):
            if r in stop_at:
                count, cut = stop_at[r]
                reason = "stop"
            else:
                count, cut = int(length_b[r]), None
                reason = FINISH_NAMES[int(reason_b[r])]
            ids = tokens_bg[r, :count].tolist()
            out.token_ids.append(ids)
            out.logprobs.append(np.asarray(logprobs_bg[r, :count], np.float32))
            out.finish_reasons.append(reason)
            if detokenize:
                if reason == "stop":
                    text = detokenize(ids)
                    out.texts.append(text[:cut])
                    out.stop_strings.append(min((s for s in stops if text.find(s) == cut), key=len))
                else:
                    out.texts.append(detokenize(ids[:-1] if reason == "eos" else ids))
                    out.stop_strings.append(None)
        return out

    # -- compiled programs ------------------------------------------------

    def _programs_for(self, graphdef) -> _Programs:
        if self._programs is None or self._programs.graphdef != graphdef:
            self._programs = self._build_programs(graphdef)
        return self._programs

    def _build_programs(self, graphdef) -> _Programs:
        model_cfg, use_lora = self.model_cfg, self.config.use_lora
        unroll_decode = self.config.unroll_decode_layers
        cache_dtype = self.cache_dtype
        pad_id = self.config.pad_id
        counts = self.trace_counts

        def prefill(state, tokens_bp, lengths_b, active_b, row_keys_b, temperature, top_k, top_p,
                    eos_e, max_new, *, cache_size: int, new_bucket: int, mode: PolicyMode) -> DecodeState:
            counts["prefill"] += 1
            b, p = tokens_bp.shape
            segments_bp, positions_bp = left_padding(lengths_b, p)
            cache = KVCache.init(model_cfg, b, cache_size, cache_dtype)
            logits_bv, cache = model_forward(graphdef, state, tokens_bp, positions_bp, segments_bp, cache,
                                             use_lora=use_lora)
            ds = initial_state(cache, new_bucket, lengths_b, active_b, row_keys_b, pad_id)
            return sample_step(ds, logits_bv, temperature, top_k, top_p, eos_e, max_new, mode, pad_id)

        def decode(state, ds: DecodeState, stopped_b, temperature, top_k, top_p, eos_e, max_new, chunk_end, *,
                   mode: PolicyMode) -> DecodeState:
            """Runs decode steps until `min(chunk_end, max_new)` tokens or every row is done."""
            counts["decode"] += 1
            newly_b = stopped_b & ~ds.done_b
            ds = dataclasses.replace(ds, done_b=ds.done_b | stopped_b,
                                     reason_b=jnp.where(newly_b, STOPPED, ds.reason_b))
            limit = jnp.minimum(chunk_end, max_new)

            def cond(ds):
                return (ds.step < limit) & ~jnp.all(ds.done_b)

            def body(ds):
                # Finished rows write segment 0: their slots stay masked, so a cache kept after this call
                # (sampling/slots.py) holds only the ids each row was fed.
                segments_b1 = (~ds.done_b).astype(jnp.int32)[:, None]
                logits_bv, cache = model_forward(graphdef, state, ds.last_token_b[:, None], ds.next_pos_b[:, None],
                                                 segments_b1, ds.cache, use_lora=use_lora,
                                                 unroll_layers=unroll_decode)
                ds = dataclasses.replace(ds, cache=cache, next_pos_b=ds.next_pos_b + 1)
                return sample_step(ds, logits_bv, temperature, top_k, top_p, eos_e, max_new, mode, pad_id)

            return jax.lax.while_loop(cond, body, ds)

        return _Programs(
            graphdef=graphdef,
            prefill=jax.jit(prefill, static_argnames=("cache_size", "new_bucket", "mode")),
            decode=jax.jit(decode, static_argnames=("mode",), donate_argnames=("ds",),
                           compiler_options=self._decode_xla_options()),
        )

    def _decode_xla_options(self) -> Optional[dict]:
        if self.config.decode_xla_options is not None:
            return dict(self.config.decode_xla_options) or None
        platform = self.mesh.devices.flat[0].platform if self.mesh is not None else jax.default_backend()
        return default_decode_xla_options(platform)


def model_forward(graphdef, state, tokens_bt, positions_bt, segments_bt, cache: KVCache, *, use_lora: bool,
                  unroll_layers: bool = False) -> tuple[jax.Array, KVCache]:
    """Float32 logits [b, v] of each row's last slot, and the cache with the new slots written at its end."""
    model = nnx.merge(graphdef, state)
    h_btd, cache = model.hidden_states(tokens_bt, positions_bt, segments_bt, cache, use_lora=use_lora,
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


def initial_state(cache: KVCache, new_bucket: int, next_pos_b, active_b, row_keys_b, pad_id: int) -> DecodeState:
    """A decode state before its first token: inactive rows start finished."""
    b = active_b.shape[0]
    return DecodeState(
        cache=cache,
        tokens_bg=jnp.full((b, new_bucket), pad_id, jnp.int32),
        logprobs_bg=jnp.zeros((b, new_bucket), jnp.float32),
        last_token_b=jnp.full((b,), pad_id, jnp.int32),
        next_pos_b=jnp.asarray(next_pos_b, jnp.int32),
        done_b=~jnp.asarray(active_b),
        length_b=jnp.zeros((b,), jnp.int32),
        reason_b=jnp.zeros((b,), jnp.int32),
        row_keys_b=row_keys_b,
        step=jnp.zeros((), jnp.int32),
    )


def sample_step(ds: DecodeState, logits_bv, temperature, top_k, top_p, eos_e, max_new, mode: PolicyMode,
                pad_id: int) -> DecodeState:
    """Draws one token per row from `logits_bv` and records it for running rows."""
    keys_b = jax.vmap(jax.random.fold_in, in_axes=(0, None))(ds.row_keys_b, ds.step)
    log_probs_bv = policy_log_probs(logits_bv, temperature, top_k, top_p, mode)
    token_b, log_prob_b = draw(log_probs_bv, logits_bv, keys_b, mode)
    running_b = ~ds.done_b
    column = (0, ds.step)
    tokens_bg = jax.lax.dynamic_update_slice(ds.tokens_bg, jnp.where(running_b, token_b, pad_id)[:, None], column)
    logprobs_bg = jax.lax.dynamic_update_slice(
        ds.logprobs_bg, jnp.where(running_b, log_prob_b, 0.0)[:, None], column)
    count = ds.step + 1
    hit_eos_b = running_b & jnp.any(token_b[:, None] == eos_e[None, :], axis=-1)
    hit_length_b = running_b & ~hit_eos_b & (count >= max_new)
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


def policy_operands(params: SamplingParams, eos: np.ndarray, max_new: int) -> tuple:
    """The traced policy arguments of the prefill and decode programs."""
    return (*params.values(), jnp.asarray(eos), jnp.asarray(max_new, jnp.int32))


def pad_row_keys(row_keys: jax.Array, b: int) -> jax.Array:
    """Row keys for a batch bucket of b rows: padding rows draw with copies of the first key (discarded)."""
    rows = row_keys.shape[0]
    return jnp.concatenate([row_keys, jnp.broadcast_to(row_keys[:1], (b - rows,))]) if b > rows else row_keys


class PhaseTimer:
    """Records a PhaseTime per pass when the sampler's config asks for it; does nothing otherwise."""

    def __init__(self, sampler: "Sampler"):
        self.sampler = sampler
        self.on = sampler.config.time_phases
        self.start = time.perf_counter()
        self.entry: Optional[PhaseTime] = None

    def prefilled(self, ds, rows: int, prefill_tokens: int, cache_slots: int) -> None:
        if self.on:
            jax.block_until_ready(ds)
            now = time.perf_counter()
            self.entry = PhaseTime(now - self.start, 0.0, rows, prefill_tokens, cache_slots)
            self.start = now

    def decoded(self) -> None:
        if self.on and self.entry is not None:
            self.entry.decode_s = time.perf_counter() - self.start
            self.sampler.phase_times.append(self.entry)


def _find_stops(tokens_bg, done_b, length_b, reason_b, step, rows, checked, stop_at, stops,
                detokenize) -> np.ndarray:
    """Host check between decode chunks: records in `stop_at` the rows whose new text
    holds a stop string; returns the mask of rows to mark finished on device."""
    stopped_b = np.zeros(done_b.shape, bool)
    for r in range(rows):
        if r in stop_at:
            stopped_b[r] = True
            continue
        count = int(length_b[r]) if done_b[r] else int(step)
        if done_b[r] and reason_b[r] == EOS:
            count -= 1  # the EOS token's text is not searched
        hit = stop_lib.find_stop(tokens_bg[r, :count].tolist(), checked[r], stops, detokenize)
        if hit is None:
            checked[r] = count
        else:
            stop_at[r] = hit
            stopped_b[r] = True
    return stopped_b


def _typed_key(key, rows: int) -> jax.Array:
    """Typed key(s) from jax.random.key(seed) or legacy jax.random.PRNGKey(seed) values: one, or one per row."""
    key = jnp.asarray(key)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
            raise ValueError(f"key must be jax.random.key(seed) or jax.random.PRNGKey(seed), got {key.dtype}{key.shape}")
        key = jax.random.wrap_key_data(key)
    if key.shape not in ((), (rows,)):
        raise ValueError(f"key has shape {key.shape}; pass one key per call (shape ()) or one key per prompt "
                         f"(shape ({rows},))")
    return key


def _row_keys(key: jax.Array, rows: int) -> jax.Array:
    """One typed key per row: fold_in(key, i) for a single key, the given keys otherwise."""
    if key.shape == ():
        return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(rows, dtype=jnp.int32))
    return key


def greedy_generate(model: nnx.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                    eos_ids: Sequence[int] = (), mesh: Optional[Mesh] = None,
                    use_lora: bool = True) -> list[list[int]]:
    """Greedy token ids per prompt: exactly `max_new_tokens` each unless `eos_ids`
    are given (then a row ends at, and includes, its first EOS)."""
    sampler = Sampler(model, SamplerConfig(use_lora=use_lora), mesh=mesh)
    return sampler.generate(model, prompts, max_new_tokens, temperature=0.0, eos_ids=eos_ids).token_ids
