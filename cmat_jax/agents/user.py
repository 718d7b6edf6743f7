"""The User role: assigns tasks from a pool and opens each episode.

Curriculum. A task whose most recent group success rate is strictly between 0
and 1 carries learning signal (its samples disagree, so group advantages are
not all zero); it is drawn `boost` times as often as other tasks. Draws are
without replacement within one call, seeded, and the whole state (the RNG and
each task's last success rate) is plain JSON saved with the run. With the
curriculum off every task is equally likely.

The opening of an episode is the environment's (DBBench v0.2's: the
instructions, the agent's "Ok.", then the task). A retry's memory block goes
right before the task, in the same user turn. `instructions` replaces the
opening's instruction text (the demo's tiny model uses
prompts.SHORT_INSTRUCTIONS); None keeps it verbatim. Tasks are read through
cmat_jax.envs.base's Task protocol.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from cmat_jax.chat import USER, Message
from cmat_jax.envs.base import Task


class User:
    def __init__(self, tasks: Sequence[Task], *, seed: int, curriculum: bool = True, boost: float = 3.0,
                 instructions: Optional[str] = None):
        if not tasks:
            raise ValueError("the User's task pool is empty; give it at least one task")
        ids = [t.task_id for t in tasks]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"task ids must be unique in the pool; {duplicate!r} appears more than once")
        if boost < 1.0:
            raise ValueError(f"curriculum boost must be >= 1 (1 = uniform), found {boost}")
        self.tasks = list(tasks)
        self.instructions = instructions
        self.curriculum = curriculum
        self.boost = boost
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._success: dict[str, float] = {}  # task id -> last group success rate

    def weights(self) -> np.ndarray:
        """Draw probabilities over the pool."""
        w = np.ones(len(self.tasks))
        if self.curriculum:
            for i, task in enumerate(self.tasks):
                rate = self._success.get(task.task_id)
                if rate is not None and 0.0 < rate < 1.0:
                    w[i] = self.boost
        return w / w.sum()

    def draw(self, count: int) -> list[Task]:
        """`count` distinct tasks (the whole pool, in a random order, when it is not larger)."""
        count = min(count, len(self.tasks))
        picks = self._rng.choice(len(self.tasks), size=count, replace=False, p=self.weights())
        return [self.tasks[i] for i in picks]

    def record(self, task_id: str, successes: Sequence[bool]) -> None:
        """A group's outcomes for a task: the curriculum's signal."""
        if successes:
            self._success[task_id] = float(np.mean(successes))

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
        return {"rng": self._rng.bit_generator.state, "success": dict(self._success)}

    def restore(self, state: dict) -> None:
        try:
            self._rng.bit_generator.state = state["rng"]
            self._success = {str(k): float(v) for k, v in state["success"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"cannot restore the User's curriculum state ({e}); it was not written by User.state()"
                             ) from None
