"""The embedded default: the tiny preset (seeded random init) with the bundled
tokenizer, LoRA-tuned on a few dozen SQL-agent conversations mixed with general
instructions. Runs to completion on a 2-core CPU in a few minutes.

    python -m cmat_jax.train --config configs/sft_tiny.py
"""

import os

from cmat_jax.training.config import default_config

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def get_config():
    c = default_config()
    c.workdir = "workdir/sft_tiny"
    c.model.random_init = True
    c.model.preset = "tiny"
    # A wider random init than the usual 0.02, so the frozen base lets the
    # adapters reach confident predictions (see cmat_jax/training/build.py).
    c.model.init_std = 0.15
    c.data.agent = os.path.join(DATA_DIR, "sft_tiny_agent.jsonl")
    c.data.general = os.path.join(DATA_DIR, "sft_tiny_general.jsonl")
    c.data.agent_fraction = 0.5
    c.data.batch_size = 8
    c.data.seq_len = 640
    c.train.steps = 300
    c.train.learning_rate = 5e-3
    c.checkpoint.every = 100
    return c
