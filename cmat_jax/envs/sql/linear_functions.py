"""SQLite's instr() and replace() with SQLite's results, in linear time.

SQLite's own versions compare the needle at every position: time ~ len(haystack)
x len(needle), spent inside one VM instruction that no timeout reaches
(`INSTR(REPEAT('a', 999000), CONCAT(REPEAT('a', 499000), 'b'))` took 5.5 s).
database.py registers these over them; MySQL's INSTR, LOCATE and POSITION
reach SQLite as instr (dialect.py, through sqlglot). Python's str and bytes
search is linear in the worst case for long needles and bounded by the needle
length for short ones.

Results equal SQLite's, types included: NULL in gives NULL; numbers are read as
SQLite's text for them; instr counts characters (bytes when both arguments are
blobs); replace() with an empty pattern returns its first argument unchanged.
One difference: where SQLite's replace() would return text that is not valid
UTF-8 (a blob argument), this returns it as a blob.
"""

from __future__ import annotations

import re
import sqlite3
import threading

_CONTINUATION = re.compile(rb"[\x80-\xbf]")  # UTF-8 continuation bytes


class ValueTooLong(ValueError):
    """A result would exceed the database's value limit (SQLite: "string or blob too big")."""


_local = threading.local()


def _sqlite_text(value) -> str:
    """SQLite's text for a number (SQLite prints doubles its own way: 1e20 is '1.0e+20')."""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    conn = getattr(_local, "conn", None)
    if conn is None:  # one private, trusted connection per thread, only for this conversion
        conn = _local.conn = sqlite3.connect(":memory:")
    return conn.execute("SELECT CAST(? AS TEXT)", (value,)).fetchone()[0]


def _sqlite_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else _sqlite_text(value).encode("utf-8", "surrogatepass")


def _as_text(data: bytes):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # SQLite would return these bytes as (invalid) text
        return data


def instr(haystack, needle):
    """SQLite's instr(X, Y): 1 + the position of the first Y in X, 0 when absent, 1 for an empty Y."""
    if haystack is None or needle is None:
        return None
    if isinstance(haystack, bytes) and isinstance(needle, bytes):
        return haystack.find(needle) + 1 if needle else 1
    if not isinstance(haystack, bytes) and not isinstance(needle, bytes):
        text, sought = _sqlite_text(haystack), _sqlite_text(needle)
        return text.find(sought) + 1 if sought else 1
    # One blob, one not: SQLite reads both as UTF-8 text and tries only positions that start a character.
    data, sought = _sqlite_bytes(haystack), _sqlite_bytes(needle)
    if not sought:
        return 1
    start = 0
    while True:
        position = data.find(sought, start)
        if position < 0:
            return 0
        if position == 0 or data[position] & 0xC0 != 0x80:
            break
        start = position + 1
    return 1 + position - len(_CONTINUATION.findall(data, 1, position + 1))


def make_replace(max_bytes: int):
    """SQLite's replace(X, Y, Z), refusing results over `max_bytes` before building them."""

    def replace(value, pattern, replacement):
        if value is None or pattern is None:
            return None
        if isinstance(value, bytes) or isinstance(pattern, bytes) or isinstance(replacement, bytes):
            return _replace_bytes(value, pattern, replacement)
        sought = _sqlite_text(pattern)
        if not sought or sought[0] == "\x00":  # SQLite stops at an empty C string: X unchanged
            return value
        if replacement is None:
            return None
        text, new = _sqlite_text(value), _sqlite_text(replacement)
        if len(new) > len(sought) and len(text) + text.count(sought) * (len(new) - len(sought)) > max_bytes:
            raise ValueTooLong()
        return text.replace(sought, new)

    def _replace_bytes(value, pattern, replacement):
        sought = _sqlite_bytes(pattern)
        if not sought or sought[0] == 0:  # X unchanged, but SQLite has read a blob X as text by then
            return _as_text(value) if isinstance(value, bytes) else value
        if replacement is None:
            return None
        data, new = _sqlite_bytes(value), _sqlite_bytes(replacement)
        if len(data) + data.count(sought) * max(len(new) - len(sought), 0) > max_bytes:
            raise ValueTooLong()
        return _as_text(data.replace(sought, new))

    return replace
