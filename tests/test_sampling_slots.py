"""Persistent KV slots against full re-prefill: same tokens, log-probs within 1e-4 at float32, bounded programs."""

import jax
import numpy as np
import pytest
from flax import nnx

from cmat_jax.models.config import preset
from cmat_jax.models.transformer import Transformer
from cmat_jax.sampling import Sampler, SamplerConfig, SamplingPolicy
from cmat_jax.sampling.slot_table import SlotTable, common_prefix
from cmat_jax.sampling.slots import SlotSampler

ATOL = 1e-4  # float32 log-probabilities; fixed, never loosened
VOCAB = 1024
EOS = tuple(range(900, 940))  # ~4% of the vocabulary: rows end at uneven lengths


@pytest.fixture(scope="module")
def model():
    model = Transformer(preset("tiny"), attention_impl="xla", rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda x: x * 4.0 if x.ndim > 1 else x, state)  # sharper logits than the default init
    return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def reference(model):
    return Sampler(model, SamplerConfig(max_len=512))


def ids(rng, n):
    return rng.randint(0, 900, n).tolist()  # below the EOS ids


def same(reference_result, slot_result):
    assert slot_result.token_ids == reference_result.token_ids
    assert slot_result.finish_reasons == reference_result.finish_reasons
    for expected, got in zip(reference_result.logprobs, slot_result.logprobs):
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def letters(ids_):
    return "".join(chr(ord("a") + t % 26) for t in ids_)


