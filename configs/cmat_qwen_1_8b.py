"""CMAT for the original Qwen-1.8B-Chat (the paper's TinyAgent-1.8B base), on one H200.

    python -m cmat_jax.train --config configs/cmat_qwen_1_8b.py \
        --config.model.hf_dir=/models/Qwen-1_8B-Chat --config.data.tokenizer=/models/qwen-1_8b-tokenizer

As configs/sft_qwen_1_8b.py: its qwen.tiktoken tokenizer loads only through the
checkpoint's remote code, so point --config.data.tokenizer at a directory with
the same vocabulary as a tokenizer.json and a ChatML chat template. The shared
recipe is training/config.py's tinyagent_cmat_config; below, what this
model's memory decides.

Seeded random weights of the real shape instead (speed and memory; no
checkpoint, the bundled tokenizer):

    python -m cmat_jax.train --config configs/cmat_qwen_1_8b.py \
        --config.model.preset=qwen_1_8b --config.model.random_init=true

bench/bench_iteration.py --shape qwen_1_8b times its iterations that way.
Tested at a tiny shape on CPU (tests/rl/test_recipes.py).
"""

from cmat_jax.training.config import tinyagent_cmat_config


def get_config():
    c = tinyagent_cmat_config("qwen_1_8b")
    # Every head has its own keys and values (no GQA): 192 KiB of cache per token, so 2048 slots a row and all
    # 128 episodes at once hold 48 GiB. The checkpoint's trained context is 8192 (longer is refused).
    c.rollout.max_len = 2048
    c.rl.seq_len = 2048  # a row holds the longest segment a rollout can make (rows are never cut)
    c.train.microbatches = 4  # 4 rows per microbatch, as configs/sft_qwen_1_8b.py
    c.train.loss_chunk_size = 512  # the 152k-vocabulary cross-entropy 512 positions at a time
    return c
