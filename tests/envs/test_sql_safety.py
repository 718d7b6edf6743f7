"""Whatever SQL a model writes: no crash, no file touched, every statement stopped in time, the task data intact."""

import hashlib
import os
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmat_jax.demos.oracle import operation_reply
from cmat_jax.envs.sql import grading
from cmat_jax.envs.sql.database import EpisodeDatabase, Limits, build_image
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from tests.envs.sql_helpers import make_task

TIMEOUT_S = 0.25
TABLE = {
    "table_name": "T",
    "table_info": {
        "columns": [{"name": "Name"}, {"name": "Score"}, {"name": "City"}],
        "rows": [[f"name {i}", str(i * 7 % 50), f"city {i % 5}"] for i in range(50)],
    },
}
TASK = make_task("UPDATE", label=["UPDATE T SET City = 'x'"], answer_md5="[(None,)]", table=TABLE)
EXPECTED_ROWS = sorted(tuple(row) for row in TABLE["table_info"]["rows"])


# Whatever the machine's speed, these end in these error kinds (None: rows come back). Timing out is an
# error kind too: the statement was stopped, whatever it was doing (no test here reads a clock).
STOPPED = "timeout"
FULL_OR_STOPPED = ("memory", "timeout")  # the table fills up (max_database_bytes) or time runs out first


def adversarial_statements(tmp_path):
    """(statement, expected error kind or kinds)."""
    new_db = tmp_path / "attached.db"
    existing = tmp_path / "existing.db"
    cross = "FROM T a, T b, T c, T d, T e"
    never_ending = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
    return [
        (f"ATTACH DATABASE '{new_db}' AS evil", "syntax"),
        (f"ATTACH '{existing}' AS e", "syntax"),
        (f"ATTACH 'file:{new_db}?mode=rwc' AS evil", "syntax"),
        ("ATTACH 'relative.db' AS evil", "syntax"),
        ("DETACH evil", "unsupported"),
        (f"VACUUM INTO '{tmp_path / 'copy.db'}'", "unsupported"),
        ("VACUUM", "unsupported"),
        (f"SELECT load_extension('{tmp_path / 'evil.so'}')", "denied"),
        ("SELECT load_extension('libc.so.6', 'system')", "denied"),
        ("PRAGMA writable_schema = ON", "syntax"),
        ("PRAGMA writable_schema=1; UPDATE sqlite_master SET sql = 'x'", "multiple"),
        (f"PRAGMA temp_store_directory = '{tmp_path}'", "unsupported"),
        ("PRAGMA journal_mode = WAL", "unsupported"),
        ("PRAGMA hard_heap_limit = 0", "unsupported"),
        ("CREATE TABLE copy AS SELECT * FROM T", "unsupported"),
        ("CREATE TEMP TABLE scratch (a)", "unsupported"),
        ("CREATE VIEW v AS SELECT * FROM T", "unsupported"),
        ("CREATE TRIGGER t AFTER INSERT ON T BEGIN DELETE FROM T; END", "multiple"),
        ("CREATE VIRTUAL TABLE v USING fts5(x)", "unsupported"),
        ("DROP TABLE T", "unsupported"),
        ("ALTER TABLE T RENAME TO U", "unsupported"),
        ("BEGIN", "unsupported"), ("COMMIT", "unsupported"), ("ROLLBACK", "unsupported"),
        ("SAVEPOINT a", "unsupported"),
        ("SELECT * FROM T; DROP TABLE T", "multiple"),
        (f"SELECT 1; ATTACH '{new_db}' AS evil", "syntax"),
        ("SELECT * FROM sqlite_master", "table"),
        ("SELECT * FROM pragma_table_info('T')", "table"),
        ("SELECT * FROM pragma_database_list", "table"),
        (f"SELECT * INTO OUTFILE '{tmp_path / 'out.txt'}' FROM T", "syntax"),
        (f"LOAD DATA INFILE '{existing}' INTO TABLE T", "syntax"),
        ("SELECT LOAD_FILE('/etc/passwd')", "function"),
        (f"{never_ending} SELECT COUNT(*) FROM c", STOPPED),
        (f"{never_ending} SELECT x FROM c", None),  # the output cut stops it
        (f"{never_ending} SELECT x FROM c ORDER BY x DESC", STOPPED),
        (f"{never_ending} SELECT DISTINCT x, hex(zeroblob(250)) FROM c", None),
        (f"SELECT COUNT(*) {cross}", STOPPED),
        (f"SELECT a.Name {cross} ORDER BY a.Name || b.Name DESC", STOPPED),
        (f"SELECT DISTINCT a.Name || b.Name || c.Name || d.Name {cross}", STOPPED),
        (f"INSERT INTO T SELECT a.* {cross}", FULL_OR_STOPPED),
        ("UPDATE T SET Name = (SELECT group_concat(a.Name) FROM T a, T b, T c)", "memory"),
        ("DELETE FROM T WHERE Name IN (SELECT a.Name FROM T a, T b, T c, T d ORDER BY random())", STOPPED),
        ("SELECT randomblob(1000000000)", "memory"),
        ("SELECT zeroblob(2147483647)", "memory"),
        ("SELECT printf('%.*c', 1000000000, 'x')", "denied"),
        ("SELECT replace(hex(zeroblob(100000)), '0', hex(zeroblob(1000)))", "memory"),
        ("SELECT '" + "a" * 50_000 + "'", "unsupported"),
        ("(" * 3000 + "SELECT 1" + ")" * 3000, "syntax"),
        ("SELECT " + " + ".join(["1"] * 3000), "sqlite"),
        ("SELECT CAST(x'ff' AS TEXT)", "sqlite"),
        ("SELECT char(55296)", "sqlite"),
        ("SELECT abs(-9223372036854775808)", "sqlite"),
        ("SELECT 1e999, -1e999, 9223372036854775807 + 1", None),
        ("SELECT * FROM T WHERE Name LIKE '" + "%a" * 2000 + "'", "memory"),
        ("SELECT REPEAT('a', 1000000) LIKE CONCAT('%', REPEAT('a', 49000), 'b')", "memory"),
        ("SELECT Name REGEXP '(a+)+$' FROM T", "function"),
        ("SELECT mysql_fold(x'00'), mysql_text(1e999), mysql_fold(NULL)", None),
        ("SELECT \x00", "sqlite"),
        ("SELECT '\ud800'", "sqlite"),
        ("```", "syntax"),
        ("", "empty"),
    ]  # fmt: skip


