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


def _generated(profile: str, count: int, seed: int) -> list[SqlTask]:
    from cmat_jax.envs.sql.generate import generate_tasks

    return generate_tasks(int(count), int(seed), profile)


def _identity(task: SqlTask) -> tuple:
    return (task.description, task.table_name, task.rows)


def task_pools(tasks_config) -> tuple[list[SqlTask], list[SqlTask]]:
    """(training tasks, evaluation tasks) from a run config's `tasks` section."""
    t = tasks_config
    if t.train and os.path.abspath(t.train) == os.path.abspath(DBBENCH_DEV_TASKS):
        raise ValueError("tasks.train is the DBBench dev split, which is for evaluation only; train on generated "
                         "tasks (leave tasks.train empty) or another task file")
    if not t.train and not t.eval and int(t.train_seed) == int(t.eval_seed):
        raise ValueError(f"tasks.train_seed and tasks.eval_seed are both {t.train_seed}: the generated evaluation "
                         "tasks would be the training tasks; give them different seeds")
    for pool in ("train", "eval"):
        count = t[f"{pool}_count"]
        if not t[pool] and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"tasks.{pool}_count is {count!r}; the generator needs a positive number of tasks when "
                             f"tasks.{pool} is empty (or give tasks.{pool}, a DBBench .jsonl file)")
    train = load_tasks(t.train) if t.train else _generated(t.generator_profile, t.train_count, t.train_seed)
    evaluation = load_tasks(t.eval) if t.eval else _generated(t.generator_profile, t.eval_count, t.eval_seed)
    seen = {_identity(task) for task in train}
    held_out = [task for task in evaluation if _identity(task) not in seen]
    if not held_out:
        raise ValueError("every evaluation task also appears among the training tasks; use another task file or seed")
    return train, held_out
