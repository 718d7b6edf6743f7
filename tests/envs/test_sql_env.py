"""The DBBench text protocol, MySQL semantics on SQLite, episode isolation, and the oracle on the dev tasks."""

import pytest

from cmat_jax.demos.oracle import OracleAgent, answer_reply, operation_reply
from cmat_jax.envs.base import ASSISTANT, USER, Step, run_episode
from cmat_jax.envs.sql import grading
from cmat_jax.envs.sql.database import Limits
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from cmat_jax.envs.sql.metrics import dbbench_metrics
from tests.envs.sql_helpers import PEOPLE, make_task

SELECT_TASK = make_task("other", label=["Paris"])
UPDATE_SQL = "UPDATE People SET City = 'Lyon' WHERE Name = 'Bob'"


def _update_task(answer_md5):
    return make_task("UPDATE", label=[UPDATE_SQL], answer_md5=answer_md5)


def _expected_update_hash():
    """The table after UPDATE_SQL, hashed by the formula (ints in the task data are stored as text)."""
    rows = [("Émile", "5", "Paris"), ("adam", "100", "Berlin"), ("Zoë", "17", "Berlin"), ("Bob", None, "Lyon")]
    return grading.hash_result_text(grading.mysql_table_hash(rows))


def sql(env, statement):
    """Runs one statement and returns the observation."""
    step = env.step(operation_reply(statement))
    assert not step.done
    return step.observation


@pytest.fixture
def env():
    environment = SqlEnv()
    environment.reset(SELECT_TASK)
    return environment


# -- the protocol ---------------------------------------------------------------------------------


def test_reset_opens_with_dbbench_instructions_then_the_task():
    env = SqlEnv()
    opening = env.reset(SELECT_TASK)
    assert [m.role for m in opening] == [USER, ASSISTANT, USER]
    assert opening[0].content.startswith("\nI will ask you a question, then you should help me operate a MySQL")
    assert "Final Answer: [\"ANSWER1\", \"ANSWER2\", ...]" in opening[0].content
    assert opening[1].content == "Ok."
    assert opening[2].content == SELECT_TASK.description + "\n" + SELECT_TASK.add_description


def test_operation_returns_the_raw_result_and_a_correct_answer_ends_with_reward(env):
    step = env.step(operation_reply("SELECT City FROM People WHERE Name = 'Émile'"))
    assert isinstance(step, Step) and step == (step.observation, 0.0, False, step.info)
    assert step.observation == "[('Paris',)]"
    assert step.info["round"] == 1 and step.info["executed"] and step.info["error"] is None
    final = env.step('I am sure now.\nAction: Answer\nFinal Answer: ["Paris"]')
    assert final.done and final.reward == 1.0 and final.observation == ""
    assert final.info["status"] == "completed" and final.info["correct"] and final.info["rounds"] == 1


def test_wrong_answer_scores_zero(env):
    final = env.step('Action: Answer\nFinal Answer: ["Berlin"]')
    assert final.done and final.reward == 0.0 and final.info["status"] == "completed"


@pytest.mark.parametrize(
    "reply",
    [
        "SELECT * FROM People",  # no action line
        "Action: Operation\nSELECT * FROM People",  # no sql block
        "Action: Operation\n```\nSELECT * FROM People\n```",  # block not tagged sql
        "Action: Operation```sql\nSELECT 1\n```",  # the action line must end with a newline
        "Action: Answer\nThe answer is Paris.",  # no Final Answer line
        'Action: Answer\nFinal answer: ["Paris"]',  # case matters
        'Final Answer: ["Paris"]',  # Final Answer must follow a newline
    ],
)
def test_replies_matching_no_pattern_fail_the_task(env, reply):
    final = env.step(reply)
    assert final.done and final.reward == 0.0
    assert final.info["status"] == "agent_validation_failed"


def test_final_answer_is_read_even_without_an_action_line(env):
    """DBBench looks for the Final Answer line whenever the reply is not an Operation."""
    final = env.step('Thinking...\nFinal Answer: ["Paris"]')
    assert final.info["status"] == "completed" and final.reward == 1.0


def test_only_the_first_sql_block_runs_and_newlines_become_spaces(env):
    reply = (
        "Action: Operation\n```sql\nSELECT City\nFROM People\nWHERE Name = 'Bob'\n```\n"
        "and also\n```sql\nDELETE FROM People\n```"
    )
    step = env.step(reply)
    assert step.info["sql"] == "SELECT City FROM People WHERE Name = 'Bob'"
    assert step.observation == "[('Rome',)]"
    assert sql(env, "SELECT COUNT(*) FROM People") == "[(4,)]"


