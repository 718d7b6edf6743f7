"""The User role: assigns tasks from a pool and opens each episode.

Curriculum. A task's pass rate is the mean success rate of its last `window`
groups (default 1: the last group alone). A task whose pass rate is strictly
between 0 and 1 carries learning signal (its samples disagree, so group
advantages are not all zero); it is drawn `boost` times as often as other
tasks. With `frontier`, the weight grows with the pass rate's closeness to 0.5
instead, from 1 at 0 or 1 to `boost` at 0.5, so tasks the policy solves about
half the time are drawn most (online difficulty filtering); a task not played
yet counts as on the frontier, so every task is tried before it is set aside.
Draws are without replacement within one call, seeded, and the whole state (the
RNG and each task's recent success rates) is plain JSON saved with the run.
With the curriculum off every task is equally likely.

The opening of an episode is the environment's (DBBench v0.2's: the
instructions, the agent's "Ok.", then the task). A retry's memory block goes
right before the task, in the same user turn. `instructions` replaces the
opening's instruction text (the demo's tiny model uses
prompts.SHORT_INSTRUCTIONS); None keeps it verbatim. Tasks are read through
cmat_jax.envs.base's Task protocol.
"""

from __future__ import annotations

from typing import Collection, Optional, Sequence

import numpy as np

from cmat_jax.chat import USER, Message
from cmat_jax.envs.base import Task


class User:
    def __init__(self, tasks: Sequence[Task], *, seed: int, curriculum: bool = True, boost: float = 3.0,
                 frontier: bool = False, window: int = 1, instructions: Optional[str] = None):
        if not tasks:
            raise ValueError("the User's task pool is empty; give it at least one task")
        ids = [t.task_id for t in tasks]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"task ids must be unique in the pool; {duplicate!r} appears more than once")
        if boost < 1.0:
            raise ValueError(f"curriculum boost must be >= 1 (1 = uniform), found {boost}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"curriculum window must be an integer >= 1 (groups per pass rate), found {window!r}")
        self.tasks = list(tasks)
        self.instructions = instructions
        self.curriculum = curriculum
        self.boost = boost
        self.frontier = frontier
        self.window = window
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._recent: dict[str, list[float]] = {}  # task id -> its last `window` group success rates

    def pass_rate(self, task_id: str) -> Optional[float]:
        """The mean success rate of the task's recent groups; None before it is played."""
        rates = self._recent.get(task_id)
        return float(np.mean(rates)) if rates else None

    def weights(self) -> np.ndarray:
        """Draw probabilities over the pool."""
        w = np.ones(len(self.tasks))
        if self.curriculum:
            for i, task in enumerate(self.tasks):
                w[i] = self._weight(self.pass_rate(task.task_id))
        return w / w.sum()

    def _weight(self, rate: Optional[float]) -> float:
        if self.frontier:  # 1 at pass rate 0 or 1, `boost` at 0.5 (and before the task is played)
            closeness = 1.0 if rate is None else 1.0 - abs(2.0 * rate - 1.0)
            return 1.0 + (self.boost - 1.0) * closeness
        return self.boost if rate is not None and 0.0 < rate < 1.0 else 1.0

    def draw(self, count: int, exclude: Collection[str] = ()) -> list[Task]:
        """`count` distinct tasks (the whole pool, in a random order, when it is not larger), none of whose ids
        is in `exclude` (fewer when too few are left; none when none is)."""
        p = self.weights()
        if exclude:
            p[[i for i, task in enumerate(self.tasks) if task.task_id in exclude]] = 0.0
            if not p.any():
                return []
            p /= p.sum()
        count = min(count, int(np.count_nonzero(p)))
        picks = self._rng.choice(len(self.tasks), size=count, replace=False, p=p)
        return [self.tasks[i] for i in picks]

    def record(self, task_id: str, successes: Sequence[bool]) -> None:
        """A group's outcomes for a task: the curriculum's signal."""
        if successes:
            recent = self._recent.setdefault(task_id, [])
            recent.append(float(np.mean(successes)))
            del recent[:-self.window]

    def opening(self, env_opening: Sequence[Message], memory: str = "") -> list[Message]:
        """The environment's opening turns with `memory` placed before the task in the last user turn."""
        turns = list(env_opening)
        if self.instructions is not None:
            turns[0] = Message(turns[0].role, self.instructions)
        if memory:
            last = turns[-1]
            if last.role != USER:
                raise ValueError("an episode's opening must end with the user turn that poses the task")
            turns[-1] = Message(USER, memory + last.content)
        return turns

    def state(self) -> dict:
        return {"rng": self._rng.bit_generator.state, "recent": {k: list(v) for k, v in self._recent.items()}}

    def restore(self, state: dict) -> None:
        try:
            self._rng.bit_generator.state = state["rng"]
            # Checkpoints written before the window kept one rate per task, under "success".
            recent = state["recent"] if "recent" in state else {k: [v] for k, v in state["success"].items()}
            self._recent = {str(k): [float(r) for r in v][-self.window:] for k, v in recent.items()}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"cannot restore the User's curriculum state ({e}); it was not written by User.state()"
                             ) from None
