"""The task pools of a CMAT run: training tasks and held-out evaluation tasks.

Each pool is a DBBench-format JSONL file, or (when the file setting is empty)
tasks made by the seeded generator. Evaluation tasks that also appear in the
training pool (same question on the same table) are left out, so evaluation is
held out. DBBench's dev split is for evaluation and model selection only, so it
is refused as a training pool.
"""

from __future__ import annotations

import os

from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS, SqlTask, load_tasks
from cmat_jax.settings.cmat import TaskSettings


def _generated(profile: str, count: int, seed: int) -> list[SqlTask]:
    from cmat_jax.taskgen.generate import generate_tasks

    return generate_tasks(count, seed, profile)


def _identity(task: SqlTask) -> tuple:
    return (task.description, task.table_name, task.rows)


def task_pools(t: TaskSettings) -> tuple[list[SqlTask], list[SqlTask]]:
    """(training tasks, evaluation tasks) of a run's task settings."""
    if t.train and os.path.abspath(t.train) == os.path.abspath(DBBENCH_DEV_TASKS):
        raise ValueError("tasks.train is the DBBench dev split, which is for evaluation only; train on generated "
                         "tasks (leave tasks.train empty) or another task file")
    train = load_tasks(t.train) if t.train else _generated(t.generator_profile, t.train_count, t.train_seed)
    evaluation = load_tasks(t.eval) if t.eval else _generated(t.generator_profile, t.eval_count, t.eval_seed)
    seen = {_identity(task) for task in train}
    held_out = [task for task in evaluation if _identity(task) not in seen]
    if not held_out:
        raise ValueError("every evaluation task also appears among the training tasks; use another task file or seed")
    return train, held_out
