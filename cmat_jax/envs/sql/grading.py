"""DBBench v0.2 grading: the Final Answer comparison and MySQL's table hash, in Python.

SELECT family: the text after "Final Answer:" is read as a Python literal (DBBench
calls eval; here ast.literal_eval, so no code ever runs); with one value on both
sides the values are compared as floats when both convert, else as they are;
otherwise as sets.

INSERT/UPDATE/DELETE: DBBench asks MySQL for
    md5(group_concat(rowhash ORDER BY rowhash))  over  substring(md5(concat_ws(',', <columns>)), 1, 5)
and compares the printed result, e.g. "[('0f3a...',)]", with the task's answer_md5.
CONCAT_WS skips NULLs; GROUP_CONCAT joins with ',' and stops at group_concat_max_len
(1024 bytes); over no rows the hash is NULL.
"""

from __future__ import annotations

import ast
import hashlib
from typing import Any, Iterable, Sequence

from cmat_jax.envs.sql import mysql_text

GROUP_CONCAT_MAX_LEN = 1024  # MySQL's default group_concat_max_len, in bytes
ROW_HASH_CHARS = 5


def _md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8", "surrogatepass")).hexdigest()


def _cell_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return mysql_text.stored_text(value)


def mysql_table_hash(rows: Iterable[Sequence[Any]]) -> str | None:
    """The hash DBBench's MySQL query computes over a table's rows (None when there are no rows)."""
    row_hashes = []
    for row in rows:
        texts = [text for text in map(_cell_text, row) if text is not None]  # CONCAT_WS skips NULL
        row_hashes.append(_md5_hex(",".join(texts))[:ROW_HASH_CHARS])
    if not row_hashes:
        return None  # GROUP_CONCAT over no rows is NULL, and so is its MD5
    row_hashes.sort()  # hex digits: binary order equals the collation's order
    return _md5_hex(",".join(row_hashes)[:GROUP_CONCAT_MAX_LEN])


def hash_result_text(table_hash: str | None) -> str:
    """The hash query's result as DBBench prints it: str(cursor.fetchall())."""
    return str([(table_hash,)])


def parse_final_answer(answer_text: str) -> list:
    """DBBench's list(eval(answer)), falling back to [answer] when that fails; literals only."""
    try:
        return list(ast.literal_eval(answer_text))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return [answer_text]


def answer_is_correct(answer_text: str, label: Sequence[Any]) -> bool:
    """DBBench v0.2's comparison of a Final Answer with the label list."""
    answer = parse_final_answer(answer_text)
    if len(answer) == 1 and len(label) == 1:
        try:
            return float(answer[0]) == float(label[0])
        except (ValueError, TypeError, OverflowError):
            return answer[0] == label[0]
    try:
        return set(answer) == set(label)
    except TypeError:  # unhashable answers never match
        return False


def table_state_is_correct(hash_text: str, answer_md5: str) -> bool:
    """INSERT/UPDATE/DELETE: the printed hash query result must equal answer_md5 exactly."""
    return hash_text == answer_md5
