"""Dynamic sampling (rl.groups_per_update, DAPO's): an update made only of groups that carry signal.

A GRPO group whose rewards are all equal has advantages of exactly 0 and teaches nothing; when most groups are
like that (a warm start that solves almost every task), an update is a few groups' worth of signal. With
rl.groups_per_update N > 0 an iteration plays rounds of rollout.tasks_per_iteration tasks, each round's tasks
new to the iteration (the User draws them, favouring its curriculum's), until N of the tasks played have an
informative Assistant group, rl.max_sampling_rounds rounds are played, or no task of the pool is left. The
update trains on the trajectories of the first N informative tasks, in play order (every trained role's turns
in them); the groups without signal are dropped, and so are informative ones past the N-th, so the update's
size stays fixed. Rounds have a fixed size so the sampler's shapes stay the same. Every task played is
recorded with the User (its curriculum learns from the dropped ones too), and the rollout metrics count every
episode played. An episode's key depends on the iteration's key, its task id, sample and trial only
(agents/episode.py), and no task is played twice in one iteration, so a round needs no key of its own.

N = 0 (off): one round of rollout.tasks_per_iteration tasks, every trajectory trained: the loop as it was.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Collection, Sequence

from cmat_jax.agents.trajectory import Trajectory
from cmat_jax.envs.base import Task


@dataclasses.dataclass(frozen=True)
class Rollouts:
    """One iteration's episodes: what was played and what the update trains on."""

    tasks: list[Task]  # every task played, in play order
    trajectories: list[Trajectory]  # every trajectory played
    kept: list[Trajectory]  # the trajectories the update trains on
    report: dict[str, float]  # sampling_rounds, tasks_played, groups_dropped, groups_surplus; {} when off


def play_rounds(draw: Callable[[int, Collection[str]], list[Task]], play: Callable[[list[Task]], list[Trajectory]],
                informative: Callable[[Sequence[Trajectory]], set[str]], *, tasks_per_round: int,
                groups_per_update: int, max_rounds: int) -> Rollouts:
    """`draw(count, exclude)`: up to `count` tasks whose ids are not in `exclude`; `play(tasks)`: their
    trajectories; `informative(trajectories)`: the task ids among them whose Assistant group carries signal."""
    if groups_per_update == 0:
        tasks = draw(tasks_per_round, ())
        trajectories = play(tasks)
        return Rollouts(tasks, trajectories, trajectories, {})
    tasks: list[Task] = []
    trajectories: list[Trajectory] = []
    signal: list[str] = []  # informative task ids, in play order
    rounds = 0
    while rounds < max_rounds and len(signal) < groups_per_update:
        drawn = draw(tasks_per_round, {t.task_id for t in tasks})
        if not drawn:
            break  # every task of the pool was played in this iteration
        rounds += 1
        played = play(drawn)
        found = informative(played)
        tasks += drawn
        trajectories += played
        signal += [t.task_id for t in drawn if t.task_id in found]
    kept = set(signal[:groups_per_update])
    report = {"sampling_rounds": float(rounds), "tasks_played": float(len(tasks)),
              "groups_dropped": float(len(tasks) - len(signal)),
              "groups_surplus": float(max(len(signal) - groups_per_update, 0))}
    return Rollouts(tasks, trajectories, [t for t in trajectories if t.task_id in kept], report)
