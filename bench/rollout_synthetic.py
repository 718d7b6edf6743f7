"""The fixed-shape multi-turn workload of `bench_rollout.py --workload synthetic`.

Episodes: `group_size` samples of each task share the task's random opening of `opening` ids; then `turns`
turns, each `new_tokens` sampled ids (temperature 1, no EOS: exactly that many) followed, except after the
last turn, by an observation of `observation` random ids of the episode's own. Every side plays the same
ids (a seeded workload) at the same batch: all `batch` episodes at once.

Sides (the JAX ones measured on a second rollout, after a first one with another key compiles them):
- persistent: the engine's sampler path with persistent slots (SlotSampler: each episode keeps its KV cache
  across turns, a task's opening is prefilled once for its group, only new ids are prefilled);
- reprefill: the same engine path re-prefilling the whole conversation every turn (Sampler.generate);
- transformers: a loop that calls `generate` on the whole conversation every turn, at the same batch (SDPA
  attention, dynamic cache), in its own process, before JAX claims the device; it warms up on one short
  generate call at the batch's shape, then plays one measured rollout.

Reported: episodes/s, new tokens/s, compiled programs, peak device memory, and per turn the prefill time
(synchronised after the prefill; for slots: repack, shared and appended blocks), the decode time and the ids
prefilled. Also a checksum of every sampled id, so the two JAX sides can be compared. With --max-batch, the
largest batch whose persistent-slot rollout fits in device memory (`largest_batch`); --unroll-decode-layers
runs both JAX sides with SamplerConfig.unroll_decode_layers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Optional

import numpy as np

MODES = ("persistent", "reprefill")


@dataclasses.dataclass(frozen=True)
class Workload:
    batch: int
    group_size: int
    opening: int
    turns: int
    new_tokens: int
    observation: int
    vocab: int
    seed: int

    def __post_init__(self):
        if self.batch % self.group_size:
            raise ValueError(f"--batch {self.batch} is not a multiple of --group-size {self.group_size}")

    def openings(self) -> list[list[int]]:
        """One conversation start per episode: the samples of a task share theirs."""
        rng = np.random.RandomState(self.seed)
        tasks = rng.randint(3, self.vocab, (self.batch // self.group_size, self.opening))
        return [tasks[e // self.group_size].tolist() for e in range(self.batch)]

    def observation_ids(self, episode: int, turn: int) -> list[int]:
        if turn + 1 == self.turns:
            return []  # the episode ends after its last reply
        rng = np.random.RandomState([self.seed, episode, turn])
        return rng.randint(3, self.vocab, self.observation).tolist()

    @property
    def sampled(self) -> int:
        return self.batch * self.turns * self.new_tokens

    @property
    def max_len(self) -> int:
        return self.opening + self.turns * self.new_tokens + (self.turns - 1) * self.observation


def checksum(replies: list[list[list[int]]]) -> str:
    """A short digest of every sampled id (turn by turn, episode by episode)."""
    digest = hashlib.sha256()
    for turn in replies:
        for ids in turn:
            digest.update(np.asarray(ids, np.int32).tobytes())
    return digest.hexdigest()[:16]


def summary(workload: Workload, total_s: float, per_turn: list[dict], replies, **extra) -> dict:
    return dict(episodes=workload.batch, episodes_per_s=workload.batch / total_s,
                new_tokens_per_s=workload.sampled / total_s, total_s=total_s, per_turn=per_turn,
                checksum=checksum(replies), **extra)


# -- cmat_jax --------------------------------------------------------------------------------


def play(sampler, slots, state, workload: Workload, key) -> tuple[float, list]:
    """One rollout of every episode of the workload; returns its wall time and the sampled ids per turn."""
    import jax

    from cmat_jax.sampling.policy import SamplingPolicy

    conversations = workload.openings()
    replies = []
    start = time.perf_counter()
    for turn in range(workload.turns):
        keys = jax.random.split(jax.random.fold_in(key, turn), workload.batch)
        policy = SamplingPolicy(workload.new_tokens, temperature=1.0)
        if slots is None:
            result = sampler.generate(state, conversations, policy, key=keys, eos_ids=())
        else:
            result = slots.generate(state, range(workload.batch), conversations, policy, key=keys, eos_ids=())
        replies.append(result.token_ids)
        conversations = [c + ids + workload.observation_ids(e, turn)
                         for e, (c, ids) in enumerate(zip(conversations, result.token_ids))]
    return time.perf_counter() - start, replies


def make_sampler(model, workload: Workload, mode: str, unroll: bool, min_cache_slots: int = 256):
    from cmat_jax.sampling.sampler import Sampler, SamplerConfig
    from cmat_jax.sampling.slots import SlotSampler

    sampler = Sampler(model, SamplerConfig(max_len=workload.max_len + 64, time_phases=True,
                                           unroll_decode_layers=unroll))
    return sampler, (SlotSampler(sampler, min_cache_slots=min_cache_slots) if mode == "persistent" else None)


def run_ours(model, workload: Workload, mode: str, seed: int, unroll: bool = False,
             min_cache_slots: int = 256) -> dict:
    """One mode's measured rollout (after a warm-up rollout with another key)."""
    import jax
    from flax import nnx

    from bench.common import peak_memory_gib

    sampler, slots = make_sampler(model, workload, mode, unroll, min_cache_slots)
    state = nnx.state(model)

    def rollout(key) -> tuple[float, list, Optional[tuple]]:
        total_s, replies = play(sampler, slots, state, workload, key)
        cache_shape = None
        if slots is not None:
            cache_shape = slots.cache_shape
            slots.clear()
        return total_s, replies, cache_shape

    first_s, _, _ = rollout(jax.random.key(seed + 1))
    compiled, sampler.phase_times = sampler.num_compiles, []
    if slots is not None:
        slots.stats = type(slots.stats)()  # count the measured rollout only
    total_s, replies, cache_shape = rollout(jax.random.key(seed))
    per_turn = [dict(prefill_s=p.prefill_s, decode_s=p.decode_s, prefill_tokens=p.prefill_tokens,
                     cache_slots=p.cache_slots) for p in sampler.phase_times]
    extra = dict(warmup_s=first_s - total_s, programs_compiled=sampler.num_compiles,
                 programs_compiled_while_measured=sampler.num_compiles - compiled, peak_memory_gib=peak_memory_gib())
    if slots is not None:
        rows, size = cache_shape
        extra.update(slot_stats=dataclasses.asdict(slots.stats), cache_rows=rows, cache_slots=size,
                     bytes_per_slot_row=slots.bytes_per_row(size), cache_gib=rows * slots.bytes_per_row(size) / 2**30)
    return summary(workload, total_s, per_turn, replies, **extra)


