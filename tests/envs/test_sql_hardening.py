"""The attack report's reproducers, as regression tests: statements stopped in time, memory bounded,
observations within their limit, table-valued functions refused for the right reason.

No test reads a clock: a statement that outruns its timeout ends with the error kind "timeout".
"""

import hashlib
import sqlite3
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmat_jax.demos.oracle import operation_reply
from cmat_jax.envs.sql import deadline, dialect, grading, linear_functions, mysql_text
from cmat_jax.envs.sql.checker import Checker
from cmat_jax.envs.sql.database import EpisodeDatabase, Limits, build_image, truncate
from cmat_jax.envs.sql.mysql_errors import MysqlError
from cmat_jax.envs.sql.deadline import WATCHDOG, StatementTimeout
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from tests.envs.sql_helpers import make_task

# The report's table: one column, 76 rows.
TABLE = {"table_name": "T", "table_info": {"columns": [{"name": "c"}], "rows": [[f"r{i}"] for i in range(76)]}}
TASK = make_task("UPDATE", label=["UPDATE T SET c = 'x'"], answer_md5="[(None,)]", table=TABLE)
ORIGINAL_HASH = grading.hash_result_text(grading.mysql_table_hash([(f"r{i}",) for i in range(76)]))


def episode(timeout_s=2.0, checker="report", **limits):
    env = SqlEnv(SqlEnvConfig(checker=checker, limits=Limits(timeout_s=timeout_s, **limits)))
    env.reset(TASK)
    return env


def run(env, statement):
    step = env.step(operation_reply(statement))
    assert not step.done
    assert len(step.observation) <= env.config.limits.max_observation_chars
    return step


# -- time -----------------------------------------------------------------------------------------


def test_collation_on_text_that_nfkd_expands_is_stopped():
    """Each comparison folded ~400,000 characters; the statement ran 19.9 s past a 2 s timeout."""
    env = episode(timeout_s=0.1)
    step = run(env, "SELECT COUNT(*) FROM T a, T b WHERE CONCAT(a.c, b.c) = REPEAT('ﷺ', 21000)")
    assert step.info["error"] == "timeout", step.observation
    # The report's 30,000 repetitions exceed the 64 KB value limit: MySQL's REPEAT then gives NULL.
    assert run(env, "SELECT COUNT(*) FROM T a, T b WHERE CONCAT(a.c, b.c) = REPEAT('ﷺ', 30000)").observation == "[(0,)]"


@pytest.mark.parametrize("clause", ["ORDER BY x", "GROUP BY x", "ORDER BY 1"])
def test_sorting_text_that_nfkd_expands_is_stopped_or_refused(clause):
    """A whole sort ran inside one sorter instruction, 46 s on 76 rows."""
    env = episode(timeout_s=0.1)
    step = run(env, f"SELECT x FROM (SELECT CONCAT(REPEAT('ﷺ', 1800), c) AS x FROM T) s {clause}")
    assert step.info["error"] == "timeout", step.observation
    # The report's 15,000 repetitions: the sort key (270,000 characters) is over the value limit.
    step = run(episode(), f"SELECT x FROM (SELECT CONCAT(REPEAT('ﷺ', 15000), c) AS x FROM T) s {clause}")
    assert step.observation.startswith("1105 (HY000): sorting or grouping by this value needs a collation key of "
                                       "more than 65536 bytes"), step.observation


def test_instr_replace_and_locate_answer_at_the_value_limit():
    """INSTR took 5.5 s in one call (time ~ len(haystack) x len(needle)); these are linear."""
    env = episode()
    needle, haystack = "CONCAT(REPEAT('a', 32000), 'b')", "REPEAT('a', 65000)"
    assert run(env, f"SELECT INSTR({haystack}, {needle}), LOCATE({needle}, {haystack}, 2)").observation == "[(0, 0)]"
    step = run(env, f"SELECT LENGTH(REPLACE({haystack}, {needle}, 'x')), LENGTH(REPLACE({haystack}, 'aa', 'b'))")
    assert step.observation == "[(65000, 32500)]"
    # The report's sizes are over the value limit: REPEAT gives NULL, so INSTR does too.
    assert run(env, "SELECT INSTR(REPEAT('a', 999000), CONCAT(REPEAT('a', 499000), 'b'))").observation == "[(None,)]"
    # SQLite's own replace() would return this invalid UTF-8 as text; the linear one it runs returns a blob.
    assert run(env, "SELECT REPLACE(x'ff', x'ff', x'fe')").observation == "[(b'\\xfe',)]"


