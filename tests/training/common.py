"""Small SFT data and a tiny run config shared by the training tests."""

from __future__ import annotations

import json
import os

import numpy as np

from cmat_jax.training.config import default_config

# Short conversations: every one fits in 64 tokens of the bundled tokenizer.
CONVERSATIONS = [
    [("user", "Count the rows of t."), ("assistant", "SELECT COUNT(*) FROM t;")],
    [("system", "Answer briefly."), ("user", "What is 2 plus 3?"), ("assistant", "5")],
    [("user", "Name a color."), ("assistant", "Blue.")],
    [("user", "List the names."), ("assistant", "SELECT name FROM people;")],
    [("user", "Say hello."), ("assistant", "Hello!")],
    [("user", "Which table?"), ("assistant", "The table is t."),
     ("user", "Thanks."), ("assistant", "You are welcome.")],
]


def write_jsonl(path: str, conversations=CONVERSATIONS, form: str = "openai") -> str:
    with open(path, "w", encoding="utf-8") as f:
        for conv in conversations:
            if form == "openai":
                record = {"messages": [{"role": r, "content": c} for r, c in conv]}
            else:
                names = {"user": "human", "assistant": "gpt", "system": "system"}
                record = {"conversations": [{"from": names[r], "value": c} for r, c in conv]}
            f.write(json.dumps(record) + "\n")
    return path


class KilledAt:
    """Wraps a batch iterator; raises when asked for batch number `n` (1-based), like a kill."""

    def __init__(self, batches, n):
        self.batches, self.n, self.drawn = batches, n, 0

    def __next__(self):
        self.drawn += 1
        if self.drawn == self.n:
            raise KeyboardInterrupt("simulated kill")
        return next(self.batches)

    def state(self):
        return self.batches.state()

    def restore(self, state):
        self.batches.restore(state)


def relative_difference(a, b) -> float:
    """||a - b|| / ||b|| (0 when both are 0): float32 summation order moves single
    elements by a few ulps, so tensors are compared as wholes."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.linalg.norm(b)
    diff = np.linalg.norm(a - b)
    return float(diff / scale) if scale > 0 else float(diff)


def tiny_config(workdir: str, data_dir: str, **overrides):
    """A run config for the tiny preset on CONVERSATIONS; `overrides` maps 'train.steps' -> value."""
    os.makedirs(data_dir, exist_ok=True)
    agent = os.path.join(data_dir, "agent.jsonl")
    general = os.path.join(data_dir, "general.jsonl")
    if not os.path.exists(agent):
        write_jsonl(agent, CONVERSATIONS[:4], form="sharegpt")
        write_jsonl(general, CONVERSATIONS[4:], form="openai")
    c = default_config()
    c.workdir = workdir
    c.data.agent = agent
    c.data.general = general
    c.data.agent_fraction = 0.5
    c.data.batch_size = 8
    c.data.seq_len = 64
    c.model.random_init = True
    c.model.init_std = 0.15
    c.lora.rank = 4
    c.train.steps = 6
    c.train.warmup_steps = 2
    c.train.learning_rate = 1e-2
    c.checkpoint.every = 2
    c.checkpoint.keep = 10
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c
