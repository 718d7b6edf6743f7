"""Persistent KV slots: generation that keeps each context's keys and values between calls.

A multi-turn episode's next prompt is its previous prompt, the ids it sampled and a few new ids. The Sampler
prefills every prompt whole; a SlotSampler keeps each context (an id the caller picks, e.g. the episode) in
a row of one KV cache and runs only the ids the row does not hold yet (slot_table.py plans which). The
rows are a session's: keys and values are only valid for the weights that computed them, so a call with
other weights (other arrays) first drops every row, and `clear()` ends a session and frees the cache.

The cache is a timeline, as in the Sampler: every row writes at one shared end index, and RoPE positions
are each row's own. A row's context is its segment-1 slots in timeline order; holes (segment 0: block
padding, the decode steps of finished rows) only take room. One call:

1. repack: one program moves every kept context to the front of its row in the plan's row order, dropping
   holes and ids not kept (in place when the cache keeps its shape);
2. shared prefill: requests prefilled from scratch run in a sub-batch, one row per group of identical
   prompts (the G samples of a task); each group's keys, values and last logits are copied to the rows of
   its members (slots [0, T));
3. append: every reused row's new ids, left-padded to a bucket, run in one program at the timeline's end,
   which then draws each row's first token (`begin` draws it when no row appends anything);
4. the Sampler's own decode program does the rest.

Every device step is a program of programs.py, called with the Sampler's `spec`; the SlotSampler uses
only the Sampler's public methods (`prepare`, `decode`) and its buckets.

Exactness: a kept slot holds the keys and values that a full prefill computes for that id at that position
(causal attention: they depend on earlier ids only), and each query sees exactly its context's slots. So
tokens and log-probs equal a re-prefill's up to floating-point summation order (the tests hold greedy
tokens equal and log-probs within 1e-4 at float32).

Shapes are buckets: rows (the sampler's batch buckets), cache slots (powers of two and 1.5 times them, at
least `min_cache_slots`: decoding reads every slot, so the finer steps save reads), shared and appended
block lengths (the sampler's prompt buckets), the group size (powers of two). Programs are counted in the
sampler's `trace_counts` (keys `slot_*`, and `decode`).

Memory of one row of S slots: 2 * L * S * K * H * bytes(cache dtype) for keys and values, plus 4 * S bytes of
segment ids (`bytes_per_row`). The cache lives from a session's first call to `clear()`.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Hashable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cmat_jax.models.kv_cache import KVCache
from cmat_jax.sampling import buckets as bucket_lib
from cmat_jax.sampling import programs
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.sampling.programs import AppendBlock, RowStarts
from cmat_jax.sampling.sampler import GenerateResult, PhaseTimer, PreparedCall, Sampler, pad_row_keys
from cmat_jax.sampling.slot_table import Plan, SlotTable


@dataclasses.dataclass
class SlotStats:
    """What the slots saved, summed over calls."""

    calls: int = 0
    prompt_tokens: int = 0  # ids in the requests' prompts
    reused_tokens: int = 0  # held from earlier calls: not run again
    shared_tokens: int = 0  # copied from a group member's prefill: not run again
    prefilled_tokens: int = 0  # run through the model before decoding (padding excluded)
    weight_resets: int = 0  # sessions ended because a call came with other weights


class SlotSampler:
    """Generates for contexts whose KV caches persist between calls (see the module docstring).

    sampler: the Sampler whose structure, buckets, limits and decode program it uses.
    max_append: a request whose new ids outnumber this is prefilled from scratch in the shared sub-batch
      instead of widening every row's appended block.
    min_cache_slots: the smallest cache length bucket.
    """

    def __init__(self, sampler: Sampler, *, max_append: int = 256, min_cache_slots: int = 256):
        for name, value in (("max_append", max_append), ("min_cache_slots", min_cache_slots)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SlotSampler {name} must be a positive int, got {value!r}")
        self.sampler = sampler
        self.max_append = max_append
        self.min_cache_slots = min_cache_slots
        self.table = SlotTable()
        self.stats = SlotStats()
        self._cache: Optional[KVCache] = None
        self._weights: Optional[list[weakref.ref]] = None

    # -- public API -------------------------------------------------------

    @property
    def num_compiles(self) -> int:
        return self.sampler.num_compiles

    @property
    def cache_shape(self) -> Optional[tuple[int, int]]:
        """(rows, slots) of the cache held now, or None."""
        return None if self._cache is None else tuple(self._cache.segment_ids_bs.shape)

    def bytes_per_row(self, slots: int) -> int:
        """Device bytes of one cache row of `slots` slots (keys, values and segment ids)."""
        cfg = self.sampler.model_cfg
        itemsize = jnp.dtype(self.sampler.cache_dtype).itemsize
        return 2 * cfg.num_layers * slots * cfg.num_kv_heads * cfg.head_dim * itemsize + 4 * slots

    def generate(self, weights, contexts: Sequence[Hashable], prompts: Sequence[Sequence[int]],
                 policy: SamplingPolicy, *, key=None, eos_ids: Optional[Sequence[int]] = None,
                 tokenizer=None) -> GenerateResult:
        """`Sampler.generate` for prompts that extend their context's earlier prompts and replies.

        contexts: one id per prompt (hashable, not None, each at most once per call). A context keeps
          its row until `release(context)` or `clear()`; its next prompt may extend what it holds (the
          prompt and the reply it was given, the reply's last id included) or not (then what still
          agrees is reused). Every other argument is Sampler.generate's.
        """
        if len(contexts) != len(prompts):
            raise ValueError(f"got {len(contexts)} contexts for {len(prompts)} prompts; give one context per prompt")
        call = self.sampler.prepare(weights, prompts, policy, key=key, eos_ids=eos_ids, tokenizer=tokenizer)
        self._check_session(weights)
        plan = self.table.plan(list(contexts), call.prompts, max_append=self.max_append, bucket=self._row_bucket)
        try:
            result = self._run(call, plan)
        except BaseException:
            self.clear()  # the cache may be half updated: start the next call from nothing
            raise
        kept = [prompt + ids[:-1] for prompt, ids in zip(call.prompts, result.token_ids)]
        self.table.commit(plan, list(contexts), kept)
        return result

    def release(self, context: Hashable) -> None:
        """The context is over: its row may go to another (which may reuse the ids it shares)."""
        self.table.release(context)

    def clear(self) -> None:
        """Ends the session: forgets every context and frees the cache."""
        self.table.clear()
        self._cache = None
        self._weights = None

    # -- one call ---------------------------------------------------------

    def _run(self, call: PreparedCall, plan: Plan) -> GenerateResult:
        sampler, spec, n, max_new = self.sampler, self.sampler.spec, plan.requests, call.policy.max_new_tokens
        shared_t = self._block(max((len(p) for p, _ in plan.groups), default=0))
        append_t = self._block(max((len(s) for s in plan.suffix.values()), default=0))
        start = np.asarray(max(int(plan.keep_b.max(initial=0)), shared_t), np.int32)  # the end after shared blocks
        slots = self._cache_slots(int(start) + append_t + max_new, plan.rows)
        new_bucket = sampler.buckets.new_tokens(max_new)
        prefilled = sum(len(p) for p, _ in plan.groups) + sum(len(s) for s in plan.suffix.values())
        self._count(call, plan, prefilled)

        timer = PhaseTimer(sampler)
        cache = self._repacked(plan, slots)
        logits_bv = None  # made on device by the first program that writes logits (no host array)
        if plan.groups:
            cache, logits_bv = programs.shared_prefill(call.state, cache, *self._shared_inputs(plan, shared_t),
                                                       spec=spec)
        next_pos_b = np.zeros((plan.rows,), np.int32)
        next_pos_b[:n] = [len(p) for p in call.prompts]
        rows = RowStarts(next_pos_b, np.arange(plan.rows) < n, pad_row_keys(call.row_keys, plan.rows))
        if plan.suffix:
            ds = programs.append(call.state, cache, logits_bv, self._append_block(plan, append_t), start, rows,
                                 call.operands, spec=spec, new_bucket=new_bucket)
        else:
            ds = programs.begin(cache, logits_bv, start, rows, call.operands, spec=spec, new_bucket=new_bucket)
        timer.prefilled(ds, n, prefilled, slots)
        ds, stop_at = sampler.decode(call, ds, n)
        self._cache = ds.cache
        result = call.result(ds, n, stop_at)
        timer.decoded()
        return result

    def _count(self, call: PreparedCall, plan: Plan, prefilled: int) -> None:
        stats = self.stats
        stats.calls += 1
        stats.prompt_tokens += sum(len(p) for p in call.prompts)
        stats.reused_tokens += int(plan.keep_b[:plan.requests].sum())
        stats.shared_tokens += sum(len(p) * (len(members) - 1) for p, members in plan.groups)
        stats.prefilled_tokens += prefilled

    def _repacked(self, plan: Plan, slots: int) -> KVCache:
        spec = self.sampler.spec
        if self._cache is None:
            return programs.init_cache(spec=spec, rows=plan.rows, slots=slots)
        cache, self._cache = self._cache, None
        same_shape = (plan.rows, slots) == tuple(cache.segment_ids_bs.shape)
        move = programs.repack if same_shape else programs.resize  # repack: in place (the old cache is donated)
        return move(cache, plan.source_b, plan.keep_b, spec=spec, slots=slots)

    def _shared_inputs(self, plan: Plan, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens [u, width] left-padded, lengths [u], member rows [g, u]; `plan.rows` marks no member)."""
        u = bucket_lib.next_power_of_two(len(plan.groups))
        g = bucket_lib.next_power_of_two(max(len(members) for _, members in plan.groups))
        tokens_ut = np.full((u, width), self.sampler.config.pad_id, np.int32)
        lengths_u = np.ones((u,), np.int32)  # padding groups hold one pad token and have no members
        members_gu = np.full((g, u), plan.rows, np.int32)
        for j, (prompt, members) in enumerate(plan.groups):
            tokens_ut[j, width - len(prompt):] = prompt
            lengths_u[j] = len(prompt)
            members_gu[:len(members), j] = members
        return tokens_ut, lengths_u, members_gu

    def _append_block(self, plan: Plan, width: int) -> AppendBlock:
        """Tokens, positions, segments [rows, width]: each suffix left-padded, at positions after its kept ids."""
        tokens_bt = np.full((plan.rows, width), self.sampler.config.pad_id, np.int32)
        positions_bt = np.zeros((plan.rows, width), np.int32)
        segments_bt = np.zeros((plan.rows, width), np.int32)
        for i, ids in plan.suffix.items():
            tokens_bt[i, width - len(ids):] = ids
            positions_bt[i, width - len(ids):] = plan.keep_b[i] + np.arange(len(ids))
            segments_bt[i, width - len(ids):] = 1
        return AppendBlock(tokens_bt, positions_bt, segments_bt)

    # -- shapes -----------------------------------------------------------

    def _row_bucket(self, n: int) -> int:
        limit = self.sampler.max_batch
        if limit is not None and n > limit:
            raise ValueError(f"the slots would hold {n} contexts but the sampler's max_batch is {limit}; release "
                             "finished contexts (SlotSampler.release) or raise SamplerConfig.max_batch")
        return self.sampler.buckets.batch(n, name="slot rows")

    def _block(self, longest: int) -> int:
        """The bucketed length of a shared or appended block (0 when there is none)."""
        if longest == 0:
            return 0
        width = self.sampler.buckets.prompt(longest)
        limit = self.sampler.model_cfg.context_limit
        return min(width, limit) if limit is not None else width

    def _cache_slots(self, need: int, rows: int) -> int:
        """Cache length for a call needing `need` slots: a bucket, never shrinking while the rows stay."""
        slots = max(self.min_cache_slots, bucket_lib.next_half_power_of_two(need))
        if self._cache is not None and self.cache_shape[0] == rows:
            slots = max(slots, self.cache_shape[1])  # the same shape repacks in place and compiles nothing new
        limit = self.sampler.model_cfg.context_limit
        if limit is not None and slots > limit:
            if need > limit:
                raise ValueError(f"this call needs {need} cache slots, past the model's context limit of {limit}; "
                                 "use the re-prefill mode (rollout cache 'reprefill') or a smaller max_len")
            slots = limit
        return slots

    def _check_session(self, weights) -> None:
        """Drops every row when the weights are not the arrays of the session's earlier calls."""
        tree = nnx.state(weights) if isinstance(weights, nnx.Module) else weights
        leaves = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
        known = self._weights
        if known is not None and (len(known) != len(leaves) or any(r() is not x for r, x in zip(known, leaves))):
            self.clear()
            self.stats.weight_resets += 1
        self._weights = [weakref.ref(x) for x in leaves]
