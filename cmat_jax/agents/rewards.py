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


def statements(trajectory: Trajectory) -> list[Turn]:
    """The Assistant's turns in `trajectory` that proposed a SQL statement (run, or blocked by the Checker)."""
    return [t for t in trajectory.role_turns(ASSISTANT_ROLE) if t.info.get("sql") is not None]


def ran_clean(turn: Turn) -> bool:
    """The statement of `turn` was executed (not blocked) and raised no error."""
    return turn.info.get("executed", False) and turn.info.get("error") is None


def clean_statement_share(trajectory: Trajectory) -> float:
    """The share of the Assistant's statements in `trajectory` that ran without error (0 without any)."""
    proposed = statements(trajectory)
    return sum(map(ran_clean, proposed)) / len(proposed) if proposed else 0.0


def recovery_counts(trajectories) -> tuple[int, int]:
    """(trajectories whose first statement did not run clean, those of them that still ended correct): how
    often the Assistant recovers within an episode from an error or a Checker block."""
    firsts = [(t, statements(t)[:1]) for t in trajectories]
    failed = [t for t, first in firsts if first and not ran_clean(first[0])]
    return len(failed), sum(t.correct for t in failed)


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
    return float(ran_clean(trajectory.turns[turn.info["judged_turn"]]) and trajectory.correct)


def score(trajectory: Trajectory) -> None:
    """Writes the rewards of a finished trajectory (its status set): the outcome and each Checker turn's."""
    trajectory.reward = outcome_reward(trajectory)
    for turn in trajectory.role_turns(CHECKER_ROLE):
        turn.reward = checker_reward(turn, trajectory)
