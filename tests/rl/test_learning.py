"""GRPO through the shared train step raises the reward of a toy task whose right action is known.

The task: after each of a few fixed prompts, the model samples one token; the
reward is 1 when that token is in a fixed set (every 8th id), else 0. The
expected reward of a prompt is the policy's probability mass on the set, which
the test reads exactly from the logits before and after training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cmat_jax.rl.advantages import make_advantage
from cmat_jax.rl.objectives import ObjectiveConfig, objective_loss
from cmat_jax.rl.rows import RL_BATCH_KEYS, Segment, pack_segments
from cmat_jax.sampling import Sampler, SamplerConfig, SamplingPolicy
from cmat_jax.settings.run import parse_run
from cmat_jax.training.run_state import RunState
from tests.training.common import tiny_config

PROMPTS = [[11, 402, 77, 9], [3, 3, 500, 81], [900, 12, 45, 600], [7, 250, 1000, 64]]
GROUP = 8  # samples per prompt
ITERATIONS = 30
ROWS, SEQ_LEN = 8, 16  # 32 segments of 5 tokens, 4 per row


def rewarded(token_ids):
    return np.asarray([float(ids[0] % 8 == 0) for ids in token_ids])


def test_grpo_raises_the_reward_of_a_known_action(tmp_path):
    config = tiny_config(str(tmp_path / "run"), str(tmp_path / "data"), **{
        "model.init_std": 0.15, "lora.rank": 4, "train.learning_rate": 1e-2, "train.warmup_steps": 0,
        "train.decay": "constant", "train.steps": ITERATIONS})
    state = RunState(parse_run(config))
    step_fn = state.make_step(objective_loss(ObjectiveConfig("ppo")))
    grpo = make_advantage("grpo", group_size=GROUP)
    sampler = Sampler(state.model(), SamplerConfig(max_len=16))
    in_set = jnp.arange(1024) % 8 == 0

    @jax.jit
    def expected_reward(weights):
        model = nnx.merge(state.graphdef, weights)
        logits = model(jnp.asarray(PROMPTS))[0][:, -1]
        return jnp.mean(jnp.sum(jnp.where(in_set, jax.nn.softmax(logits), 0.0), axis=-1))

    start = float(expected_reward(state.sampling_weights("assistant")[1]))
    prompts = [p for p in PROMPTS for _ in range(GROUP)]
    groups = [i for i in range(len(PROMPTS)) for _ in range(GROUP)]
    sampled_means, clip_fracs = [], []
    for it in range(ITERATIONS):
        _, weights = state.sampling_weights("assistant")
        out = sampler.generate(weights, prompts, SamplingPolicy(1, temperature=1.0), key=jax.random.key(it), eos_ids=())
        rewards = rewarded(out.token_ids)
        sampled_means.append(rewards.mean())
        adv = grpo(rewards, groups)
        segments = [Segment(ids=p + ids, loss_mask=[0] * len(p) + [1], logprobs=[0.0] * len(p) + list(lp),
                            advantages=[0.0] * len(p) + [a])
                    for p, ids, lp, a, masked in zip(prompts, out.token_ids, out.logprobs, adv.advantages, adv.masked)
                    if not masked]
        for batch in pack_segments(segments, rows=ROWS, seq_len=SEQ_LEN):
            metrics = state.update("assistant", step_fn, state.put_batch(batch, keys=RL_BATCH_KEYS, rows=ROWS), it)
            clip_fracs.append(float(metrics["clip_frac"]))
            assert bool(metrics["finite"])
    end = float(expected_reward(state.sampling_weights("assistant")[1]))
    # On-policy, one update per batch: the recomputed log-probs are the sampler's, so nothing is clipped.
    assert clip_fracs and max(clip_fracs) == 0.0
    assert 0.05 < start < 0.5, start
    assert end > start + 0.4, (start, end)
    assert np.mean(sampled_means[-5:]) > np.mean(sampled_means[:5]) + 0.3, sampled_means
