"""MySQL's errors: the exception the SQL environment raises and returns as text, and SQLite's errors put in
the words MySQL would use (DBBench shows the agent MySQL's error text, e.g. `1054 (42S22): Unknown column 'x'
in 'field list'`)."""

from __future__ import annotations

import re

from cmat_jax.envs.sql import dialect, mysql_text
from cmat_jax.envs.sql.deadline import StatementTimeout

TIMEOUT_TEXT = "3024 (HY000): Query execution was interrupted, maximum statement execution time exceeded"


class MysqlError(Exception):
    """An error as MySQL prints it (`text`), with the environment's kind of error (syntax, table, column,
    function, timeout, memory, denied, sqlite, ...)."""

    def __init__(self, text: str, kind: str):
        super().__init__(text)
        self.text = text
        self.kind = kind


def value_too_long(max_value_bytes: int) -> MysqlError:
    return MysqlError(f"1105 (HY000): a value would exceed {max_value_bytes} bytes", "memory")


def mysql_error(error: Exception, parsed: dialect.ParsedSql, *, database: str, table: str,
            callback_error: MysqlError | None = None, denial: str = "", max_value_bytes: int) -> MysqlError:
    """SQLite's error (or MemoryError, StatementTimeout) while running `parsed`, in the words MySQL would use
    where there is a MySQL counterpart. `callback_error` is why a Python function of the statement raised,
    `denial` why the authorizer refused it (both as the database recorded them for this statement)."""
    message = str(error)
    statement = parsed.statements[0] if parsed.statements else None
    if isinstance(error, MemoryError):
        return MysqlError("1105 (HY000): the statement needs more memory than this database allows", "memory")
    if message == "interrupted" or isinstance(error, StatementTimeout):
        return MysqlError(TIMEOUT_TEXT, "timeout")
    if message == "user-defined function raised exception" and callback_error is not None:
        return callback_error
    if "not authorized" in message or "authorization denied" in message or message.endswith("is prohibited"):
        return MysqlError(f"1142 (42000): {denial or 'this operation is not permitted in this database'}",
                          "denied")
    if message == "database or disk is full":  # max_page_count reached; the statement was undone
        return MysqlError(f"1114 (HY000): The table '{table}' is full", "memory")
    if message.startswith("no such column: "):
        column = message.removeprefix("no such column: ")
        clause = dialect.column_clause(statement, column) if statement is not None else "field list"
        return MysqlError(f"1054 (42S22): Unknown column '{column}' in '{clause}'", "column")
    insert_column = re.fullmatch(r"table .* has no column named (.*)", message, flags=re.DOTALL)
    if insert_column:  # an INSERT's column list
        return MysqlError(f"1054 (42S22): Unknown column '{insert_column.group(1)}' in 'field list'", "column")
    if message.startswith("no such table: "):
        missing = message.removeprefix("no such table: ").rsplit(".", 1)[-1]
        return MysqlError(f"1146 (42S02): Table '{database}.{missing}' doesn't exist", "table")
    syntax = re.fullmatch(r'near "(.*)": syntax error', message, flags=re.DOTALL)
    if syntax:  # SQL that sqlglot accepts but SQLite does not (e.g. an unquoted keyword as a name)
        start = parsed.sql.lower().find(syntax.group(1).lower())
        near = parsed.sql[start:] if start >= 0 else syntax.group(1)
        return MysqlError(dialect.syntax_error_text(dialect.SyntaxProblem(message, 1, near)), "syntax")
    if message.startswith("no such function: "):
        function = message.removeprefix("no such function: ")
        return MysqlError(f"1305 (42000): FUNCTION {database}.{function} does not exist", "function")
    if "values were supplied" in message or "values for" in message:
        return MysqlError("1136 (21S01): Column count doesn't match value count at row 1", "sqlite")
    if message.startswith("LIKE or GLOB pattern too complex"):
        return MysqlError(f"1105 (HY000): LIKE patterns longer than {mysql_text.LIKE_PATTERN_LIMIT} characters "
                          "are not supported here", "memory")
    if message.startswith("string or blob too big"):
        return value_too_long(max_value_bytes)
    return MysqlError(f"1105 (HY000): {message}", "sqlite")