def test_a_sort_never_runs_through_the_python_collation():
    """ORDER BY, GROUP BY, PARTITION BY and UNION ... ORDER BY sort by keys compared in C."""
    database = EpisodeDatabase(build_image(TASK))
    statements = [
        "SELECT c FROM T ORDER BY c", "SELECT c, COUNT(*) FROM T GROUP BY c", "SELECT c FROM T ORDER BY 1 DESC",
        "SELECT * FROM T ORDER BY 1", "SELECT c FROM T GROUP BY 1", "SELECT DISTINCT c FROM T ORDER BY c",
        "SELECT c FROM T UNION SELECT c FROM T ORDER BY 1", "SELECT * FROM T UNION ALL SELECT * FROM T ORDER BY c",
        "SELECT ROW_NUMBER() OVER (PARTITION BY c ORDER BY c) FROM T", "SELECT c FROM T ORDER BY CAST(c AS SIGNED)",
        "SELECT c FROM T ORDER BY c COLLATE utf8mb4_0900_ai_ci", "SELECT UPPER(c) u FROM T GROUP BY u ORDER BY u",
        "SELECT c FROM (SELECT c FROM T ORDER BY c) s ORDER BY c DESC", "DELETE FROM T ORDER BY c LIMIT 1",
    ]  # fmt: skip
    trusted = sqlite3.connect(":memory:")
    trusted.deserialize(database.image.image)
    trusted.create_collation(mysql_text.COLLATION, mysql_text.compare)
    for name in ("mysql_sort_key", "mysql_fold", "mysql_number", "mysql_text"):
        trusted.create_function(name, 1, lambda v: v)
    for statement in statements:
        sqlite_sql = dialect.to_sqlite(dialect.parse_mysql(statement).statements[0], database="T")
        plan = trusted.execute("EXPLAIN " + sqlite_sql).fetchall()
        keys = [str(step[5]) for step in plan if step[1] == "SorterOpen"]
        assert not any(mysql_text.COLLATION in key for key in keys), (statement, sqlite_sql, keys)
        assert database.run(dialect.parse_mysql(statement)).error is None, statement
    # Past the dialect, the database refuses such a sort rather than run it.
    refused = database.run_sqlite("SELECT c, COUNT(*) FROM T GROUP BY c")
    assert refused.error == "unsupported" and "would sort text in one step" in refused.text
    trusted.close()
    database.close()


def test_statements_that_sort_are_stopped_in_time():
    env = episode(timeout_s=0.1)
    for statement in ("SELECT a.c FROM T a, T b, T c, T d ORDER BY a.c, b.c",
                      "SELECT x, COUNT(*) FROM (SELECT CONCAT(a.c, b.c, c.c, d.c) AS x FROM T a, T b, T c, T d) s "
                      "GROUP BY x COLLATE utf8mb4_bin",
                      "SELECT ROW_NUMBER() OVER (PARTITION BY a.c ORDER BY b.c) FROM T a, T b, T c, T d"):
        assert run(env, statement).info["error"] == "timeout", statement


