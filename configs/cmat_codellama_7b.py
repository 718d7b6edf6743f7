"""CMAT for CodeLlama-7B-Instruct (the paper's TinyAgent-7B base), on one H200.

    python -m cmat_jax.train --config configs/cmat_codellama_7b.py \
        --config.model.hf_dir=/models/CodeLlama-7b-Instruct-hf

The shared recipe is training/config.py's tinyagent_cmat_config; below, what
this model's memory decides.

Seeded random weights of the real shape instead (speed and memory; no
checkpoint, the bundled tokenizer):

    python -m cmat_jax.train --config configs/cmat_codellama_7b.py \
        --config.model.preset=codellama_7b --config.model.random_init=true

bench/bench_iteration.py --shape codellama_7b times its iterations that way.
Tested at a tiny shape on CPU (tests/rl/test_recipes.py).
"""

from cmat_jax.training.config import tinyagent_cmat_config


def get_config():
    c = tinyagent_cmat_config("codellama_7b")
    # 32 key/value heads of 32 layers: 512 KiB of cache per token, a 2048-slot row is 1 GiB. 128 rows beside
    # the 13.5 GB of weights would fill an H200, so 64 episodes play at once (64 GiB of cache; the others
    # wait and take the place of those that end). The decode program holding a second copy of the cache
    # (docs/benchmarks.md) makes 64 tight: measure with bench/bench_iteration.py, lower to 32 if it fails.
    c.rollout.max_len = 2048
    c.rollout.slots = 64
    c.rl.seq_len = 2048  # a row holds the longest segment a rollout can make (rows are never cut)
    # 2 rows per microbatch; the cross-entropy in chunks of 256 (configs/sft_codellama_7b.py: 2 x 4096 per
    # microbatch peaked at 37.7 GiB on one H100).
    c.train.microbatches = 8
    c.train.loss_chunk_size = 256
    return c