def test_greedy_turns_equal_reprefill_with_refill_sharing_and_rebuilt_prompts(model, reference):
    rng = np.random.RandomState(0)
    slots = SlotSampler(Sampler(model, SamplerConfig(max_len=512)), max_append=64)
    instructions = ids(rng, 16)
    openings = [instructions + ids(rng, n) for n in (10, 40, 70)]
    prompts = {c: list(openings[c // 2]) for c in range(6)}  # 3 tasks x 2 samples: identical openings per task
    reasons = set()
    for turn in range(5):
        contexts = sorted(prompts)
        asked = [prompts[c] for c in contexts]
        new = 8 + 2 * turn
        result = reference.generate(model, asked, SamplingPolicy(new, temperature=0.0), eos_ids=EOS)
        same(result, slots.generate(model, contexts, asked, SamplingPolicy(new, temperature=0.0), eos_ids=EOS))
        reasons.update(result.finish_reasons)
        for c, reply in zip(contexts, result.token_ids):
            prompts[c] = prompts[c] + reply + ids(rng, rng.randint(1, 20))  # the reply, then an observation
        if turn == 0:
            assert slots.stats.shared_tokens == sum(len(o) for o in openings)  # one prefill per task group
            assert slots.stats.reused_tokens == 0
        if turn == 1:  # context 0 ends; a new one takes its row and reuses the instructions it holds
            slots.release(0)
            del prompts[0]
            prompts[10] = instructions + ids(rng, 30)
        if turn == 2:  # context 3's prompt is rebuilt (an observation dropped): what still agrees is reused
            prompts[3] = openings[1] + ids(rng, 25)
    assert reasons == {"eos", "length"}  # uneven episode lengths
    assert slots.stats.reused_tokens > slots.stats.prefilled_tokens
    assert slots.stats.calls == 5 and slots.stats.weight_resets == 0


def test_sampled_turns_with_stop_strings_equal_reprefill(model):
    rng = np.random.RandomState(1)
    config = SamplerConfig(max_len=512, stop_check_interval=4)
    reference, slots = Sampler(model, config), SlotSampler(Sampler(model, config))
    prompts = [ids(rng, n) for n in (5, 33, 12, 12)]
    kwargs = dict(eos_ids=(), tokenizer=letters)
    for turn in range(4):
        keys = jax.random.split(jax.random.key(turn), len(prompts))
        free = reference.generate(model, prompts, SamplingPolicy(16, temperature=0.9, top_k=50), key=keys, **kwargs)
        stop = letters(free.token_ids[1][4:6])  # ends row 1 (and maybe others) mid-way
        policy = SamplingPolicy(16, temperature=0.9, top_k=50, stop_strings=[stop])
        result = reference.generate(model, prompts, policy, key=keys, **kwargs)
        same(result, slots.generate(model, range(len(prompts)), prompts, policy, key=keys, **kwargs))
        assert "stop" in result.finish_reasons
        # Rows a stop string ended ran past it on device; the next prompt continues from the kept ids only.
        prompts = [p + r + ids(rng, 3) for p, r in zip(prompts, result.token_ids)]
    assert slots.stats.reused_tokens > 0


def test_other_weights_start_a_new_session(model, reference):
    rng = np.random.RandomState(2)
    graphdef, state = nnx.split(model)
    slots = SlotSampler(Sampler(model, SamplerConfig(max_len=512)))
    prompts = [ids(rng, 20), ids(rng, 9)]
    first = slots.generate(state, [0, 1], prompts, SamplingPolicy(6, temperature=0.0), eos_ids=())
    prompts = [p + r + ids(rng, 4) for p, r in zip(prompts, first.token_ids)]
    slots.generate(state, [0, 1], prompts, SamplingPolicy(6, temperature=0.0), eos_ids=())
    assert slots.stats.weight_resets == 0 and slots.stats.reused_tokens > 0
    updated = jax.tree.map(lambda x: x * 1.05, state)
    reused = slots.stats.reused_tokens
    got = slots.generate(updated, [0, 1], prompts, SamplingPolicy(6, temperature=0.0), eos_ids=())
    assert slots.stats.weight_resets == 1 and slots.stats.reused_tokens == reused  # nothing of the old cache
    same(reference.generate(nnx.merge(graphdef, updated), prompts, SamplingPolicy(6, temperature=0.0), eos_ids=()), got)


def test_a_multi_turn_session_compiles_a_bounded_number_of_programs(model):
    sampler = Sampler(model, SamplerConfig(max_len=512, batch_buckets=(8,)))
    slots = SlotSampler(sampler)

    def session(seed):
        rng = np.random.RandomState(seed)
        prompts = {c: ids(rng, 30 + 7 * c) for c in range(5)}
        for turn in range(6):
            contexts = sorted(prompts)
            result = slots.generate(model, contexts, [prompts[c] for c in contexts],
                                    SamplingPolicy(int(rng.randint(4, 16)), temperature=0.0), eos_ids=EOS)
            for c, reply in zip(contexts, result.token_ids):
                prompts[c] += reply + ids(rng, int(rng.randint(1, 15)))
            if turn == 2:
                slots.release(contexts[0])
                del prompts[contexts[0]]
                prompts[100 + seed] = ids(rng, 40)
        slots.clear()

    session(0)
    # One row bucket, one cache bucket (256 slots), one new-token bucket (16), one appended-block bucket (16),
    # one policy shape: a program each for the first cache, the repack, the first token after shared prefills
    # only (the first call) and the decode loop; the appended block (with its first token) alone and after a
    # shared prefill in the same call (the refill); the shared prefill once per group-count bucket (5 tasks at
    # the start, 1 refill later).
    counts = dict(sampler.trace_counts)
    assert counts == {"slot_init": 1, "slot_repack": 1, "slot_shared": 2, "slot_append": 2, "slot_begin": 1,
                      "decode": 1}, counts
    session(1)
    assert dict(sampler.trace_counts) == counts  # another session with other lengths: nothing new


def test_memory_per_row_is_the_stated_formula(model):
    slots = SlotSampler(Sampler(model, SamplerConfig(max_len=512)))
    slots.generate(model, ["a", "b", "c"], [[1, 2, 3]] * 3, SamplingPolicy(4, temperature=0.0), eos_ids=())
    rows, size = slots.cache_shape
    cache = slots._cache
    held = cache.k_lbskh.nbytes + cache.v_lbskh.nbytes + cache.segment_ids_bs.nbytes
    assert held == rows * slots.bytes_per_row(size)
    cfg = preset("tiny")
    assert slots.bytes_per_row(size) == 2 * cfg.num_layers * size * cfg.num_kv_heads * cfg.head_dim * 4 + 4 * size
    slots.clear()
    assert slots.cache_shape is None and len(slots.table) == 0


def test_bad_calls_are_refused_in_one_line(model):
    slots = SlotSampler(Sampler(model, SamplerConfig(max_len=512, max_batch=2)))
    with pytest.raises(ValueError, match="one context per prompt"):
        slots.generate(model, [0], [[1], [2]], SamplingPolicy(4, temperature=0.0))
    with pytest.raises(ValueError, match="once per call"):
        slots.generate(model, [0, 0], [[1], [2]], SamplingPolicy(4, temperature=0.0))
    with pytest.raises(ValueError, match="max_batch is 2"):
        slots.generate(model, [0, 1, 2], [[1], [2], [3]], SamplingPolicy(4, temperature=0.0))
    slots.generate(model, [0, 1], [[1], [2]], SamplingPolicy(4, temperature=0.0))
    with pytest.raises(ValueError, match="release finished contexts"):
        slots.generate(model, [2], [[3]], SamplingPolicy(4, temperature=0.0))  # 0 and 1 still hold their rows
    slots.release(0)
    slots.generate(model, [2], [[3]], SamplingPolicy(4, temperature=0.0))
    with pytest.raises(ValueError, match="max_append must be a positive int"):
        SlotSampler(slots.sampler, max_append=0)


def test_the_plan_reuses_common_prefixes_and_groups_fresh_prompts():
    table = SlotTable()
    bucket = lambda n: 1 << max(0, n - 1).bit_length()  # noqa: E731
    plan = table.plan(["a", "b", "c"], [[1, 2, 3], [1, 2, 3], [1, 5]], max_append=8, bucket=bucket)
    assert plan.rows == 4 and plan.groups == [([1, 2, 3], [0, 1]), ([1, 5], [2])] and plan.suffix == {}
    table.commit(plan, ["a", "b", "c"], [[1, 2, 3, 7], [1, 2, 3, 8], [1, 5, 9]])
    table.release("c")
    plan = table.plan(["b", "d", "a"], [[1, 2, 3, 8, 4], [1, 5, 6, 6], [9, 9]], max_append=8, bucket=bucket)
    # b extends its ids; d takes c's released row and keeps [1, 5]; a's prompt shares nothing: from scratch.
    assert plan.source_b.tolist() == [1, 2, -1, -1] and plan.keep_b.tolist() == [4, 2, 0, 0]
    assert plan.suffix == {0: [4], 1: [6, 6]} and plan.groups == [([9, 9], [2])] and plan.held == []
    plan = table.plan(["b"], [[1, 2, 3, 8] + [0] * 9], max_append=8, bucket=bucket)
    assert plan.groups == [([1, 2, 3, 8] + [0] * 9, [0])]  # 9 new ids > max_append: from scratch
    assert plan.held == [0] and plan.keep_b.tolist() == [0, 4, 0, 0]  # a still holds its row; rows never shrink
    assert common_prefix(np.array([1, 2, 3]), np.array([1, 2])) == 2