def test_the_watchdog_interrupts_a_statement_that_runs_no_python():
    """No progress handler, no Python function: only the watchdog can stop this statement."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    endless = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT 100000000) SELECT COUNT(*) FROM r"
    ticket = WATCHDOG.arm(conn, time.monotonic() + 0.05)
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):
        conn.execute(endless).fetchone()
    WATCHDOG.disarm(ticket)
    assert conn.execute("SELECT 1").fetchone() == (1,)  # no interrupt is left over for the next statement
    conn.close()


def test_a_function_that_fails_past_the_deadline_is_reported_as_the_timeout():
    """A collation past its deadline leaves its exception pending, so the next Python function fails at once;
    under load that was shown as '1105 (HY000): user-defined function raised exception'."""
    database = EpisodeDatabase(build_image(TASK), Limits(timeout_s=1e-9))  # every deadline has passed
    execution = database.run(dialect.parse_mysql("SELECT instr(c, 'r') FROM T WHERE c = 'r1'"))
    assert (execution.text, execution.error) == (
        "3024 (HY000): Query execution was interrupted, maximum statement execution time exceeded", "timeout")
    database.close()


def _interrupt(*args):
    raise KeyboardInterrupt()


@pytest.mark.parametrize("where", ["function", "progress handler"])
def test_an_interrupt_that_lands_in_a_callback_stops_the_program_instead_of_failing_the_statement(
        monkeypatch, where):
    """The sqlite3 module turns any exception of a callback into a statement error: a Ctrl-C landing in one
    was an observation ("1105 (HY000): user-defined function raised exception") and the run went on."""
    counting = "SELECT COUNT(*) FROM T a, T b, T c"  # 76 ** 3 rows: the progress handler is called
    if where == "function":
        monkeypatch.setattr(linear_functions, "instr", _interrupt)  # registered when the database is made
    database = EpisodeDatabase(build_image(TASK))
    if where == "progress handler":
        monkeypatch.setattr(deadline.Deadline, "passed", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        database.run_sqlite("SELECT instr(c, 'r') FROM T" if where == "function" else counting)
    monkeypatch.undo()
    assert database.run_sqlite("SELECT COUNT(*) FROM T").text == "[(76,)]"  # nothing is left over
    database.close()


def test_long_text_is_folded_in_chunks_with_deadline_checks_between():
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise StatementTimeout()

    with pytest.raises(StatementTimeout):
        mysql_text.collation_key("ﷺ" * 5000, check)
    assert len(calls) == 3
    assert mysql_text.collation_key("ﷺ" * 5000, lambda: None) == mysql_text.collation_key("ﷺ" * 5000)


def test_the_answer_steps_hash_is_bounded_by_the_timeout():
    """Grading read every row into memory without a bound: 21.3 s and 1.7 GB after a 10.8M-row insert."""
    database = EpisodeDatabase(build_image(TASK), Limits(timeout_s=0.05))
    with pytest.raises(MysqlError) as error:
        for _ in database.iter_table_rows():
            time.sleep(0.01)  # the consumer's time counts: the hash runs under the statement's deadline
    assert error.value.kind == "timeout"
    assert len(database.table_rows()) == 76  # a quick read still succeeds
    database.close()


def _reference_table_hash(rows):
    """The hash query written out: md5 of the first 1024 bytes of the sorted row hashes joined by ','."""
    hashes = sorted(hashlib.md5(",".join(v for v in row if v is not None).encode()).hexdigest()[:5] for row in rows)
    return hashlib.md5(",".join(hashes)[:1024].encode()).hexdigest() if hashes else None


@pytest.mark.parametrize("count", [0, 1, 2, 170, 171, 172, 4095, 4096, 4097, 20000])
def test_the_streaming_hash_equals_the_formula(count):
    rows = [(str(i % 997), None if i % 3 else "x") for i in range(count)]  # duplicates included
    assert grading.mysql_table_hash(iter(rows)) == _reference_table_hash(rows)


# -- memory ---------------------------------------------------------------------------------------


def test_a_table_grown_past_its_cap_fails_cleanly_and_stays_intact():
    """Four inserts of 5,000,000 rows used to corrupt the episode's database ("disk image is malformed")."""
    env = episode(timeout_s=5.0, max_database_bytes=256 << 10)
    grow = "INSERT INTO T (c) SELECT NULL FROM T a, T b, T c, T d LIMIT 5000000"
    for _ in range(4):
        step = run(env, grow)
        assert (step.info["error"], step.observation) == ("memory", "1114 (HY000): The table 'T' is full")
    assert run(env, "SELECT COUNT(*) FROM T").observation == "[(76,)]"
    assert env._db.integrity() == "ok"  # noqa: SLF001 - SQLite's own check of the episode's file
    final = env.step("Action: Answer\nFinal Answer: []")
    assert final.info["answer"] == ORIGINAL_HASH


def test_rows_that_fit_are_still_written():
    env = episode(max_database_bytes=256 << 10)
    assert run(env, "INSERT INTO T (c) SELECT a.c FROM T a, T b").observation == "[]"
    assert run(env, "SELECT COUNT(*) FROM T").observation == f"[({76 + 76 * 76},)]"


def test_values_are_capped_at_64_kb():
    env = episode()
    assert run(env, "SELECT LENGTH(REPEAT('a', 65536)), REPEAT('a', 65537)").observation == "[(65536, None)]"
    for statement in ("SELECT randomblob(65537)", "SELECT zeroblob(999999), zeroblob(999998)",
                      "SELECT " + ", ".join(f"zeroblob({999999 - i})" for i in range(240))):
        step = run(env, statement)
        assert (step.info["error"], step.observation) == ("memory", "1105 (HY000): a value would exceed 65536 bytes")


