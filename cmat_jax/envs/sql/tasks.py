"""DBBench tasks: typed records, and a JSONL loader that names the file, line and field of a bad record."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Union

from cmat_jax.fileio import read_jsonl

Cell = Union[str, int, float, None]

# Answer-graded task types (the "SELECT family") and table-hash-graded ones, as in DBBench v0.2.
SELECT_TYPES = (
    "other",
    "counting",
    "comparison",
    "ranking",
    "aggregation-SUM",
    "aggregation-MIN",
    "aggregation-MAX",
    "aggregation-AVG",
)
MUTATION_TYPES = ("INSERT", "UPDATE", "DELETE")
TASK_TYPES = SELECT_TYPES + MUTATION_TYPES


class TaskFormatError(ValueError):
    """A task record does not follow the DBBench format."""


@dataclasses.dataclass(frozen=True)
class SqlTask:
    """One DBBench task: a question about (or a change to) one table."""

    task_id: str  # "<file name>:<line>", for messages and result files
    description: str
    add_description: str
    task_type: str
    table_name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    # SELECT family: the expected answers. Mutations: a one-element tuple with the gold SQL (MySQL).
    label: tuple[Any, ...]
    # Mutations only: the expected table state, as DBBench prints the hash query's result.
    answer_md5: str | None = None
    # `sql.query` of the record when present: a gold SELECT that demonstrations may run. DBBench's own
    # are often malformed; generated tasks' are executed to make their labels.
    gold_query: str | None = None

    @property
    def is_mutation(self) -> bool:
        return self.task_type in MUTATION_TYPES

    @property
    def prompt(self) -> str:
        """The user turn that poses the task, exactly as DBBench builds it."""
        return self.description + "\n" + self.add_description

    @property
    def gold_sql(self) -> str:
        if not self.is_mutation:
            raise ValueError(f"task {self.task_id} is a {self.task_type} task; only mutations carry gold SQL")
        return self.label[0]


def _fail(where: str, field: str, expected: str, found: Any) -> TaskFormatError:
    shown = repr(found)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return TaskFormatError(
        f"{where}: field '{field}' should be {expected}, found {shown}; fix or remove this record"
    )


def _field(record: dict, key: str, kind: type, where: str, expected: str, prefix: str = "") -> Any:
    if key not in record:
        raise TaskFormatError(f"{where}: field '{prefix}{key}' is missing; every DBBench task needs it")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _fail(where, prefix + key, expected, value)
    return value


def _is_cell(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def parse_task(record: Any, where: str) -> SqlTask:
    """Validates one decoded JSON record; `where` ("file:line") prefixes every error."""
    if not isinstance(record, dict):
        raise TaskFormatError(f"{where}: expected a JSON object (one task per line), found {type(record).__name__}")
    description = _field(record, "description", str, where, "a string")
    add_description = _field(record, "add_description", str, where, "a string")

    types = _field(record, "type", list, where, "a one-element list such as [\"counting\"]")
    if len(types) != 1 or types[0] not in TASK_TYPES:
        raise _fail(where, "type", f"a one-element list with one of {', '.join(TASK_TYPES)}", types)
    task_type = types[0]

    table = _field(record, "table", dict, where, "an object with table_name and table_info")
    table_name = _field(table, "table_name", str, where, "a string", "table.")
    info = _field(table, "table_info", dict, where, "an object with columns and rows", "table.")
    raw_columns = _field(info, "columns", list, where, "a non-empty list of {name, type}", "table.table_info.")
    if not raw_columns:
        raise _fail(where, "table.table_info.columns", "a non-empty list of {name, type}", raw_columns)
    columns = []
    for i, column in enumerate(raw_columns):
        if not isinstance(column, dict) or not isinstance(column.get("name"), str):
            raise _fail(where, f"table.table_info.columns[{i}]", "an object with a string 'name'", column)
        columns.append(column["name"])
    raw_rows = _field(info, "rows", list, where, "a list of rows", "table.table_info.")
    rows = []
    for i, row in enumerate(raw_rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise _fail(where, f"table.table_info.rows[{i}]", f"a list of {len(columns)} cells", row)
        for j, cell in enumerate(row):
            if not _is_cell(cell):
                raise _fail(where, f"table.table_info.rows[{i}][{j}]", "a string, number or null", cell)
        rows.append(tuple(row))

    label = _field(record, "label", list, where, "a list")
    answer_md5 = None
    if task_type in MUTATION_TYPES:
        if len(label) != 1 or not isinstance(label[0], str):
            raise _fail(where, "label", f"a one-element list holding the gold SQL of this {task_type} task", label)
        answer_md5 = _field(record, "answer_md5", str, where, "a string such as \"[('0f3a...',)]\"")
    else:
        for i, answer in enumerate(label):
            if not _is_cell(answer):
                raise _fail(where, f"label[{i}]", "a string, number or null", answer)

    return SqlTask(
        task_id=where,
        description=description,
        add_description=add_description,
        task_type=task_type,
        table_name=table_name,
        columns=tuple(columns),
        rows=tuple(rows),
        label=tuple(label),
        answer_md5=answer_md5,
        gold_query=_gold_query(record),
    )


def _gold_query(record: dict) -> str | None:
    sql = record.get("sql")
    query = sql.get("query") if isinstance(sql, dict) else None
    return query if isinstance(query, str) and query.strip() else None


def load_tasks(path: str | os.PathLike) -> list[SqlTask]:
    """Reads DBBench tasks from a JSONL file (one JSON object per line; blank lines are skipped)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"DBBench task file {path!r} is a directory; pass the path of a DBBench .jsonl file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"DBBench task file {path!r} does not exist; pass the path of a DBBench .jsonl file")
    name = os.path.basename(path)
    tasks = []
    for line in read_jsonl(path, TaskFormatError):
        where = f"{name}:{line.number}"
        try:
            tasks.append(parse_task(line.value, where))
        except TaskFormatError as e:
            # Re-raise with the full path rather than the short task id.
            raise TaskFormatError(str(e).replace(where, f"{path}:{line.number}", 1)) from None
    if not tasks:
        raise TaskFormatError(f"{path}: holds no tasks; expected one DBBench JSON object per line")
    return tasks


# The 60 DBBench v0.2 dev tasks (THUDM/AgentBench, Apache-2.0), shipped with the package: see
# cmat_jax/assets/dbbench/README.md. For evaluation and model selection only, never for training.
DBBENCH_DEV_TASKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                 "assets", "dbbench", "dev.jsonl")