def test_empty_and_non_list_answers(env):
    final = env.step("Action: Answer\nFinal Answer:")
    assert final.info["status"] == "completed" and final.info["answer"] == "" and final.reward == 0.0
    env.reset(SELECT_TASK)
    assert env.step("Action: Answer\nFinal Answer: Paris").reward == 0.0  # ' Paris' is not 'Paris'
    env.reset(make_task("counting", label=["3.0"]))
    assert env.step("Action: Answer\nFinal Answer: 3").reward == 1.0  # text ' 3' converts to 3.0


def test_round_limit():
    env = SqlEnv(SqlEnvConfig(max_rounds=3))
    env.reset(SELECT_TASK)
    for _ in range(3):
        assert not env.step(operation_reply("SELECT 1")).done
    final = env.step(operation_reply("SELECT 1"))  # a fourth operation is not run
    assert final.done and final.info["status"] == "task_limit_reached" and final.info["rounds"] == 3
    env.reset(SELECT_TASK)
    for _ in range(3):
        env.step(operation_reply("SELECT 1"))
    final = env.step('Action: Answer\nFinal Answer: ["Paris"]')  # answering at the limit is fine
    assert final.info["status"] == "completed" and final.reward == 1.0


def test_stepping_a_finished_episode_is_an_error(env):
    env.step('Action: Answer\nFinal Answer: ["Paris"]')
    with pytest.raises(RuntimeError, match="call reset"):
        env.step('Action: Answer\nFinal Answer: ["Paris"]')
    with pytest.raises(RuntimeError, match="call reset"):
        SqlEnv().step("Action: Answer\nFinal Answer: []")


def test_mutations_are_graded_on_the_table_even_after_a_format_failure():
    expected = _expected_update_hash()
    env = SqlEnv()
    env.reset(_update_task(expected))
    env.step(operation_reply(UPDATE_SQL))
    final = env.step("I changed it.")  # no action, no answer: a format failure, but the table is right
    assert final.info["status"] == "agent_validation_failed" and final.reward == 1.0
    env.reset(_update_task(expected))
    final = env.step("Action: Answer\nFinal Answer: []")  # nothing changed
    assert final.info["answer"].startswith("[('") and final.reward == 0.0


def test_output_is_truncated_at_800_characters(env):
    long_rows = sql(env, "SELECT a.Name, b.Name, c.Name FROM People a, People b, People c")
    assert len(long_rows) == 800 + len("[TRUNCATED]") and long_rows.endswith("[TRUNCATED]")
    assert long_rows.startswith("[('Émile', 'Émile', 'Émile'), ")
    short = SqlEnv(SqlEnvConfig(limits=Limits(max_output_chars=20)))
    short.reset(SELECT_TASK)
    assert sql(short, "SELECT 'abcdefghij', 'klmnopqrst'") == "[('abcdefghij', 'klm[TRUNCATED]"
    assert sql(short, "SELECT 'abcdefghijklm'") == "[('abcdefghijklm',)]"  # exactly 20 characters: whole


