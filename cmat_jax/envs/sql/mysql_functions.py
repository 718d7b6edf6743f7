"""MySQL string functions that SQLite lacks, as SQLite functions with MySQL's rules and bounded output.

dialect.to_sqlite turns LEFT, RIGHT, LPAD, RPAD, REPEAT (and SPACE), SUBSTRING_INDEX
and CONCAT_WS into calls of the functions registered here. Any NULL argument gives
NULL (except CONCAT_WS, which skips NULL values); numbers are read as MySQL reads them.
A result longer than the database's value limit (in UTF-8 bytes) is NULL, as MySQL gives
NULL for a result over max_allowed_packet; the length is checked before the result is built.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Callable

from cmat_jax.envs.sql import mysql_text


_text = mysql_text.as_text  # arguments are checked for NULL first


def _count(value) -> int:
    """MySQL's integer reading of an argument: numbers round half away from zero, text by its numeric prefix."""
    value = mysql_text.number_value(value)
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        return 0
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class _Functions:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes

    def _too_long(self, length: int) -> bool:
        return length > self.max_bytes

    def left(self, text, n):
        if text is None or n is None:
            return None
        n = _count(n)
        return _text(text)[:n] if n > 0 else ""

    def right(self, text, n):
        if text is None or n is None:
            return None
        n = _count(n)
        return _text(text)[-n:] if n > 0 else ""

    def _pad(self, text, length, fill, on_left: bool):
        if text is None or length is None or fill is None:
            return None
        text, fill, length = _text(text), _text(fill), _count(length)
        if length < 0:
            return None
        if len(text) >= length:
            return text[:length]
        missing = length - len(text)
        if not fill or self._too_long(_utf8_len(text) + missing // len(fill) * _utf8_len(fill)
                                      + _utf8_len(fill[: missing % len(fill)])):
            return None
        padding = (fill * (-(-(length - len(text)) // len(fill))))[: length - len(text)]
        return padding + text if on_left else text + padding

    def lpad(self, text, length, fill):
        return self._pad(text, length, fill, on_left=True)

    def rpad(self, text, length, fill):
        return self._pad(text, length, fill, on_left=False)

    def repeat(self, text, times):
        if text is None or times is None:
            return None
        text, times = _text(text), _count(times)
        if times < 1 or not text:
            return ""
        return None if self._too_long(_utf8_len(text) * times) else text * times

    def substring_index(self, text, delimiter, count):
        if text is None or delimiter is None or count is None:
            return None
        text, delimiter, count = _text(text), _text(delimiter), _count(count)
        if not delimiter or count == 0:
            return ""
        parts = text.split(delimiter)  # MySQL matches the delimiter case-sensitively
        return delimiter.join(parts[:count] if count > 0 else parts[count:])

    def concat_ws(self, separator, *values):
        if separator is None:
            return None
        separator = _text(separator)
        texts = [_text(v) for v in values if v is not None]
        if self._too_long(sum(map(_utf8_len, texts)) + _utf8_len(separator) * max(len(texts) - 1, 0)):
            return None
        return separator.join(texts)


# SQL name -> (method, number of arguments; -1 for any)
NAMES = {
    "mysql_left": ("left", 2),
    "mysql_right": ("right", 2),
    "mysql_lpad": ("lpad", 3),
    "mysql_rpad": ("rpad", 3),
    "mysql_repeat": ("repeat", 2),
    "mysql_substring_index": ("substring_index", 3),
    "mysql_concat_ws": ("concat_ws", -1),
}


def register(conn: sqlite3.Connection, max_bytes: int, wrap: Callable[[Callable], Callable] = lambda f: f) -> None:
    """Registers every function of NAMES on `conn`, each passed through `wrap` (e.g. a deadline check)."""
    functions = _Functions(max_bytes)
    for sql_name, (method, arity) in NAMES.items():
        conn.create_function(sql_name, arity, wrap(getattr(functions, method)), deterministic=True)
