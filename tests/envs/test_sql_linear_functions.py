"""instr() and replace() in linear time give SQLite's own results (a differential test against SQLite)."""

import itertools
import sqlite3

import pytest

from cmat_jax.envs.sql import linear_functions

VALUES = [
    None, "", "a", "abcabc", "é", "xéyé", "\x00a", "a\x00b", "é\x00é", "ﷺﷺ", "1.5", b"", b"ab", b"\xc3\xa9",
    b"\xa9x\xa9", b"\xff\xfe", b"a\x00", 0, 1, -12, 1.5, 1e20, 0.1, 1e-05, 123456789012345678.0, 2.0, float("inf"),
]  # fmt: skip


@pytest.fixture(scope="module")
def connections():
    sqlite_own = sqlite3.connect(":memory:")
    linear = sqlite3.connect(":memory:")
    linear.create_function("instr", 2, linear_functions.instr, deterministic=True)
    linear.create_function("replace", 3, linear_functions.make_replace(1 << 16), deterministic=True)
    yield sqlite_own, linear
    sqlite_own.close()
    linear.close()


def _result(conn, sql, args):
    try:
        return conn.execute(sql, args).fetchone()
    except sqlite3.Error as e:
        return type(e).__name__, str(e)


def test_instr_equals_sqlites(connections):
    sqlite_own, linear = connections
    sql = "SELECT instr(?, ?), typeof(instr(?, ?))"
    for a, b in itertools.product(VALUES, repeat=2):
        assert _result(linear, sql, (a, b, a, b)) == _result(sqlite_own, sql, (a, b, a, b)), (a, b)


def test_replace_equals_sqlites(connections):
    sqlite_own, linear = connections
    sql = "SELECT replace(?, ?, ?), typeof(replace(?, ?, ?))"
    compared = 0
    for args in itertools.product(VALUES, repeat=3):
        expected = _result(sqlite_own, sql, args * 2)
        if "Could not decode to UTF-8" in str(expected):
            continue  # SQLite returned invalid UTF-8 as text; the linear version returns those bytes as a blob
        assert _result(linear, sql, args * 2) == expected, args
        compared += 1
    assert compared > 15_000


def test_replace_refuses_a_result_over_the_limit_before_building_it():
    replace = linear_functions.make_replace(100)
    assert replace("a" * 50, "a", "bb") == "b" * 100
    with pytest.raises(linear_functions.ValueTooLong):
        replace("a" * 60000, "a", "b" * 60000)  # would be 3.6 GB
    with pytest.raises(linear_functions.ValueTooLong):
        replace(b"a" * 51, b"a", b"bb")