# -- MySQL semantics ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement, expected",
    [
        ("SELECT Name FROM People WHERE Name = 'EMILE'", "[('Émile',)]"),  # case- and accent-insensitive
        ("SELECT Name FROM People WHERE City IN ('berlin') ORDER BY Name", "[('adam',), ('Zoë',)]"),
        ("SELECT Name FROM People WHERE Name LIKE 'zo%'", "[('Zoë',)]"),
        ("SELECT Name FROM People WHERE Score > 10 ORDER BY Name", "[('adam',), ('Zoë',)]"),  # numeric
        ("SELECT Name FROM People WHERE Score > '10' ORDER BY Name", "[('adam',), ('Émile',), ('Zoë',)]"),  # text
        ("SELECT MAX(Score), MAX(Score + 0), SUM(Score), COUNT(Score) FROM People", "[('5', 100.0, 122.0, 3)]"),
        ("SELECT Name FROM People ORDER BY Name", "[('adam',), ('Bob',), ('Émile',), ('Zoë',)]"),
        ("SELECT Score FROM People WHERE Name = 'Bob'", "[(None,)]"),
        ("SELECT `Title` FROM People", "1054 (42S22): Unknown column 'Title' in 'field list'"),
        ("INSERT INTO People (Name, `Home Town`) VALUES ('a', 'b')",
         "1054 (42S22): Unknown column 'Home Town' in 'field list'"),
        ("SELECT \"Title\" FROM People LIMIT 1", "[('Title',)]"),  # MySQL: a string
        ("SELECT * FROM people", "1146 (42S02): Table 'People.people' doesn't exist"),
        ("SELECT * FROM People WHERE", "1064 (42000): You have an error in your SQL syntax; check the manual "
         "that corresponds to your MySQL server version for the right syntax to use near 'WHERE' at line 1"),
        ("", "1065 (42000): Query was empty"),
        ("SELECT Name FROM People WHERE Name = 'zoe' COLLATE utf8mb4_bin", "[]"),  # a binary collation
        ("SELECT LEFT(Name, 2), RIGHT(Name, 2), LPAD(Score, 4, '0') FROM People LIMIT 1", "[('Ém', 'le', '0005')]"),
        ("SELECT CONCAT_WS('-', Name, Score, City) FROM People WHERE City = 'Rome'", "[('Bob-Rome',)]"),
        ("SELECT SUBSTRING_INDEX('a,b,c', ',', 2), SUBSTRING_INDEX('a,b,c', ',', -1), REPEAT('ab', 2), SPACE(2)",
         "[('a,b', 'c', 'abab', '  ')]"),
        ("SELECT REPEAT('a', 100000000)", "[(None,)]"),  # over the value limit: NULL, as MySQL
        ("SELECT '12abc' + 1, 'abc' + 1, Score + 1 FROM People WHERE Name = 'adam'", "[(13.0, 1.0, 101.0)]"),
        ("WITH RECURSIVE c (x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) SELECT x FROM c",
         "[(1,), (2,), (3,)]"),  # numbers stay integers
    ],
)
def test_mysql_semantics(env, statement, expected):
    assert sql(env, statement) == expected


@pytest.mark.parametrize("update", [
    "UPDATE People SET People.City = 'Lyon' WHERE Name = 'Bob'",
    "UPDATE People p SET p.City = 'Lyon' WHERE p.Name = 'Bob'",
    "UPDATE People AS p SET p.City = 'Lyon' WHERE Name = 'Bob'",
])
def test_update_accepts_a_qualified_set_column_as_mysql_does(update):
    """SQLite allows only bare columns after SET; MySQL also the table's name or alias before them."""
    env = SqlEnv()
    env.reset(_update_task(_expected_update_hash()))
    assert sql(env, update) == "[]"
    final = env.step(answer_reply([]))
    assert final.reward == 1.0


def test_stored_numbers_become_mysql_text(env):
    assert sql(env, "INSERT INTO People VALUES (7.400, -3, 1e3)") == "[]"
    assert sql(env, "SELECT * FROM People WHERE Name = '7.400'") == "[('7.400', '-3', '1000')]"
    sql(env, "UPDATE People SET Score = Score * 2 WHERE Name = 'adam'")
    assert sql(env, "SELECT Score FROM People WHERE Name = 'adam'") == "[('200',)]"


def test_episodes_are_isolated_and_task_rows_never_change():
    env = SqlEnv()
    env.reset(SELECT_TASK)
    sql(env, "DELETE FROM People")
    assert sql(env, "SELECT COUNT(*) FROM People") == "[(0,)]"
    env.reset(SELECT_TASK)
    assert sql(env, "SELECT COUNT(*) FROM People") == "[(4,)]"
    other = SqlEnv()  # a second environment on the same task sees the original rows too
    other.reset(SELECT_TASK)
    assert sql(other, "SELECT COUNT(*) FROM People") == "[(4,)]"
    assert SELECT_TASK.rows == tuple(tuple(row) for row in PEOPLE["table_info"]["rows"])


def test_a_table_mysql_could_not_create_does_not_exist():
    """DBBench's CREATE TABLE fails in MySQL for an empty column name; every query then finds no table."""
    table = {"table_name": "T", "table_info": {"columns": [{"name": ""}, {"name": "A"}], "rows": [["1", "2"]]}}
    env = SqlEnv()
    env.reset(make_task("counting", label=["1"], table=table))
    assert sql(env, "SELECT COUNT(*) FROM T") == "1146 (42S02): Table 'T.T' doesn't exist"
    assert sql(env, "SELECT 1") == "[(1,)]"
    env.reset(make_task("INSERT", label=["INSERT INTO T VALUES ('1', '2')"], answer_md5="[(None,)]", table=table))
    final = env.step("Action: Answer\nFinal Answer: []")
    assert final.info["answer"] == "1146 (42S02): Table 'T.T' doesn't exist" and final.reward == 0.0


