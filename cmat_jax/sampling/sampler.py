"""Batched generation: a jit-compiled prefill and an on-device decode loop.

A call left-pads its prompts into a bucket length, pads the batch to a bucket
size, prefills the KV cache in one program, then decodes inside
`lax.while_loop`, which leaves as soon as every row has finished. The programs
are programs.py's, over (graphdef, state): the Sampler checks a call, lays its
rows out in buckets (buckets.py) and reads the results back. The decode state
(KV cache included) is donated, so each decode call updates it in place.

Stop strings are checked on the host: with stop strings, decoding runs in chunks
of `stop_check_interval` steps; between chunks the new text of every unfinished
row is detokenized and rows that produced a stop string are marked finished.
Without stop strings the whole decode is one device call.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from cmat_jax.distributed import host_values  # device_get that also gathers arrays spanning other processes
from cmat_jax.sampling import programs
from cmat_jax.sampling import stops as stop_lib
from cmat_jax.sampling.buckets import Buckets, check_buckets, next_power_of_two
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.sampling.programs import EOS, FINISH_NAMES, DecodeState, PolicyOperands, ProgramSpec, RowStarts
from cmat_jax.sharding import state_shardings


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
            check_buckets(getattr(self, name), f"SamplerConfig.{name}")

    def buckets(self) -> Buckets:
        return Buckets(self.batch_buckets, self.prompt_buckets, self.new_token_buckets,
                       self.min_prompt_bucket, self.min_new_token_bucket)


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

    @classmethod
    def empty(cls, with_texts: bool) -> "GenerateResult":
        return cls([], [], [], [] if with_texts else None, [] if with_texts else None)

    def extend(self, other: "GenerateResult") -> None:
        """Appends the rows of `other` (a later pass of the same call)."""
        self.token_ids += other.token_ids
        self.logprobs += other.logprobs
        self.finish_reasons += other.finish_reasons
        if self.texts is not None:
            self.texts += other.texts
            self.stop_strings += other.stop_strings


@dataclasses.dataclass
class PhaseTime:
    """One pass of a generate call (SamplerConfig.time_phases): the device is synchronised after the prefill."""

    prefill_s: float  # building the cache up to the first sampled token (for slots: repack and appends too)
    decode_s: float  # the decode loop and reading the results back
    rows: int  # requests in the pass (padding rows excluded)
    prefill_tokens: int  # ids run through the model before decoding (padding excluded)
    cache_slots: int  # the KV cache's length


@dataclasses.dataclass
class PreparedCall:
    """A checked generate call: what its passes need."""

    policy: SamplingPolicy
    operands: PolicyOperands  # the policy as the programs take it, with the call's EOS ids
    prompts: list[list[int]]
    detokenize: Optional[Callable]
    row_keys: jax.Array  # one typed key per prompt
    state: nnx.State  # the weights, placed on the mesh

    def result(self, ds: DecodeState, rows: int, stop_at: dict[int, tuple[int, int]]) -> GenerateResult:
        """The GenerateResult of rows [0, rows) of a finished decode state (`stop_at`: Sampler.decode's)."""
        tokens_bg, logprobs_bg, length_b, reason_b = host_values(
            (ds.tokens_bg, ds.logprobs_bg, ds.length_b, ds.reason_b))
        detokenize, stops = self.detokenize, self.policy.stop_strings
        out = GenerateResult.empty(detokenize is not None)
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


class Sampler:
    """Generates from an nnx Transformer (with or without LoRA, merged or not).

    The Sampler keeps the model's structure (its graph definition), never its
    weights: every `generate` call takes the weights to sample with. A training
    step that donates the adapters therefore cannot leave a Sampler holding
    freed buffers; the caller passes the state the update returned. With `mesh`,
    the weights are placed by the project's sharding rules (a no-op when they
    already are, e.g. the training state) and activations are constrained to the
    mesh.

    `spec` is what its programs (programs.py) are compiled for, `buckets` its
    shape buckets, `decode_program` its decode program (compiled with
    `decode_xla_options`). `trace_counts` counts traces of its programs (each
    trace is one compilation); `num_compiles` is their sum.
    """

    def __init__(self, model: nnx.Module, config: SamplerConfig = SamplerConfig(), *, mesh: Optional[Mesh] = None):
        self.graphdef = nnx.graphdef(model)  # structure only: the weights come with each call
        self.dtype = model.dtype
        self.config = config
        self.mesh = mesh
        self.model_cfg = model.cfg
        self.cache_dtype = config.cache_dtype or self.dtype
        self.phase_times: list[PhaseTime] = []  # with config.time_phases: one entry per pass
        self.buckets = config.buckets()
        context = self.model_cfg.context_limit or self.model_cfg.max_position_embeddings
        if config.max_len is not None and config.max_len > context:
            raise ValueError(f"SamplerConfig.max_len={config.max_len} exceeds the model's context of {context} "
                             "positions; lower it or leave it None")
        self.max_len = config.max_len or context
        self.max_batch = config.max_batch or self.buckets.largest_batch
        self.spec = ProgramSpec(self.graphdef, self.model_cfg, self.cache_dtype, config.pad_id, config.use_lora,
                                config.unroll_decode_layers, mesh)
        self.trace_counts = self.spec.trace_counts
        if config.decode_xla_options is not None:
            self.decode_xla_options = dict(config.decode_xla_options) or None
        else:
            platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
            self.decode_xla_options = programs.default_decode_xla_options(platform)
        self.decode_program = programs.decode_program(self.decode_xla_options)

    @property
    def num_compiles(self) -> int:
        return sum(self.trace_counts.values())

    # -- public API -------------------------------------------------------

    def generate(self, weights, prompts: Sequence[Sequence[int]], policy: SamplingPolicy, *, key=None,
                 eos_ids: Optional[Sequence[int]] = None, tokenizer=None) -> GenerateResult:
        """Generates up to `policy.max_new_tokens` for every prompt.

        weights: the weights to sample with: an nnx.State of a model with this
          Sampler's structure, a tuple of States that together make one (e.g.
          `(lora, frozen)` as the trainer holds them), or the model itself.
        key: a jax PRNG key (required unless the policy is greedy), or one key per
          prompt (shape [len(prompts)]). Row i draws with its own key (fold_in(key,
          i) for a single key) and step s with fold_in(that, s), so a row's sample
          does not depend on how the batch was padded or split, and rows given
          their own keys draw the same whatever other rows share the call.
        eos_ids: ids that end a row (kept as its last token); None = the model's
          eos_token_id, () = none.
        tokenizer: an object with .decode(ids), or a callable ids -> str; needed
          for the policy's stop strings, and gives the result its texts.
        """
        call = self.prepare(weights, prompts, policy, key=key, eos_ids=eos_ids, tokenizer=tokenizer)
        step = self.max_batch or len(call.prompts)
        result = GenerateResult.empty(call.detokenize is not None)
        for i in range(0, len(call.prompts), step):
            result.extend(self._generate_group(call, call.prompts[i:i + step], call.row_keys[i:i + step]))
        return result

    def prepare(self, weights, prompts, policy: SamplingPolicy, *, key, eos_ids, tokenizer) -> PreparedCall:
        """Checks a generate call's arguments (see `generate`) and gathers what its passes need; compiles nothing."""
        if not isinstance(policy, SamplingPolicy):
            raise TypeError(f"generate takes a SamplingPolicy (max_new_tokens, temperature, top_k, top_p, "
                            f"stop_strings) after the prompts, got {type(policy).__name__}")
        prompts = self._check_prompts(prompts, policy.max_new_tokens)
        detokenize = stop_lib.as_detokenize(tokenizer)
        if policy.stop_strings and detokenize is None:
            raise ValueError("stop_strings need a tokenizer (an object with .decode(ids) or a callable ids -> str)")
        eos = self._eos_ids(eos_ids)
        if policy.greedy:
            key = jax.random.key(0)  # unused by argmax
        elif key is None:
            raise ValueError(f"sampling with temperature {policy.temperature} needs key=jax.random.key(seed); "
                             "use temperature=0 for greedy decoding")
        row_keys = _row_keys(_typed_key(key, len(prompts)), len(prompts))
        state = self._weights_state(weights)
        if self.mesh is not None:
            state = jax.device_put(state, state_shardings(state, self.mesh))
        return PreparedCall(policy, PolicyOperands.of(policy, eos), prompts, detokenize, row_keys, state)

    def decode(self, call: PreparedCall, ds: DecodeState, rows: int) -> tuple[DecodeState, dict[int, tuple[int, int]]]:
        """Runs the decode program on `ds` (rows [0, rows) are requests) to the end: in one call without stop
        strings, else in chunks with host stop checks between them. Returns the final state and, for rows a stop
        string ended, (kept token count, text cut)."""
        stops, max_new = call.policy.stop_strings, call.policy.max_new_tokens
        stop_at: dict[int, tuple[int, int]] = {}
        b = ds.done_b.shape[0]
        if not stops:
            ds = self.decode_program(call.state, ds, np.zeros((b,), bool), call.operands,
                                     jnp.asarray(max_new, jnp.int32), spec=self.spec)
            return ds, stop_at
        checked = [0] * rows  # per row: tokens whose text is known to hold no stop string
        while True:
            tokens_bg, done_b, length_b, reason_b, step = host_values(
                (ds.tokens_bg, ds.done_b, ds.length_b, ds.reason_b, ds.step))
            stopped_b = stop_lib.find_new_stops(tokens_bg, done_b, length_b, reason_b == EOS, step, rows, checked,
                                                stop_at, stops, call.detokenize)
            if np.all((done_b | stopped_b)[:rows]) or step >= max_new:
                return ds, stop_at
            chunk_end = jnp.asarray(step + self.config.stop_check_interval, jnp.int32)
            ds = self.decode_program(call.state, ds, stopped_b, call.operands, chunk_end, spec=self.spec)

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

    def _check_prompts(self, prompts, max_new_tokens: int) -> list[list[int]]:
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
        self.buckets.check(max(len(p) for p in out), max_new_tokens)
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
        out = np.full(next_power_of_two(max(len(ids), 4)), -1, np.int32)
        out[: len(ids)] = ids
        return out


    # -- one pass over at most max_batch rows --------------------------------

    def _shapes(self, batch: int, longest: int, max_new: int) -> tuple[int, int, int, int]:
        """(batch bucket, prompt bucket, new-token bucket, cache size)."""
        b, p, n = self.buckets.batch(batch), self.buckets.prompt(longest), self.buckets.new_tokens(max_new)
        size = p + n
        limit = self.model_cfg.context_limit
        if limit is not None and size > limit:
            # The model refuses caches past its context; fit exactly (validated above).
            size = limit
            p = min(p, limit - max_new)
        return b, p, n, size

    def _generate_group(self, call: PreparedCall, prompts: list[list[int]], row_keys: jax.Array) -> GenerateResult:
        rows = len(prompts)
        b, p, n, cache_size = self._shapes(rows, max(len(x) for x in prompts), call.policy.max_new_tokens)
        tokens_bp = np.full((b, p), self.config.pad_id, np.int32)
        lengths_b = np.ones((b,), np.int32)  # padding rows hold one pad token
        for r, ids in enumerate(prompts):
            tokens_bp[r, p - len(ids):] = ids
            lengths_b[r] = len(ids)
        starts = RowStarts(lengths_b, np.arange(b) < rows, pad_row_keys(row_keys, b))

        timer = PhaseTimer(self)
        ds = programs.prefill(call.state, tokens_bp, starts, call.operands, spec=self.spec, cache_size=cache_size,
                              new_bucket=n)
        timer.prefilled(ds, rows, sum(len(x) for x in prompts), cache_size)
        ds, stop_at = self.decode(call, ds, rows)
        result = call.result(ds, rows, stop_at)
        timer.decoded()
        return result


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
    policy = SamplingPolicy(max_new_tokens, temperature=0.0)
    return sampler.generate(model, prompts, policy, eos_ids=eos_ids).token_ids
