"""Reflection: after a trial, every failed episode gets one reflection call (batched, Reflexion's semantics).

The reflection prompt shows the task and the failed attempt (prompts.reflection_prompt);
the reply is the episode's reflection turn (a one-turn conversation: the next
segment) and goes into long-term memory under its task, so the retry shows the
task's last Omega reflections. A prompt too long for the sampler drops the
attempt's oldest turns first (the last ones show the failure); an episode whose
task alone is too long gets no reflection. With several processes each process reflects
on its own episodes; `remember` then gives every process's memory every
reflection of the run, in one order.
"""

from __future__ import annotations

from typing import Optional, Sequence

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
    limit = prompts.reply_budget(settings.max_new_tokens)
    reflecting, requests, prompt_ids = [], [], []
    for episode in failed:
        fitted = _fitted_prompt(episode, prompts, limit)
        if fitted is None:
            continue
        messages, ids = fitted
        reflecting.append(episode)
        requests.append(episode.request(REFLECTION_ROLE, ids, messages))
        prompt_ids.append(ids)
    replies = stats.call(reflector, weights, requests, settings)
    for episode, ids, reply in zip(reflecting, prompt_ids, replies):
        trajectory = episode.trajectory
        trajectory.turns.append(Turn(
            role=REFLECTION_ROLE, segment=trajectory.next_segment(), prompt_ids=ids,
            completion_ids=list(reply.ids), completion_logprobs=list(reply.logprobs),
            finish_reason=reply.finish_reason, text=reply.text))
        memory.add(episode.task.task_id, reply.text)


def _fitted_prompt(episode: Episode, prompts: PromptIds, limit: Optional[int]):
    """(messages, ids) of the episode's reflection prompt within `limit` tokens, or None when none fits."""
    attempt = episode.messages[episode.opening_length:]
    for start in range(len(attempt) + 1):
        messages = prompt_lib.reflection_prompt(episode.task.prompt, attempt[start:])
        ids = prompts.encode(messages)
        if limit is None or len(ids) <= limit:
            return messages, ids
    return None


def remember(memory: ReflectionMemory, before: dict, trajectories: Sequence[Trajectory]) -> None:
    """Long-term memory after a run: `before` plus the run's reflections in trial, task, sample order (with
    several processes, each wrote only its own episodes' reflections during the run)."""
    memory.restore(before)
    for trajectory in trajectories:
        for turn in trajectory.role_turns(REFLECTION_ROLE):
            memory.add(trajectory.task_id, turn.text)