def test_a_table_sqlite_cannot_create_is_a_clear_error():
    table = {"table_name": "sqlite_stats", "table_info": {"columns": [{"name": "A"}], "rows": [["1"]]}}
    with pytest.raises(ValueError, match="SQLite cannot create table 'sqlite_stats'"):
        SqlEnv().reset(make_task("counting", label=["1"], table=table))


# -- the Checker inside the environment -----------------------------------------------------------


def test_checker_modes():
    enforce = SqlEnv(SqlEnvConfig(checker="enforce"))
    enforce.reset(SELECT_TASK)
    step = enforce.step(operation_reply("SELECT Title FROM People"))
    assert not step.info["executed"] and not step.info["verdict"].ok
    assert step.observation == step.info["verdict"].reason and step.observation.startswith("Unknown column 'Title'")
    assert enforce.step(operation_reply("DELETE FROM People")).info["verdict"].rule == "statement_kind"
    assert sql(enforce, "SELECT COUNT(*) FROM People") == "[(4,)]"  # the rejected DELETE never ran
    assert enforce.step("Action: Answer\nFinal Answer: []").info["checker_rejections"] == 2

    report = SqlEnv(SqlEnvConfig(checker="report"))
    report.reset(SELECT_TASK)
    step = report.step(operation_reply("SELECT Title FROM People"))
    assert step.info["executed"] and not step.info["verdict"].ok
    assert step.observation == "1054 (42S22): Unknown column 'Title' in 'field list'"

    off = SqlEnv(SqlEnvConfig(checker="off"))
    off.reset(SELECT_TASK)
    assert off.step(operation_reply("SELECT 1")).info["verdict"] is None
    with pytest.raises(ValueError, match="checker must be one of"):
        SqlEnvConfig(checker="strict")


# -- the oracle -----------------------------------------------------------------------------------


def test_oracle_replies_follow_the_protocol():
    assert answer_reply(["it's", 2.0]) == "Action: Answer\nFinal Answer: [\"it's\", 2.0]"
    assert operation_reply("SELECT 1") == "Action: Operation\n```sql\nSELECT 1\n```"


def test_oracle_scores_everything_on_the_dev_tasks(dev_tasks):
    env = SqlEnv(SqlEnvConfig(checker="enforce"))
    episodes = [run_episode(env, OracleAgent(), task) for task in dev_tasks]
    metrics = dbbench_metrics([e.final_info for e in episodes])
    assert metrics["SELECT_accuracy"] == 1.0 and metrics["counts"]["SELECT"] == 20
    assert metrics["INSERT_accuracy"] == 1.0 and metrics["UPDATE_accuracy"] == 1.0
    assert metrics["overall_cat_accuracy"] == 1.0
    assert metrics["checker_rejections"] == 0 and metrics["format_failures"] == 0
    mutation_steps = [e.steps[0] for e in episodes if len(e.steps) == 2]
    assert len(mutation_steps) == 40 and all(s["error"] is None for s in mutation_steps)


def test_metrics_follow_dbbench():
    outcomes = [
        {"task_type": "counting", "correct": True, "status": "completed"},
        {"task_type": "other", "correct": False, "status": "agent_validation_failed"},
        {"task_type": "DELETE", "correct": True, "status": "completed"},  # DBBench counts it under SELECT
        {"task_type": "INSERT", "correct": True, "status": "task_limit_reached", "checker_rejections": 2},
    ]
    metrics = dbbench_metrics(outcomes)
    assert metrics["counting_accuracy"] == 1.0 and metrics["other_accuracy"] == 0.0
    assert metrics["SELECT_accuracy"] == pytest.approx(2 / 3) and metrics["counts"]["SELECT"] == 3
    assert metrics["UPDATE_accuracy"] == 0.0 and metrics["counts"]["UPDATE"] == 0  # absent: 0, as DBBench
    assert metrics["overall_cat_accuracy"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert metrics["format_failures"] == 1 and metrics["round_limit_failures"] == 1
    assert metrics["checker_rejections"] == 2 and metrics["episodes"] == 4 and metrics["correct"] == 3