def test_wide_rows_of_blobs_are_turned_into_text_only_as_far_as_shown():
    env = episode()
    step = run(env, "SELECT " + ", ".join(["zeroblob(65536)"] * 40))
    assert step.observation == truncate(str([(b"\0" * 65536,) * 40]), 800)
    too_wide = run(env, "SELECT " + ", ".join(["1"] * 257))
    assert too_wide.info["error"] == "sqlite" and "too many columns" in too_wide.observation


def _sql_literal(value):
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"x'{value.hex()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


cells = st.one_of(
    st.none(), st.integers(-(2**63), 2**63 - 1), st.sampled_from([0.5, -2.25, 1e300, 1.5e-07, 3.0]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60),
    st.binary(max_size=40),
)  # fmt: skip


@settings(max_examples=200, deadline=None, derandomize=True)
@given(rows=st.integers(1, 4).flatmap(lambda width: st.lists(st.tuples(*[cells] * width), min_size=0, max_size=30)))
def test_the_result_text_is_str_of_the_rows_cut_at_800_characters(rows):
    database = EpisodeDatabase(build_image(TASK))
    try:
        if rows:
            values = ", ".join("(" + ", ".join(_sql_literal(v) for v in row) + ")" for row in rows)
            result = database.run_sqlite(f"SELECT * FROM (VALUES {values})")
        else:
            result = database.run_sqlite("SELECT * FROM T WHERE 0")
        assert result.error is None, result.text
        assert result.text == truncate(str(rows), 800)
    finally:
        database.close()


# -- observations and table admission -------------------------------------------------------------


def test_checker_reasons_never_exceed_the_observation_limit():
    """A rejection echoed a 19,000-character identifier in full (enforce mode)."""
    env = episode(checker="enforce")
    step = run(env, f"SELECT `{'a' * 19000}` FROM T")
    assert not step.info["executed"] and step.info["verdict"].rule == "unknown_column"
    assert step.observation == f"Unknown column '{'a' * 64}...'; columns are: `c`."
    long_table = run(env, f"SELECT * FROM `{'t' * 19000}`")
    assert long_table.observation == f"Unknown table '{'t' * 64}...'; the table is `T`."
    wide = make_task("other", table={"table_name": "W", "table_info": {
        "columns": [{"name": f"column number {i:04d}"} for i in range(200)], "rows": [["x"] * 200]}})
    env = SqlEnv(SqlEnvConfig(checker="enforce"))
    env.reset(wide)
    step = env.step(operation_reply("SELECT nope FROM W"))
    assert len(step.observation) <= 800 and step.observation.startswith("Unknown column 'nope'; columns are:")


def test_pragma_table_info_is_refused_as_an_unknown_table():
    """It was refused with the reason "UPDATE on sqlite_master is not permitted"."""
    statement = "SELECT * FROM pragma_table_info('x')"
    verdict = Checker.for_task(TASK).check(statement)
    assert (verdict.rule, verdict.reason) == ("unknown_table", "Unknown table 'pragma_table_info'; the table is `T`.")
    step = run(episode(), statement)
    assert (step.info["error"], step.observation) == ("table", "1146 (42S02): Table 'T.pragma_table_info' doesn't exist")
    raw = EpisodeDatabase(build_image(TASK)).run_sqlite(statement)
    assert (raw.error, raw.text) == (
        "denied", "1142 (42000): the schema (sqlite_master) and table-valued functions are not available here"
    )


@pytest.mark.parametrize(
    "source, known",
    [("T", True), ("`T`", True), ("T.T", True), ("t", False), ("U", False), ("U.T", False), ("T.U", False),
     ("pragma_table_info('T')", False), ("T.pragma_table_info('T')", False), ("json_each('[1]')", False),
     ("T, T AS u", True), ("T JOIN T x ON 1", True), ("T, sqlite_master", False), ("(SELECT 1) s", True)],
)  # fmt: skip
def test_the_checker_and_the_database_admit_the_same_tables(source, known):
    statement = f"SELECT 1 FROM {source}"
    verdict = Checker.for_task(TASK).check(statement)
    result = EpisodeDatabase(build_image(TASK)).run(dialect.parse_mysql(statement))
    assert (verdict.rule != "unknown_table", result.error != "table") == (known, known), (verdict, result)
