"""One episode in play (a task, a sample and a trial), and the requests its roles send.

Randomness: an episode's key is derived from the run's key, its task id, sample
and trial, and each request folds in the role and the turn. So results do not
depend on which or how many episodes share a reply call.
"""

from __future__ import annotations

import zlib
from typing import Optional, Sequence

import jax

from cmat_jax.agents.replies import Request
from cmat_jax.agents.trajectory import ASSISTANT_ROLE, CHECKER_ROLE, REFLECTION_ROLE, Trajectory
from cmat_jax.chat import Message
from cmat_jax.envs.base import Environment, StaticChecker, Task

ROLE_STREAMS = {ASSISTANT_ROLE: 0, CHECKER_ROLE: 1, REFLECTION_ROLE: 2}


class Episode:
    """An episode's conversation, prompt ids and environment while it plays; its record is `trajectory`."""

    def __init__(self, uid: int, task: Task, trajectory: Trajectory, env: Environment, messages: list[Message],
                 key: Optional[jax.Array]):
        self.uid = uid  # stable over the run: the reply sources' context, and the order of joined calls
        self.task = task
        self.trajectory = trajectory
        self.env = env
        self.messages = messages
        self.opening_length = len(messages)
        self.key = key
        self.prompt_ids: Optional[list[int]] = None  # the Assistant's next prompt (None without a tokenizer)
        self.segment = 0  # the segment of the Assistant's next turn
        self.turn = 0
        self.done = False
        self.checker: Optional[StaticChecker] = None  # the task's static Checker, where the mode has one

    def request(self, role: str, prompt_ids: Optional[list[int]] = None,
                messages: Optional[Sequence[Message]] = None) -> Request:
        """The role's request at this turn: the episode's conversation and prompt unless others are given."""
        key = None
        if self.key is not None:
            key = jax.random.fold_in(jax.random.fold_in(self.key, ROLE_STREAMS[role]), self.turn)
        return Request(self.uid, self.task, messages or self.messages,
                       prompt_ids if prompt_ids is not None else self.prompt_ids, key)


def episode_key(key: jax.Array, task: Task, sample: int, trial: int) -> jax.Array:
    """The episode's PRNG key: a function of the task id, sample and trial only, so an episode
    draws the same tokens whatever batch it runs in."""
    key = jax.random.fold_in(key, zlib.crc32(task.task_id.encode("utf-8")) & 0x7FFFFFFF)
    return jax.random.fold_in(jax.random.fold_in(key, sample), trial)
