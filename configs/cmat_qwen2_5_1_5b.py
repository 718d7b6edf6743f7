"""CMAT for Qwen2.5-1.5B-Instruct, on one H200.

    python -m cmat_jax.train --config configs/cmat_qwen2_5_1_5b.py \
        --config.model.hf_dir=/models/Qwen2.5-1.5B-Instruct

The shared recipe is training/config.py's tinyagent_cmat_config; below, what
this model's memory decides.

Seeded random weights of the real shape instead (speed and memory; no
checkpoint, the bundled tokenizer):

    python -m cmat_jax.train --config configs/cmat_qwen2_5_1_5b.py \
        --config.model.preset=qwen2_5_1_5b --config.model.random_init=true

bench/bench_iteration.py --shape qwen2_5_1_5b times its iterations that way.
Tested at a tiny shape on CPU (tests/rl/test_recipes.py).
"""

from cmat_jax.training.config import tinyagent_cmat_config


def get_config():
    c = tinyagent_cmat_config("qwen2_5_1_5b")
    # Two key/value heads (GQA): 28 KiB of cache per token, so 4096 slots a row and all 128 episodes at once
    # hold 14 GiB; the longer context leaves DBBench's 15 rounds room before observations are dropped.
    c.rollout.max_len = 4096
    c.rl.seq_len = 4096  # a row holds the longest segment a rollout can make (rows are never cut)
    c.train.microbatches = 4  # 4 rows per microbatch: 4 x 4096 as configs/sft_qwen2_5_1_5b.py
    c.train.loss_chunk_size = 512  # the 152k-vocabulary cross-entropy 512 positions at a time
    return c
