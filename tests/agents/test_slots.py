"""The engine with persistent KV slots against the engine re-prefilling every turn: the same records."""

import collections
import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from cmat_jax.agents.engine import RolloutConfig, RolloutEngine
from cmat_jax.agents.prompts import SHORT_INSTRUCTIONS
from cmat_jax.agents.replies import ModelReplies, Reply
from cmat_jax.agents.user import User
from cmat_jax.data.tokenizer import tokenize_text
from cmat_jax.envs.sql.env import SqlEnvConfig, SqlEnvironments
from cmat_jax.models.config import preset
from cmat_jax.models.transformer import Transformer
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.sampling.sampler import Sampler, SamplerConfig

ATOL = 1e-4  # float32 log-probabilities; fixed, never loosened


class Forced:
    """Replies that open with fixed action ids, as a model's would (a random model never writes DBBench's
    format): episode uid % 3 + 1 operations, then an answer, so episodes end after uneven numbers of turns.
    The model samples its ids after the forced ones; both are the reply's ids."""

    def __init__(self, replies: ModelReplies, tokenizer):
        self.replies, self.tokenizer = replies, tokenizer
        self.turns = collections.Counter()
        self.calls: list[list[int]] = []  # the episode uids of each call
        self.shapes: set = set()  # the (rows, slots) shapes of the slot cache after each call

    def head(self, request) -> str:
        turn = self.turns[request.uid]
        self.turns[request.uid] += 1
        if turn < request.uid % 3 + 1:
            return f"Action: Operation\n```sql\nSELECT COUNT(*) FROM `{request.task.table_name}`;\n```\n"
        return "Action: Answer\nFinal Answer: []\n"

    def __call__(self, weights, requests, settings):
        self.calls.append([r.uid for r in requests])
        heads = [self.head(r) for r in requests]
        head_ids = [tokenize_text(self.tokenizer, h) for h in heads]
        forced = [dataclasses.replace(r, prompt_ids=r.prompt_ids + h) for r, h in zip(requests, head_ids)]
        sampled = self.replies(weights, forced, settings)
        self.shapes.add(self.replies.slots.cache_shape)
        return [Reply(h + s.text, ids + s.ids, [0.0] * len(ids) + s.logprobs, s.finish_reason)
                for h, ids, s in zip(heads, head_ids, sampled)]

    @property
    def max_contexts(self):
        return self.replies.max_contexts

    def forget(self, uid):
        self.replies.forget(uid)

    def clear_contexts(self):
        self.replies.clear_contexts()


def sharp_tiny_model():
    model = Transformer(preset("tiny"), attention_impl="xla", rngs=nnx.Rngs(5))
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda x: x * 4.0 if x.ndim > 1 else x, state)  # sharper logits than the default init
    return nnx.merge(graphdef, state)


@pytest.fixture(scope="module")
def tiny():
    return sharp_tiny_model()


def rollout(tiny, tokenizer, tasks, cache, slots=None):
    sampler = Sampler(tiny, SamplerConfig(max_len=1024))
    replies = ModelReplies(sampler, tokenizer)
    assistant = Forced(replies, tokenizer)
    # The forced ids go after the prompt, so the prompt leaves room for them (old observations are dropped).
    config = RolloutConfig(assistant=SamplingPolicy(6, 0.0), reflection=SamplingPolicy(6, 0.0), trials=2,
                           checker="static", cache=cache, slots=slots, prompt_budget=1024 - 6 - 32)
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig(max_rounds=4)), config, assistant=assistant,
                           tokenizer=tokenizer, reflector=replies)
    user = User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS)
    return engine.run(tasks, group_size=2, weights={"assistant": tiny}, user=user), assistant, replies, engine


@pytest.fixture(scope="module")
def runs(dev_tasks, tokenizer, tiny):
    """The same rollout with persistent slots (at most 4 episodes at once) and with full re-prefill."""
    tasks = dev_tasks[:3]
    return rollout(tiny, tokenizer, tasks, "persistent", slots=4), rollout(tiny, tokenizer, tasks, "reprefill")


def assert_same_records(ours, theirs) -> None:
    """The same episodes in the same order, with the same prompts, sampled ids and segments; log-probs
    within ATOL."""
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert (a.task_id, a.sample, a.trial, a.status) == (b.task_id, b.sample, b.trial, b.status)
        assert [t.prompt_ids for t in a.turns] == [t.prompt_ids for t in b.turns]
        assert [t.completion_ids for t in a.turns] == [t.completion_ids for t in b.turns]
        assert [t.segment for t in a.turns] == [t.segment for t in b.turns]
        for x, y in zip(a.turns, b.turns):
            np.testing.assert_allclose(x.completion_logprobs, y.completion_logprobs, atol=ATOL, rtol=0)


def test_persistent_slots_give_the_records_of_full_reprefill(runs):
    (ours, assistant, replies, _), (theirs, *_) = runs
    assert len(ours) == 12  # 3 tasks x 2 samples x 2 trials: every answer is wrong
    assert_same_records(ours, theirs)
    # What the rollout covered: several turns, uneven episode lengths, the retry with reflections in its prompt,
    # at most 4 episodes at once for 6 (finished episodes' slots refilled), task prefixes shared.
    assert {len(t.role_turns("assistant")) for t in ours} == {2, 3, 4}
    assert all(t.memory_shown for t in ours if t.trial == 1)
    assert max(map(len, assistant.calls)) == 4 and len({u for call in assistant.calls for u in call}) == 12
    stats = replies.slots.stats
    assert stats.shared_tokens > 0 and stats.reused_tokens > stats.prefilled_tokens
    assert replies.slots.cache_shape is None  # the run freed its cache


def test_programs_stay_few_and_a_second_rollout_compiles_nothing(runs, dev_tasks, tiny):
    (_, assistant, replies, engine), _ = runs
    counts, shapes = dict(replies.sampler.trace_counts), assistant.shapes
    # Per cache shape (rows and slots, buckets): one program of each kind; one resize into each new shape. The
    # reflections' calls (no context) compile the Sampler's prefill and decode.
    assert 1 <= len(shapes) <= 2, shapes
    assert counts["slot_init"] == 1 and counts["slot_repack"] <= 2 * len(shapes)
    assert max(counts.get(k, 0) for k in ("slot_shared", "slot_begin")) <= len(shapes)
    # Appended blocks of 16, 32 or 64 ids, alone or after a shared prefill in the same call (a refill).
    assert counts["slot_append"] <= 2 * 3 * len(shapes)
    assert counts["decode"] <= len(shapes) + counts["prefill"], counts
    tasks = dev_tasks[:3]
    assistant.turns.clear()
    engine.run(tasks, group_size=2, weights={"assistant": tiny},
               user=User(tasks, seed=0, curriculum=False, instructions=SHORT_INSTRUCTIONS))
    assert dict(replies.sampler.trace_counts) == counts


def test_bad_cache_settings_are_refused():
    with pytest.raises(ValueError, match="choose from persistent, reprefill"):
        RolloutConfig(cache="paged")
    with pytest.raises(ValueError, match="rollout slots must be a positive int"):
        RolloutConfig(slots=0)