def fits(model, workload: Workload, seed: int, unroll: bool = False, min_cache_slots: int = 256) -> tuple[bool, str]:
    """Whether one persistent-slot rollout of the workload runs in device memory; (False, the error) if not."""
    import gc

    import jax
    from flax import nnx

    sampler, slots = make_sampler(model, workload, "persistent", unroll, min_cache_slots)
    try:
        play(sampler, slots, nnx.state(model), workload, jax.random.key(seed))
        return True, ""
    except Exception as e:  # XLA reports an allocation failure (also one while autotuning) as RESOURCE_EXHAUSTED
        failure = next((line for line in str(e).splitlines() if "RESOURCE_EXHAUSTED" in line), None)
        if failure is None:
            raise
        return False, failure.strip()[:200]
    finally:
        del sampler, slots
        gc.collect()


def largest_batch(model, workload_at, fitted: int, seed: int, unroll: bool = False,
                  min_cache_slots: int = 256) -> dict:
    """The largest batch whose persistent-slot rollout fits, searched from `fitted` (a batch that did): doubling
    until a rollout fails, then halving the gap between the last fit and the first failure until it is at most
    an eighth of the last fit. Each try plays one whole rollout (the cache is largest in the last turn)."""
    group = workload_at(fitted).group_size
    low, high, tried = fitted, None, {}
    while high is None or high - low > max(group, low // 8):
        batch = low * 2 if high is None else (low + high) // 2 // group * group
        ok, error = fits(model, workload_at(batch), seed, unroll, min_cache_slots)
        tried[batch] = "fits" if ok else error
        low, high = (batch, high) if ok else (low, batch)
    return dict(largest=low, first_failure=high, tried=tried)


# -- transformers ----------------------------------------------------------------------------


def run_peer(hf_model, workload: Workload, seed: int) -> dict:
    """generate() on the whole conversation every turn, all episodes in one batch (equal lengths: no padding)."""
    import torch

    device = hf_model.device

    def rollout(torch_seed) -> tuple[float, list, list]:
        torch.manual_seed(torch_seed)
        ids = torch.tensor(workload.openings(), device=device)
        replies, per_turn = [], []
        torch.cuda.synchronize() if device.type == "cuda" else None
        start = time.perf_counter()
        for turn in range(workload.turns):
            prompt_tokens = int(ids.numel())
            turn_start = time.perf_counter()
            with torch.no_grad():
                out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                        top_k=0, top_p=1.0, max_new_tokens=workload.new_tokens,
                                        min_new_tokens=workload.new_tokens, pad_token_id=0)
            new = out[:, ids.shape[1]:]
            replies.append(new.tolist())
            observations = torch.tensor([workload.observation_ids(e, turn) for e in range(workload.batch)],
                                        device=device, dtype=ids.dtype).reshape(workload.batch, -1)
            ids = torch.cat([out, observations], dim=1)
            per_turn.append(dict(turn_s=time.perf_counter() - turn_start, prompt_tokens=prompt_tokens))
        return time.perf_counter() - start, replies, per_turn

    # Warm-up (CUDA context, kernels, allocator): one short generate call at the batch's shape, not measured.
    start = time.perf_counter()
    with torch.no_grad():
        opening = torch.tensor(workload.openings(), device=device)
        hf_model.generate(opening, attention_mask=torch.ones_like(opening), do_sample=True, max_new_tokens=8,
                          min_new_tokens=8, pad_token_id=0)
    warmup_s = time.perf_counter() - start
    total_s, replies, per_turn = rollout(seed)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return summary(workload, total_s, per_turn, replies, warmup_s=warmup_s, peak_memory_gib=peak)