def snapshot(directory):
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[path] = (os.stat(path).st_mtime_ns, hashlib.sha256(f.read()).hexdigest())
    return files


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in the SQL land here
    existing = sqlite3.connect(tmp_path / "existing.db")
    existing.execute("CREATE TABLE kept (a)")
    existing.execute("INSERT INTO kept VALUES ('untouched')")
    existing.commit()
    existing.close()
    before = snapshot(tmp_path)
    # report: the Checker analyses every statement and the database still runs it.
    env = SqlEnv(SqlEnvConfig(checker="report", limits=Limits(timeout_s=TIMEOUT_S)))
    yield env, tmp_path
    assert snapshot(tmp_path) == before, "a statement created or changed a file"
    # A fresh episode still starts from the task's rows: the final-state hash of an untouched table.
    env.reset(TASK)
    final = env.step("Action: Answer\nFinal Answer: []")
    assert final.info["answer"] == grading.hash_result_text(grading.mysql_table_hash(EXPECTED_ROWS))
    assert sorted(TASK.rows) == EXPECTED_ROWS


def run_step(env, reply):
    """One step: it returns (no exception), with an observation within the limit."""
    step = env.step(reply)
    assert isinstance(step.observation, str)
    assert len(step.observation) <= env.config.limits.max_observation_chars, reply[:120]
    return step


def test_adversarial_statements(sandbox):
    env, tmp_path = sandbox
    env.reset(TASK)
    for statement, expected in adversarial_statements(tmp_path):
        env.reset(TASK)
        step = run_step(env, operation_reply(statement))
        assert not step.done
        kinds = expected if isinstance(expected, tuple) else (expected,)
        assert step.info["error"] in kinds, (statement[:120], step.observation)
    # One episode that keeps going after every attack: the connection stays usable.
    env.reset(TASK)
    for statement, _ in adversarial_statements(tmp_path)[:14]:
        run_step(env, operation_reply(statement))
    assert run_step(env, operation_reply("SELECT COUNT(*) FROM T")).observation == "[(50,)]"


def test_like_is_bounded_and_says_why_it_refuses(sandbox):
    """LIKE runs in one SQLite step, out of the timeout's reach: value and pattern lengths are capped."""
    env, _ = sandbox
    # Values up to 1 MB here: with the default 64 KB value limit no value reaches LIKE's own limit. A generous
    # timeout: the slowest allowed LIKE must finish on a loaded 2-core machine too (the caps are under test).
    env = SqlEnv(SqlEnvConfig(checker="report", limits=Limits(timeout_s=30.0, max_value_bytes=1_000_000)))
    cases = [
        ("SELECT REPEAT('a', 1000000) LIKE CONCAT('%', REPEAT('a', 990), 'b')",
         "1105 (HY000): LIKE on a value of 1000000 characters is not supported here (at most 65536)"),
        ("SELECT 'abc' LIKE REPEAT('a', 1001)",
         "1105 (HY000): LIKE patterns longer than 1000 characters are not supported here"),
        ("SELECT REPEAT('a', 65000) LIKE CONCAT('%', REPEAT('a', 990), 'b')", "[(0,)]"),  # the slowest allowed
        ("SELECT COUNT(*) FROM T WHERE City LIKE 'CITY 1%'", "[(10,)]"),
    ]
    for statement, expected in cases:
        env.reset(TASK)
        assert run_step(env, operation_reply(statement)).observation == expected


