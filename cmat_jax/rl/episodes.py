"""Trajectories -> rewards, advantage groups and training segments; rollout metrics.

Rewards are agents/rewards.py's: an Assistant trajectory earns its outcome (1
when correct, 0 when wrong, out of rounds or context) or `format_penalty`
(default -1) when DBBench could not read a reply; a learned Checker turn earns
the reward the engine wrote on it (its verdict's agreement with execution).

Advantages are computed per (role, task) group: the Assistant's trajectories of
one task in one iteration (G samples x trials), and the Checker's turns of one
task. A group whose rewards are all equal carries no signal; its tokens get
loss mask 0, which removes them from the objective and from the KL term.

A segment is one append-only context of one role: its last turn's prompt +
completion ids, with the loss mask on every completion of that role inside it.
Instructions, observations, Checker verdicts and memory text are never trained.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from cmat_jax.agents.rewards import assistant_reward, recovery_counts, statements
from cmat_jax.agents.trajectory import ASSISTANT_ROLE, CHECKER_ROLE, FORMAT_FAILURE, Trajectory, Turn
from cmat_jax.rl.advantages import GroupAdvantages
from cmat_jax.rl.grounding import grounded
from cmat_jax.rl.rows import Segment

TRAINABLE_ROLES = (ASSISTANT_ROLE, CHECKER_ROLE)


def role_samples(trajectories: Sequence[Trajectory], role: str, format_penalty: float
                 ) -> list[tuple[str, float, list[Turn]]]:
    """(group key, reward, the turns that reward trains) per sample of `role`."""
    samples = []
    for trajectory in trajectories:
        if role == ASSISTANT_ROLE:
            turns = trajectory.role_turns(ASSISTANT_ROLE)
            if turns:
                samples.append((trajectory.task_id, assistant_reward(trajectory, format_penalty), turns))
        else:
            samples += [(trajectory.task_id, float(t.reward), [t]) for t in trajectory.role_turns(role)]
    return samples


def segments_of(turns: Sequence[Turn], advantage: float) -> list[Segment]:
    """One Segment per segment id among `turns`, each turn's completion trained with `advantage`."""
    by_segment: dict[int, list[Turn]] = {}
    for turn in turns:
        by_segment.setdefault(turn.segment, []).append(turn)
    segments = []
    for members in by_segment.values():
        last = members[-1]
        ids = np.asarray(last.prompt_ids + last.completion_ids, np.int32)
        mask = np.zeros(len(ids), np.int32)
        logprobs = np.zeros(len(ids), np.float32)
        for turn in members:
            start, end = len(turn.prompt_ids), len(turn.prompt_ids) + len(turn.completion_ids)
            if list(ids[:end]) != turn.prompt_ids + turn.completion_ids:
                raise AssertionError("turns of one segment must extend each other's ids (append-only record)")
            mask[start:end] = 1
            logprobs[start:end] = turn.completion_logprobs
        segments.append(Segment(ids=ids, loss_mask=mask, logprobs=logprobs,
                                advantages=np.where(mask > 0, advantage, 0.0).astype(np.float32)))
    return segments


def advantage_groups(trajectories: Sequence[Trajectory], role: str, format_penalty: float,
                     estimator: Callable[[np.ndarray, list], GroupAdvantages]
                     ) -> tuple[list[tuple[str, float, list[Turn]]], Optional[GroupAdvantages]]:
    """The role's samples and `estimator`'s advantages over their (role, task) groups; None without samples."""
    samples = role_samples(trajectories, role, format_penalty)
    if not samples:
        return samples, None
    rewards = np.asarray([reward for _, reward, _ in samples], np.float32)
    return samples, estimator(rewards, [key for key, _, _ in samples])


def signal_tasks(trajectories: Sequence[Trajectory], format_penalty: float,
                 estimator: Callable[[np.ndarray, list], GroupAdvantages]) -> set[str]:
    """The task ids whose Assistant group carries signal (is not masked): dynamic sampling's test. The
    estimator must keep no state across calls (grpo, rloo)."""
    samples, result = advantage_groups(trajectories, ASSISTANT_ROLE, format_penalty, estimator)
    if result is None:
        return set()
    return {key for (key, _, _), masked in zip(samples, result.masked) if not masked}


def zero_adv_frac(trajectories: Sequence[Trajectory], role: str, format_penalty: float,
                  estimator: Callable[[np.ndarray, list], GroupAdvantages]) -> float:
    """The share of the role's groups among `trajectories` that carry no signal (0 without samples)."""
    _, result = advantage_groups(trajectories, role, format_penalty, estimator)
    return 0.0 if result is None else result.zero_adv_frac


def training_segments(trajectories: Sequence[Trajectory], role: str, format_penalty: float,
                      estimator: Callable[[np.ndarray, list], GroupAdvantages], *, positive_only: bool = False,
                      reinforced_only: bool = False) -> tuple[list[Segment], dict]:
    """The role's segments with advantages from `estimator(rewards, group_ids)` (rl/advantages.py), and
    its report (zero_adv_frac, groups). Samples of masked groups are left out: they carry no signal.

    `positive_only` (rl.positive_only): negative advantages become 0, so only samples that beat their
    baseline are reinforced (filtered self-imitation); the others add no gradient, and their tokens still
    count in the token mean. `reinforced_only` (rl.reinforced_only): samples whose advantage is 0 after that
    are left out as well, so the update spends no compute on them and its token mean runs over the
    reinforced samples' tokens alone."""
    samples, result = advantage_groups(trajectories, role, format_penalty, estimator)
    if result is None:
        return [], {"zero_adv_frac": 0.0, "groups": 0.0}
    segments = []
    for (_, _, turns), advantage, masked in zip(samples, result.advantages, result.masked):
        advantage = max(float(advantage), 0.0) if positive_only else float(advantage)
        if not masked and (advantage != 0.0 or not reinforced_only):
            segments += segments_of(turns, advantage)
    return segments, result.report()


def rollout_metrics(trajectories: Sequence[Trajectory], format_penalty: float) -> dict[str, float]:
    """success_rate, reward_mean, format_failure_rate, grounded_success_rate over trajectories;
    checker_block_rate over statements; first_statement_failed_rate (its first statement errored or was
    blocked) and recovery_rate (the share of those that still ended correct)."""
    n = max(len(trajectories), 1)
    proposed = [t for trajectory in trajectories for t in statements(trajectory)]
    blocked = [t for t in proposed if not t.info.get("executed", True)]
    failed_first, recovered = recovery_counts(trajectories)
    return {
        "success_rate": sum(t.correct for t in trajectories) / n,
        "reward_mean": sum(assistant_reward(t, format_penalty) for t in trajectories) / n,
        "format_failure_rate": sum(t.status == FORMAT_FAILURE and not t.correct for t in trajectories) / n,
        "checker_block_rate": len(blocked) / max(len(proposed), 1),
        # successes whose answer the database showed: the rest were right by luck (rl/grounding.py)
        "grounded_success_rate": sum(t.correct and grounded(t) for t in trajectories) / n,
        "first_statement_failed_rate": failed_first / n,
        "recovery_rate": recovered / max(failed_first, 1),
    }


def reflections_used(trajectories: Sequence[Trajectory]) -> int:
    """The retries among `trajectories`: each follows one reflection on the failed trial before it."""
    return sum(t.trial > 0 for t in trajectories)