# -- report ----------------------------------------------------------------------------------


def print_results(name: str, workload: Workload, ours: dict, peer: Optional[dict]) -> None:
    from bench.common import print_table

    print(f"\n{name}: batch {workload.batch} ({workload.batch // workload.group_size} tasks x {workload.group_size}), "
          f"opening {workload.opening}, {workload.turns} turns x {workload.new_tokens} new ids, observations "
          f"{workload.observation}")
    rows = []
    for side, r in [*ours.items(), ("transformers", peer)]:
        if r is None:
            continue
        rows.append([side, f"{r['episodes_per_s']:.3f}", f"{r['new_tokens_per_s']:,.0f}", f"{r['total_s']:.2f}",
                     r.get("programs_compiled", "–"), f"{r['peak_memory_gib']:.1f}", r["checksum"]])
    print_table(["side", "episodes/s", "new tok/s", "rollout s", "programs", "peak GiB", "checksum"], rows)
    base = ours.get("persistent")
    ratios = [f"{other}: {base['episodes_per_s'] / r['episodes_per_s']:.2f}x"
              for other, r in [("reprefill", ours.get("reprefill")), ("transformers", peer)] if base and r]
    if ratios:
        print("persistent slots over " + ", ".join(ratios))
    turns = []
    for t in range(workload.turns):
        row = [t + 1]
        for mode in MODES:
            p = ours.get(mode, {}).get("per_turn")
            row += [f"{1e3 * p[t]['prefill_s']:.1f} ({p[t]['prefill_tokens']:,})", f"{1e3 * p[t]['decode_s']:.1f}"] \
                if p else ["–", "–"]
        row.append(f"{1e3 * peer['per_turn'][t]['turn_s']:.1f}" if peer else "–")
        turns.append(row)
    print_table(["turn", "persistent prefill ms (ids)", "persistent decode ms", "reprefill prefill ms (ids)",
                 "reprefill decode ms", "transformers turn ms"], turns)
