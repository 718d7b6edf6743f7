"""The function allow-list, against every function the running SQLite build offers."""

import sqlite3

import pytest

from cmat_jax.demos.oracle import operation_reply
from cmat_jax.envs.sql import allowlist, mysql_text
from cmat_jax.envs.sql.database import EpisodeDatabase, build_image
from cmat_jax.envs.sql.env import SqlEnv
from tests.envs.sql_helpers import make_task

TABLE = {"table_name": "T", "table_info": {"columns": [{"name": "c"}], "rows": [["a"], ["b"]]}}
TASK = make_task("UPDATE", label=["UPDATE T SET c = 'x'"], answer_md5="[(None,)]", table=TABLE)


def build_functions():
    """(name, argument count) of every function of this SQLite build, from a trusted connection."""
    conn = sqlite3.connect(":memory:")
    try:
        return sorted(set(conn.execute("SELECT name, narg FROM pragma_function_list")))
    finally:
        conn.close()


@pytest.fixture(scope="module")
def database():
    db = EpisodeDatabase(build_image(TASK))
    yield db
    db.close()


def call(name, narg):
    if name in ("->", "->>"):  # operators SQLite lists as functions
        return f"""SELECT '{{"a": 1}}' {name} '$.a'"""
    args = ", ".join(["'x'"] * (narg if narg >= 0 else 1))
    return f'SELECT "{name}"({args}) FROM T'


def test_every_function_of_this_build_is_called_only_if_listed(database):
    functions = build_functions()
    assert len(functions) > 50  # the list is the build's, not empty
    denied = allowed = 0
    for name, narg in functions:
        result = database.run_sqlite(call(name, narg))
        if name.lower() in allowlist.ALLOWED_FUNCTIONS:
            allowed += 1
            assert result.error != "denied", (name, result.text)
        else:
            denied += 1
            assert result.error == "denied", (name, result.text)
            assert result.text.startswith(f"1142 (42000): function {name} is not available here: "), result.text
    assert allowed and denied


def test_the_sandboxs_own_functions_are_listed_and_callable(database):
    for name in allowlist.DIALECT_FUNCTIONS:
        assert allowlist.denial(name) is None
    result = database.run_sqlite("SELECT mysql_sort_key('Émile'), mysql_fold('Ä'), mysql_number('12abc')")
    assert result.text == str([(mysql_text.collation_key("Émile"), "a", 12.0)])


@pytest.mark.parametrize(
    "name",
    ["fts3_tokenizer", "rtreenode", "rtreedepth", "rtreecheck", "load_extension", "printf", "format", "sqlite_version",
     "json_extract", "match", "glob", "readfile", "writefile", "edit", "fts5", "sqlite_dbpage", "zipfile", "eval"],
)  # fmt: skip
def test_dangerous_functions_are_denied_whatever_the_build(name):
    reason = allowlist.denial(name)
    assert reason is not None and reason.startswith(f"function {name} is not available here: ")
    assert allowlist.denial(name.upper()) is not None  # SQLite names are case-insensitive


def test_a_function_a_newer_build_might_add_is_denied():
    assert allowlist.denial("sqlite_some_future_function") == (
        "function sqlite_some_future_function is not available here: it is not one of MySQL's or SQLite's "
        "ordinary functions"
    )


def test_fts3_tokenizer_can_neither_leak_nor_overwrite_the_native_pointer():
    """Issue reproducer: the read returned the tokenizer module's address; the write replaced it."""
    trusted = sqlite3.connect(":memory:")
    try:
        before = trusted.execute("SELECT fts3_tokenizer('simple')").fetchone()[0]
    except sqlite3.OperationalError:  # a build without FTS3: the sandbox must deny the name all the same
        before = None
    env = SqlEnv()
    env.reset(TASK)
    for statement in ("SELECT fts3_tokenizer('simple')", "SELECT fts3_tokenizer('simple', x'4141414141414141')",
                      "SELECT fts3_tokenizer('simple')"):
        step = env.step(operation_reply(statement))
        assert step.info["error"] == "denied", step.observation
        assert step.observation == (
            "1142 (42000): function fts3_tokenizer is not available here: it reads and writes a native pointer"
        )
    if before is not None:
        assert trusted.execute("SELECT fts3_tokenizer('simple')").fetchone()[0] == before != b"AAAAAAAA"
    trusted.close()


@pytest.mark.parametrize(
    "statement",
    ["SELECT rtreenode(2, x'0001000000000000000000000000')", "SELECT rtreedepth(x'0001')", "SELECT rtreecheck('T')"],
)
def test_rtree_debugging_parsers_are_denied(statement):
    env = SqlEnv()
    env.reset(TASK)
    step = env.step(operation_reply(statement))
    assert step.info["error"] == "denied", step.observation
