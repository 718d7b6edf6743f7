"""Mistaken first statements: each kind errors in the environment and changes nothing; draws are seeded."""

import dataclasses
import random

import pytest

from cmat_jax.demos import mistakes
from cmat_jax.demos.oracle import OracleAgent, answer_reply, operation_reply
from cmat_jax.envs.base import run_episode
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from cmat_jax.taskgen.generate import generate_tasks

TASKS = generate_tasks(40, 5, "dbbench")


def env_episode(task, statements):
    """Runs `statements` then an empty answer in the real environment: each step's info, then the final info."""
    env = SqlEnv(SqlEnvConfig())
    env.reset(task)
    infos = [env.step(operation_reply(sql)).info for sql in statements]
    return infos, env.step(answer_reply([])).info


def table_state(task, statements):
    """The task table's state after `statements`, read by a mutation task's grading (the hash query's text)."""
    # A SELECT-family task is graded as an INSERT here only so that the episode's end reports the table's hash.
    probe = task if task.is_mutation else dataclasses.replace(task, task_type="INSERT", label=("",), answer_md5="")
    return env_episode(probe, statements)[1]["answer"]


@pytest.mark.parametrize("kind", mistakes.KINDS)
def test_each_kind_errors_in_the_environment_and_leaves_the_table_unchanged(kind):
    rng = random.Random(kind)
    confirmed = applicable = 0
    for task in TASKS:
        statements = mistakes.candidates(task, kind)
        if not statements:
            continue
        applicable += 1
        sql = rng.choice(statements).sql
        gold = mistakes.gold_statement(task)
        assert sql != gold
        error = mistakes.rejection(task, sql)
        (info,), _ = env_episode(task, [sql])
        if error is None:  # the candidate runs (or changes the table): the check must say so too
            assert info["error"] is None or table_state(task, [sql]) != table_state(task, [])
            continue
        confirmed += 1
        assert info["error"] is not None and info["executed"]
        assert table_state(task, [sql]) == table_state(task, [])
        # The gold statement after the error still solves the task.
        env = SqlEnv(SqlEnvConfig())
        episode = run_episode(env, OracleAgent(query_first=True, mistakes={task.task_id: sql}), task)
        assert episode.final_info["correct"], (task.task_id, sql)
    assert applicable >= 20 and confirmed >= applicable - 1, (kind, applicable, confirmed)


def test_error_texts_are_the_mysql_ones_the_dev_failures_show():
    task = next(t for t in TASKS if " " in t.table_name and not t.is_mutation)
    sql = mistakes.candidates(task, "table")[0].sql
    assert mistakes.rejection(task, sql).startswith("1146 (42S02): Table ")
    selects = [t for t in TASKS if not t.is_mutation]
    unknown = [mistakes.rejection(t, m.sql) for t in selects for m in mistakes.candidates(t, "column")]
    assert any(e and e.startswith("1054 (42S22): Unknown column ") for e in unknown)


def test_a_mistake_that_runs_is_refused():
    # `Mountain range` unquoted reads as column Mountain with the alias `range`: it runs, so it is no mistake.
    task = next(t for t in generate_tasks(200, 0, "dbbench") if t.gold_query and "`Mountain range`" in t.gold_query)
    sql = task.gold_query.replace("`Mountain range`", "Mountain range")
    assert sql in [m.sql for m in mistakes.candidates(task, "unquoted")]
    assert mistakes.rejection(task, sql) is None
    drawn = mistakes.checked_mistake(task, random.Random(0))
    assert drawn is not None and drawn.sql != sql


def test_mutation_mistakes_never_change_the_table():
    for task in [t for t in TASKS if t.is_mutation]:
        for kind in mistakes.KINDS:
            for sql in [m.sql for m in mistakes.candidates(task, kind)[:3]]:
                if mistakes.rejection(task, sql) is not None:
                    assert table_state(task, [sql]) == table_state(task, [])


def test_draws_are_seeded_and_every_generated_task_gets_a_confirmed_mistake():
    first = [mistakes.checked_mistake(t, random.Random(f"7:{t.task_id}")) for t in TASKS]
    again = [mistakes.checked_mistake(t, random.Random(f"7:{t.task_id}")) for t in TASKS]
    other = [mistakes.checked_mistake(t, random.Random(f"8:{t.task_id}")) for t in TASKS]
    assert first == again and first != other
    assert None not in first


def test_dev_tasks_mistakes_error_without_side_effects(dev_tasks):
    rng = random.Random(0)
    found = 0
    for task in dev_tasks:
        mistake = mistakes.checked_mistake(task, rng)
        if mistake is None:
            continue
        sql = mistake.sql
        found += 1
        (info,), _ = env_episode(task, [sql])
        assert info["error"] is not None
        if task.is_mutation:
            assert table_state(task, [sql]) == table_state(task, [])
    assert found >= len(dev_tasks) * 3 // 4


def test_tasks_without_a_gold_statement_get_none():
    task = dataclasses.replace(next(t for t in TASKS if not t.is_mutation), gold_query=None)
    assert all(mistakes.candidates(task, kind) == [] for kind in mistakes.KINDS)
    assert mistakes.checked_mistake(task, random.Random(0)) is None
    with pytest.raises(ValueError, match="kind must be one of"):
        mistakes.candidates(task, "typo")


def test_oracle_sends_the_mistake_then_the_gold_statement():
    task = next(t for t in TASKS if t.is_mutation)
    sql = mistakes.checked_mistake(task, random.Random(1)).sql
    oracle = OracleAgent(query_first=True, mistakes={task.task_id: sql})
    oracle.begin(task)
    assert [oracle.act(()), oracle.act(()), oracle.act(())] == [
        operation_reply(sql), operation_reply(task.gold_sql), answer_reply([])]
    plain = OracleAgent(query_first=False, mistakes={task.task_id: sql})
    select = next(t for t in TASKS if not t.is_mutation)
    with pytest.raises(ValueError, match="runs no statement"):
        OracleAgent(query_first=False, mistakes={select.task_id: "SELECT 1"}).begin(select)
    plain.begin(task)  # mutations run their gold SQL whatever query_first says
    assert plain.act(()) == operation_reply(sql)


def test_each_mistake_names_what_is_wrong():
    seen = set()
    for task in TASKS:
        for kind in mistakes.KINDS:
            for m in mistakes.candidates(task, kind):
                assert m.kind == kind and m.wrong in m.sql
                assert m.right == task.table_name if kind == "table" else m.right in task.columns
                assert (m.wrong == m.right) == (kind == "unquoted")
        drawn = mistakes.checked_mistake(task, random.Random(task.task_id))
        if drawn is not None:
            seen.add(drawn.kind)
            assert mistakes.rejection(task, drawn.sql) is not None
    assert seen == set(mistakes.KINDS)
