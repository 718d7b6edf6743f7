"""DBBench evaluation on the embedded SQLite environment.

    python -m cmat_jax.evaluate --config configs/eval_dbbench.py \
        --config.tasks=../shared/dbbench/dev.jsonl --config.agent=oracle
"""

import os

import ml_collections

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEV_TASKS = os.path.normpath(os.path.join(_REPO_ROOT, "..", "shared", "dbbench", "dev.jsonl"))


def get_config():
    c = ml_collections.ConfigDict()
    c.tasks = _DEV_TASKS if os.path.isfile(_DEV_TASKS) else ""  # a DBBench .jsonl file
    c.agent = "oracle"  # a name registered in cmat_jax.evaluate.AGENTS
    c.workdir = "workdir/eval_dbbench"  # metrics.json and episodes.jsonl go here
    c.max_rounds = 15  # statements per episode (DBBench v0.2's setting)
    c.timeout_s = 2.0  # wall clock per statement
    c.max_output_chars = 800  # result text shown to the agent (DBBench truncates at 800)
    c.checker = "report"  # enforce | report | off (see cmat_jax.envs.sql.env.SqlEnvConfig)
    c.heap_limit_mib = 256  # SQLite heap cap, process-wide
    return c
