"""Which successes the database showed: a correct answer counts as grounded when every value of it appeared
in an observation the environment returned during the episode.

A small model graded on its final answer alone is often right by luck: a count of 2 or 3 on
three-to-six-row tables, a colour from a handful of values, after a query that returned nothing
useful. The share of successes that are grounded (`grounded_success_rate` in the rl and eval
records) tells such luck from the skill the tasks test: querying the right row, then copying what
came back. Table-state tasks (INSERT, UPDATE) are graded on the table itself and always count.

With rl.grounded_reward the iterations train on that distinction: a success the database did not
show earns the reward of a wrong answer (`withhold_luck`), so guessing is not reinforced.
"""

from __future__ import annotations

import re
from typing import Sequence

from cmat_jax.agents.trajectory import ASSISTANT_ROLE, Trajectory
from cmat_jax.envs.sql.grading import parse_final_answer
from cmat_jax.envs.sql.tasks import MUTATION_TYPES

# A value counts as shown when it appears in an observation as a whole token (so '2' is not found in '12').
_EDGE = r"(?<![0-9A-Za-z_.]){}(?![0-9A-Za-z_])"


def shown_by_the_database(trajectory: Trajectory) -> bool:
    """Every value of the trajectory's final answer appears in one of its Assistant turns' observations."""
    answer = trajectory.final_info.get("answer")
    if not isinstance(answer, str) or trajectory.final_info.get("action") != "answer":
        return False
    observations = [t.observation for t in trajectory.role_turns(ASSISTANT_ROLE) if t.observation]
    values = [str(v).strip() for v in parse_final_answer(answer)]
    if not values or not all(values) or not observations:
        return False
    return all(any(re.search(_EDGE.format(re.escape(v)), seen) for seen in observations) for v in values)


def withhold_luck(trajectories: Sequence[Trajectory]) -> None:
    """Gives each correct but ungrounded trajectory the outcome reward of a wrong one (0); its status stays."""
    for trajectory in trajectories:
        if trajectory.correct and not grounded(trajectory):
            trajectory.reward = 0.0


def grounded(trajectory: Trajectory) -> bool:
    """A table-state task, or an answer the database showed (see the module docstring)."""
    return trajectory.task_type in MUTATION_TYPES or shown_by_the_database(trajectory)
