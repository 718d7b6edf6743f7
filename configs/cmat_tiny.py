"""The embedded default CMAT run, in the regime CMAT is for: few demonstrations, many graded tasks.

The tiny preset (seeded random base) with the bundled tokenizer, on generated SQL tasks sized for a
2-core CPU. The SFT warm start sees the oracle's episodes of only the first 16 training tasks
(tasks.demo_count); the other 1,984 are reward-only: the CMAT iterations roll them out and learn from
the environment's reward, never from their oracle episode. The summary compares the warm start with
the end of the iterations on held-out generated tasks. With --config.rl.sft_twin=true the run then
also continues SFT on the same 16 demonstrations from the same warm start for as long as the
iterations took, and the summary adds it (docs/cmat.md, sixth round, for what they measure).

    python -m cmat_jax.train --config configs/cmat_tiny.py
    python -m cmat_jax.train --config configs/cmat_tiny.py --config.rl.sft_twin=true   # and the SFT twin
"""

from cmat_jax.training.config import cmat_config


def get_config():
    c = cmat_config()
    c.workdir = "workdir/cmat_tiny"
    c.model.random_init = True
    c.model.preset = "tiny"
    c.model.init_std = 0.15  # wider than 0.02, so adapters on a random base can be confident (training/build.py)
    c.lora.rank = 16
    c.lora.alpha = 32.0

    c.tasks.generator_profile = "lookup"
    c.tasks.train_count = 2000
    c.tasks.demo_count = 16  # 32 start at 10% held-out success but gain less from the iterations (docs/cmat.md)
    c.tasks.eval_count = 128

    # SFT warm start on the demonstrations' oracle episodes.
    c.train.steps = 200
    c.train.learning_rate = 5e-3
    c.train.warmup_steps = 10
    # One demonstration (202-222 tokens) per row: the same 16 per step as two per 512-token row, and 1.8x
    # faster on a CPU, where attention pays for the whole row (docs/cmat.md, fifth round).
    c.data.batch_size = 16
    c.data.seq_len = 256

    c.rollout.instructions = "short"
    c.rollout.tasks_per_iteration = 32
    c.rollout.group_size = 8
    c.rollout.max_new_tokens = 48
    c.rollout.temperature = 0.5  # at 0.8 the warm-started model fails the format in most samples
    c.rollout.max_len = 512

    c.rl.iterations = 40
    c.rl.objective = "ppo"
    c.rl.advantage = "grpo"
    c.rl.positive_only = True  # reinforce only what beat its group: both signs gained less (docs/cmat.md)
    # Samples left at advantage 0 are not packed: with few successes most are, and the update then costs
    # little (Adam makes the token mean's smaller denominator matter little).
    c.rl.reinforced_only = True
    c.rl.measure_kl = False  # no KL penalty here: the reference pass would only report it
    c.rl.learning_rate = 5e-4  # 1e-3 collapsed a 32-demonstration run (docs/cmat.md, sixth round)
    c.rl.rows = 16
    c.rl.seq_len = 512
    c.rl.eval_every = 10
    c.checkpoint.every = 10
    return c
