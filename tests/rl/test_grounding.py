"""grounded_success_rate: a success counts as grounded only when the database showed its answer; and the
recovery records: episodes that solve the task after a failed first statement."""

import dataclasses

from cmat_jax.agents.engine import RolloutConfig, RolloutEngine
from cmat_jax.agents.replies import ScriptedReplies
from cmat_jax.agents.user import User
from cmat_jax.demos.oracle import OracleAgent
from cmat_jax.envs.sql.env import SqlEnvConfig, SqlEnvironments
from cmat_jax.rl.episodes import rollout_metrics
from cmat_jax.rl.grounding import grounded
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.taskgen.generate import generate_tasks


def oracle_trajectories(count=6):
    tasks = generate_tasks(count, 0, "lookup")
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig()),
                           RolloutConfig(checker="off", assistant=SamplingPolicy(1, 0.0)),
                           assistant=ScriptedReplies(lambda: OracleAgent(query_first=True)))
    return engine.run(tasks, user=User(tasks, seed=0))


def with_observations(trajectory, text):
    return dataclasses.replace(trajectory, turns=[dataclasses.replace(t, observation=text if t.observation else None)
                                                  for t in trajectory.turns])


def test_the_oracle_reads_its_answers_from_the_database_and_a_guess_does_not():
    trajectories = oracle_trajectories()
    assert all(t.correct and grounded(t) for t in trajectories)
    assert rollout_metrics(trajectories, -1.0)["grounded_success_rate"] == 1.0
    guesses = [with_observations(t, "[]") for t in trajectories]
    assert not any(grounded(t) for t in guesses)
    assert rollout_metrics(guesses, -1.0)["grounded_success_rate"] == 0.0


def test_a_value_must_appear_whole():
    trajectory = oracle_trajectories(1)[0]
    answer = trajectory.final_info["answer"].strip()[2:-2]  # " ['29']" -> 29
    assert grounded(with_observations(trajectory, f"[('{answer}',)]"))
    assert not grounded(with_observations(trajectory, f"[('1{answer}',)]"))
    assert not grounded(with_observations(trajectory, f"[('{answer}1',)]"))


def test_grounded_reward_withholds_the_reward_of_a_lucky_success_only():
    from cmat_jax.rl.episodes import training_segments
    from cmat_jax.rl.advantages import make_advantage
    from cmat_jax.rl.grounding import withhold_luck

    read, guessed = oracle_trajectories(2)
    guessed = with_observations(guessed, "[]")
    withhold_luck([read, guessed])
    assert (read.reward, guessed.reward) == (1.0, 0.0) and guessed.correct  # the grade stays; the reward goes
    assert rollout_metrics([read, guessed], -1.0)["success_rate"] == 1.0
    # A group of one read answer and one guess carries the signal between them.
    guessed = dataclasses.replace(guessed, task_id=read.task_id, sample=1)
    segments, report = training_segments([read, guessed], "assistant", -1.0, make_advantage("grpo"),
                                         positive_only=True, reinforced_only=True)
    assert report["zero_adv_frac"] == 0.0 and len(segments) == 1


def test_statement_credit_rewards_the_share_of_statements_that_ran_clean():
    from cmat_jax.agents.rewards import add_statement_credit, clean_statement_share
    from cmat_jax.agents.trajectory import WRONG

    read, failed = oracle_trajectories(2)
    assert clean_statement_share(read) == 1.0  # the oracle's statements all run
    statements = [t for t in failed.role_turns("assistant") if t.info.get("sql") is not None]
    failed = dataclasses.replace(failed, status=WRONG, turns=[
        dataclasses.replace(t, info={**t.info, "error": "1054 (42S22): Unknown column"}) if t is statements[0] else t
        for t in failed.turns], reward=0.0)
    share = (len(statements) - 1) / len(statements)
    assert clean_statement_share(failed) == share
    add_statement_credit([read, failed], 0.25)
    assert (read.reward, failed.reward) == (1.25, 0.25 * share)


def test_recovery_counts_the_episodes_that_solve_the_task_after_a_failed_first_statement():
    from cmat_jax.eval_report import variant_metrics

    tasks = generate_tasks(4, 0, "lookup")
    mistakes = {tasks[0].task_id: "SELECT * FROM no_such_table", tasks[1].task_id: "SELECT nonsense FROM"}
    engine = RolloutEngine(SqlEnvironments(SqlEnvConfig()),
                           RolloutConfig(checker="off", assistant=SamplingPolicy(1, 0.0)),
                           assistant=ScriptedReplies(lambda: OracleAgent(query_first=True, mistakes=mistakes)))
    trajectories = engine.run(tasks, user=User(tasks, seed=0))
    metrics = rollout_metrics(trajectories, -1.0)
    assert metrics["first_statement_failed_rate"] == 0.5 and metrics["recovery_rate"] == 1.0  # both recover
    assert variant_metrics(trajectories, 1)["recovery"] == {"first_statement_failed": 2, "recovered": 2, "rate": 1.0}
    # An episode that fails after its error is not a recovery; a clean one counts in neither.
    wrong = dataclasses.replace(trajectories[0], status="wrong")
    assert rollout_metrics([wrong, trajectories[2]], -1.0)["recovery_rate"] == 0.0
