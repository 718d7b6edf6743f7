"""Every reward of a rollout, in one place.

- The outcome (`outcome_reward`): 1 when the episode is correct, else 0. The
  engine writes it on `Trajectory.reward` when the episode ends.
- The Assistant's training reward (`assistant_reward`): the outcome, except that
  a reply the environment could not read earns `format_penalty` (rl.format_penalty,
  default -1), so a format failure is distinguishable from a wrong answer.
- A learned Checker turn's reward (`checker_reward`): 1 when its verdict agrees
  with what execution showed, else 0. The engine writes it on the turn.
- With rl.statement_credit w > 0 the loop adds to the outcome of a readable
  episode w times the share of its statements that ran without error
  (`add_statement_credit`): a denser signal than the answer alone, for a
  policy whose statements the Checker or the database mostly refuse.
"""

from __future__ import annotations

from cmat_jax.agents.trajectory import ASSISTANT_ROLE, CHECKER_ROLE, CORRECT, FORMAT_FAILURE, Trajectory, Turn


def outcome_reward(trajectory: Trajectory) -> float:
    return 1.0 if trajectory.status == CORRECT else 0.0


def assistant_reward(trajectory: Trajectory, format_penalty: float) -> float:
    if trajectory.status == FORMAT_FAILURE:
        return float(format_penalty)
    return trajectory.reward


def clean_statement_share(trajectory: Trajectory) -> float:
    """The share of the Assistant's statements in `trajectory` that ran without error (0 without any)."""
    statements = [t for t in trajectory.role_turns(ASSISTANT_ROLE) if t.info.get("sql") is not None]
    clean = [t for t in statements if t.info.get("executed", True) and t.info.get("error") is None]
    return len(clean) / len(statements) if statements else 0.0


def add_statement_credit(trajectories, weight: float) -> None:
    """Adds `weight` x clean_statement_share to the outcome reward of each readable trajectory (a format
    failure keeps rl.format_penalty, which assistant_reward gives it whatever its outcome)."""
    for trajectory in trajectories:
        if trajectory.status != FORMAT_FAILURE:
            trajectory.reward += weight * clean_statement_share(trajectory)


def checker_reward(turn: Turn, trajectory: Trajectory) -> float:
    """+1 when a learned Checker's verdict agrees with what execution showed: it approved a statement
    that ran without error in an episode that succeeded, or rejected one in an episode that failed."""
    if not turn.verdict["ok"]:
        return float(not trajectory.correct)
    judged = trajectory.turns[turn.info["judged_turn"]]
    ran_clean = judged.info.get("executed", False) and judged.info.get("error") is None
    return float(ran_clean and trajectory.correct)


def score(trajectory: Trajectory) -> None:
    """Writes the rewards of a finished trajectory (its status set): the outcome and each Checker turn's."""
    trajectory.reward = outcome_reward(trajectory)
    for turn in trajectory.role_turns(CHECKER_ROLE):
        turn.reward = checker_reward(turn, trajectory)
