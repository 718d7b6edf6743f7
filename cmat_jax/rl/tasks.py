"""The task pools of a CMAT run: training tasks and held-out evaluation tasks.

Each pool is a DBBench-format JSONL file, or (when the file setting is empty)
tasks made by the seeded generator. Evaluation tasks that also appear in the
training pool (same question on the same table) are left out, so evaluation is
held out. DBBench's dev split is for evaluation and model selection only, so it
is refused as a training pool.

Demonstrations (`tasks.demo_count`): the regime CMAT is for has a few oracle demonstrations and many
tasks that only the environment grades. With `tasks.demo_count` N, the first N tasks of the training
pool become the SFT warm start's demonstrations; every other training task is reward-only: the
iterations may roll it out and learn from its reward, but its oracle episode is never played, so no
text of it reaches a training row. A generated pool is a seeded draw (`tasks.train_seed`) whose first N
tasks do not depend on the pool's size, so runs over pools of different sizes share their
demonstrations; a task file's first N are its first N lines. None (the default) makes every training
task a demonstration. The checkpoints record the demonstrations' ids, and a resume is held to them.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

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
    t.check_demo_count(len(train))  # a task file's size is known only now
    evaluation = load_tasks(t.eval) if t.eval else _generated(t.generator_profile, t.eval_count, t.eval_seed)
    seen = {_identity(task) for task in train}
    held_out = [task for task in evaluation if _identity(task) not in seen]
    if not held_out:
        raise ValueError("every evaluation task also appears among the training tasks; use another task file or seed")
    return train, held_out


def split_demonstrations(tasks: Sequence[SqlTask], count: Optional[int]) -> tuple[list[SqlTask], list[SqlTask]]:
    """(demonstration tasks, reward-only tasks): the first `count` of `tasks` and the rest (None: all)."""
    n = len(tasks) if count is None else count
    return list(tasks[:n]), list(tasks[n:])


def check_restored_demonstrations(saved: Optional[Sequence[str]], current: Sequence[str]) -> None:
    """A resumed run must warm-start from the demonstrations its checkpoint records (`saved`: their ids;
    None for a checkpoint written before they were recorded)."""
    if saved is not None and list(saved) != list(current):
        raise ValueError(f"the checkpoint's warm start used {len(saved)} demonstration tasks (first "
                         f"{list(saved[:1])}), this run selects {len(current)} (first {list(current[:1])}); "
                         "resume with the original tasks and tasks.demo_count")
