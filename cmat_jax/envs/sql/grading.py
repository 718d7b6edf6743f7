"""DBBench v0.2 grading: the Final Answer comparison and MySQL's table hash, in Python.

SELECT family: the text after "Final Answer:" is read as a Python literal (DBBench
calls eval; here ast.literal_eval, so no code ever runs); with one value on both
sides the values are compared as floats when both convert, else as they are;
otherwise as sets.

INSERT/UPDATE/DELETE: DBBench asks MySQL for
    md5(group_concat(rowhash ORDER BY rowhash))  over  substring(md5(concat_ws(',', <columns>)), 1, 5)
and compares the printed result, e.g. "[('0f3a...',)]", with the task's answer_md5.
CONCAT_WS skips NULLs; GROUP_CONCAT joins with ',' and stops at group_concat_max_len
(1024 bytes); over no rows the hash is NULL. The rows are streamed: only the 171 smallest
row hashes, all that 1024 bytes can hold, are kept.
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


# GROUP_CONCAT joins 5-character row hashes with ','; its first 1024 bytes hold the smallest
# ceil(1025 / 6) = 171 hashes in order (the last one cut). No other row can change the result.
_KEPT_ROW_HASHES = -(-(GROUP_CONCAT_MAX_LEN + 1) // (ROW_HASH_CHARS + 1))
_BATCH = 4096  # row hashes gathered before the smallest are kept


def row_hash(row: Sequence[Any]) -> str:
    """substring(md5(concat_ws(',', <columns>)), 1, 5) for one row: CONCAT_WS skips NULLs."""
    texts = [text for text in map(mysql_text.as_text, row) if text is not None]
    return _md5_hex(",".join(texts))[:ROW_HASH_CHARS]


def mysql_table_hash(rows: Iterable[Sequence[Any]]) -> str | None:
    """The hash DBBench's MySQL query computes over a table's rows (None when there are no rows).

    Streams: only the row hashes GROUP_CONCAT's 1024 bytes can hold are kept, so memory does not
    grow with the table.
    """
    kept: list[str] = []
    any_rows = False
    for row in rows:
        any_rows = True
        kept.append(row_hash(row))
        if len(kept) >= _BATCH:
            kept.sort()  # hex digits: binary order equals the collation's order
            del kept[_KEPT_ROW_HASHES:]
    if not any_rows:
        return None  # GROUP_CONCAT over no rows is NULL, and so is its MD5
    kept.sort()
    return _md5_hex(",".join(kept[:_KEPT_ROW_HASHES])[:GROUP_CONCAT_MAX_LEN])


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
