"""Reflection: after a trial, every failed episode gets one reflection call (batched, Reflexion's semantics).

The reflection prompt shows the task and the failed attempt (prompts.reflection_prompt);
the reply is the episode's reflection turn (a one-turn conversation: the next
segment) and goes into long-term memory under its task, so the retry shows the
task's last Omega reflections. With several processes each process reflects
on its own episodes; `remember` then gives every process's memory every
reflection of the run, in one order.
"""

from __future__ import annotations

from typing import Sequence

from cmat_jax.agents import prompts as prompt_lib
from cmat_jax.agents.episode import Episode
from cmat_jax.agents.memory import ReflectionMemory
from cmat_jax.agents.prompt_ids import PromptIds
from cmat_jax.agents.replies import ReplySource
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.agents.stats import RolloutStats
from cmat_jax.agents.trajectory import REFLECTION_ROLE, Trajectory, Turn


def reflect(failed: list[Episode], reflector: ReplySource, weights, settings: SamplingPolicy,
            memory: ReflectionMemory, prompts: PromptIds, stats: RolloutStats) -> None:
    """One reply call over the failed episodes (`weights`: the Assistant's); records the turns and memory."""
    requests, prompt_ids = [], []
    for episode in failed:
        messages = prompt_lib.reflection_prompt(episode.task.prompt, episode.messages[episode.opening_length:])
        ids = prompts.encode(messages)
        requests.append(episode.request(REFLECTION_ROLE, ids, messages))
        prompt_ids.append(ids)
    replies = stats.call(reflector, weights, requests, settings)
    for episode, ids, reply in zip(failed, prompt_ids, replies):
        trajectory = episode.trajectory
        trajectory.turns.append(Turn(
            role=REFLECTION_ROLE, segment=trajectory.next_segment(), prompt_ids=ids,
            completion_ids=list(reply.ids), completion_logprobs=list(reply.logprobs),
            finish_reason=reply.finish_reason, text=reply.text))
        memory.add(episode.task.task_id, reply.text)


def remember(memory: ReflectionMemory, before: dict, trajectories: Sequence[Trajectory]) -> None:
    """Long-term memory after a run: `before` plus the run's reflections in trial, task, sample order (with
    several processes, each wrote only its own episodes' reflections during the run)."""
    memory.restore(before)
    for trajectory in trajectories:
        for turn in trajectory.role_turns(REFLECTION_ROLE):
            memory.add(trajectory.task_id, turn.text)