def test_long_sort_keys_are_not_cached():
    from cmat_jax.envs.sql import mysql_text

    mysql_text._short_collation_key.cache_clear()
    assert mysql_text.collation_key("b" * 1000) > mysql_text.collation_key("A" * 1000)
    assert mysql_text.collation_key("Émile") == mysql_text.collation_key("emile")
    assert mysql_text._short_collation_key.cache_info().currsize == 2


def test_the_authorizer_alone_stops_filesystem_and_schema_access(sandbox):
    """Raw SQLite text, past the parser and the statement filter: the authorizer and limits must hold."""
    _, tmp_path = sandbox
    database = EpisodeDatabase(build_image(TASK), Limits(timeout_s=TIMEOUT_S))
    denied = [
        f"ATTACH DATABASE '{tmp_path / 'attached.db'}' AS evil",
        f"ATTACH '{tmp_path / 'existing.db'}' AS e",
        "ATTACH 'relative.db' AS evil",
        f"VACUUM INTO '{tmp_path / 'copy.db'}'",
        "VACUUM",
        "PRAGMA writable_schema = ON",
        "PRAGMA temp_store = FILE",
        "PRAGMA hard_heap_limit = 0",
        f"SELECT load_extension('{tmp_path / 'evil.so'}')",
        "SELECT printf('%.*c', 1000000000, 'x')",
        "CREATE TABLE copy (a)",
        "CREATE TEMP TABLE scratch (a)",
        "CREATE TRIGGER t AFTER INSERT ON T BEGIN DELETE FROM T; END",
        "DROP TABLE T",
        "ALTER TABLE T ADD COLUMN z",
        "BEGIN",
        "SAVEPOINT a",
        "SELECT * FROM sqlite_master",
        "SELECT count(*) FROM sqlite_master",
        "SELECT * FROM pragma_table_info('T')",
        "SELECT * FROM pragma_database_list",
    ]
    for statement in denied:
        result = database.run_sqlite(statement)
        assert result.error == "denied", (statement, result)
    assert database.run_sqlite("WITH c AS (SELECT 1) SELECT count(*) FROM c", ctes=frozenset({"c"})).text == "[(1,)]"
    assert database.run_sqlite("DELETE FROM T WHERE Score = '0'").text == "[]"
    assert database.run_sqlite("SELECT count(*) FROM T").text == "[(49,)]"
    database.close()


SQL_WORDS = [
    "SELECT", "INSERT", "INTO", "UPDATE", "DELETE", "FROM", "WHERE", "VALUES", "SET", "ORDER BY", "GROUP BY",
    "HAVING", "LIMIT", "JOIN", "ON", "UNION", "WITH RECURSIVE", "AS", "AND", "OR", "NOT", "LIKE", "IN", "BETWEEN",
    "IS NULL", "DISTINCT", "COUNT(*)", "SUM(Score)", "MAX(Name)", "ATTACH", "PRAGMA", "DROP", "CREATE", "TABLE",
    "T", "`T`", "t", "Name", "`Score`", "City", "x", "c", "*", ",", "(", ")", ";", "=", "<", ">", "+", "-", "/",
    "%", "'a'", "'%e%'", "\"q\"", "1", "0", "-1", "2.5", "1e308", "NULL", "`", "'", "\\", "\n", "x'ff'",
]  # fmt: skip
sql_like = st.lists(st.sampled_from(SQL_WORDS), max_size=25).map(" ".join)
replies = st.one_of(
    st.text(max_size=200),
    st.builds(lambda sql: operation_reply(sql), st.one_of(sql_like, st.text(max_size=120))),
    st.builds(lambda a, b: f"Action: {a}\n{b}", st.sampled_from(["Operation", "Answer", "operation", ""]), st.text()),
)


@settings(
    max_examples=5000,
    deadline=None,
    derandomize=True,  # the same examples on every run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(reply=replies)
def test_random_replies(sandbox, reply):
    env, _ = sandbox
    env.reset(TASK)
    step = run_step(env, reply)
    if step.done:
        assert step.info["status"] in ("completed", "agent_validation_failed")
        assert step.reward in (0.0, 1.0)
