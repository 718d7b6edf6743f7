"""The labels of generated tasks, as the environment gives them: each draft's gold SQL run on the task's database.

`execute(draft, table, where)` runs the gold SQL as an episode would (the
environment's database, its Checker and its grading). For the SELECT family the label
is the distinct values of the result, exactly as an agent sees them after running that
query; for INSERT and UPDATE, `answer_md5` is the environment's table hash after the
statement, computed as an episode's grading computes it. The draft's own answer
(computed in Python from the task's meaning) must agree: a disagreement raises
`GeneratorError`, a bug in the generator or the environment. A result DBBench would
truncate, a number with more than two decimals or a change that leaves the table as it
was gives None: the caller draws again.
"""

from __future__ import annotations

import ast
import math
from typing import Sequence

from cmat_jax.envs.sql import grading, mysql_text
from cmat_jax.envs.sql.checker import Checker
from cmat_jax.envs.sql.database import TRUNCATION_MARK, EpisodeDatabase, build_image
from cmat_jax.envs.sql.dialect import parse_mysql
from cmat_jax.envs.sql.tasks import SqlTask
from cmat_jax.taskgen.drafts import Draft, distinct
from cmat_jax.taskgen.tables import Table

_MAX_DECIMALS = 2  # numeric answers with more digits are ambiguous to state


class GeneratorError(RuntimeError):
    """The environment disagreed with the generator: a bug in one of them, never a property of the data."""


def add_description(table_name: str, columns: Sequence[str]) -> str:
    """DBBench's second sentence of every task prompt."""
    return f"The name of this table is {table_name}, and the headers of this table are {','.join(columns)}."


def _record(draft: Draft, table: Table, label: list, answer_md5: str | None) -> dict:
    columns = [{"name": c.name, "type": "INT" if c.numeric == "int" else "TEXT"} for c in table.columns]
    record = {
        "description": draft.description,
        "add_description": add_description(table.name, [c.name for c in table.columns]),
        "table": {"table_name": table.name, "table_info": {"columns": columns, "rows": [list(r) for r in table.rows]}},
        "type": [draft.task_type],
        "label": label,
    }
    if answer_md5 is not None:
        record["answer_md5"] = answer_md5
    else:
        record["sql"] = {"query": draft.sql}
    record["source"] = "generated"
    return record


def _label_text(value) -> str:
    if isinstance(value, float):
        return mysql_text.double_text(value)
    return str(value)


def _same_answer(found: Sequence[str], expected: Sequence[str]) -> bool:
    if len(found) == 1 and len(expected) == 1:
        try:
            return math.isclose(float(found[0]), float(expected[0]), rel_tol=1e-9, abs_tol=1e-9)
        except ValueError:
            return found[0] == expected[0]
    return sorted(found) == sorted(expected)


def _decimals(label: str) -> int:
    return len(label.split(".", 1)[1]) if "." in label else 0


def execute(draft: Draft, table: Table, where: str) -> dict | None:
    """Runs the draft's gold SQL on the task's database as an episode would (the environment's database,
    its Checker and its grading) and returns the task record, or None to drop it."""
    probe = SqlTask(where, draft.description, "", draft.task_type, table.name, tuple(c.name for c in table.columns),
                    table.rows, label=("",), answer_md5="")
    parsed = parse_mysql(draft.sql)
    verdict = Checker.for_task(probe).check_parsed(parsed)
    database = EpisodeDatabase(build_image(probe))
    try:
        execution = database.run(parsed)
        if execution.error is not None or not verdict.ok:
            reason = f" (Checker: {verdict.reason})" if not verdict.ok else ""
            raise GeneratorError(f"{where}: the gold SQL {draft.sql!r} failed in the environment: "
                                 f"{execution.text}{reason}")
        final_rows = database.table_rows()
    finally:
        database.close()
    if draft.task_type in ("INSERT", "UPDATE"):
        answer_md5 = grading.hash_result_text(grading.mysql_table_hash(final_rows))  # as SqlEnv grades
        expected = grading.hash_result_text(grading.mysql_table_hash(draft.expected))
        if answer_md5 != expected:
            raise GeneratorError(f"{where}: after {draft.sql!r} the environment's table hash is {answer_md5}, "
                                 f"the generator expected {expected}")
        if answer_md5 == grading.hash_result_text(grading.mysql_table_hash(table.rows)):
            return None  # the statement changes nothing: no task
        return _record(draft, table, [draft.sql], answer_md5)
    if execution.text.endswith(TRUNCATION_MARK):
        return None  # DBBench would show only part of the answer
    rows = ast.literal_eval(execution.text)
    if any(len(r) != 1 or r[0] is None for r in rows):
        raise GeneratorError(f"{where}: {draft.sql!r} gave {execution.text}; expected one non-NULL column")
    label = distinct([_label_text(r[0]) for r in rows])
    if not label:
        raise GeneratorError(f"{where}: {draft.sql!r} found no rows, the generator expected {list(draft.expected)}")
    if draft.task_type.startswith("aggregation-") and (_decimals(label[0]) > _MAX_DECIMALS or "e" in label[0]):
        return None  # e.g. an average of 12.333333333333334: the answer's precision is a guess
    if not _same_answer(label, draft.expected):
        raise GeneratorError(f"{where}: {draft.sql!r} gave {label} in the environment, the generator expected "
                             f"{list(draft.expected)}")
    return _record(draft, table, label, None)
