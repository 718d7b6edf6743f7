"""A task's table in a private in-memory SQLite database, answering MySQL-dialect SQL as DBBench's MySQL would.

Each task's table is built once (every column TEXT, with the MySQL collation) and
serialized; every episode deserializes its own copy, so no episode sees another's
writes and the task data is never modified.

Safety: whatever the statement, it runs under an SQLite authorizer that allows only
reading the task table, writing its rows and calling functions other than
load_extension and printf (no ATTACH, VACUUM, PRAGMA, schema changes or
transactions); attached databases are limited to zero; a progress handler
interrupts statements after `timeout_s`; values are capped in size, temporary
storage stays in memory, and SQLite's heap is capped; at most
`max_output_chars` of result text is produced.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sqlite3
import time

from sqlglot import exp

from cmat_jax.envs.sql import dialect, mysql_functions, mysql_text
from cmat_jax.envs.sql.tasks import SqlTask

TRUNCATION_MARK = "[TRUNCATED]"  # DBBench appends it to results cut at 800 characters
_PROGRESS_INTERVAL = 1000  # SQLite VM instructions between deadline checks
# load_extension would run native code; SQLite's printf/format can spin for seconds inside one VM
# instruction (e.g. '%.*c' with a huge precision), out of the progress handler's reach. MySQL has neither.
_DENIED_FUNCTIONS = frozenset({"load_extension", "printf", "format"})
_DENIABLE_ACTIONS = (
    "ATTACH", "DETACH", "PRAGMA", "TRANSACTION", "SAVEPOINT", "ALTER_TABLE", "ANALYZE", "REINDEX",
    "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "CREATE_VTABLE", "DROP_INDEX", "DROP_TABLE",
    "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER",
    "DROP_VIEW", "DROP_VTABLE", "READ", "INSERT", "UPDATE", "DELETE",
)  # fmt: skip
_ACTION_NAMES = {getattr(sqlite3, "SQLITE_" + name): name.replace("_", " ") for name in _DENIABLE_ACTIONS}


@dataclasses.dataclass(frozen=True)
class Limits:
    timeout_s: float = 2.0  # per statement, wall clock
    max_output_chars: int = 800  # DBBench's truncation length
    max_sql_chars: int = dialect.MAX_SQL_CHARS  # longer statements are refused before parsing
    max_value_bytes: int = 1_000_000  # largest string or blob a statement may build
    # SQLite's heap cap. Process-wide: SQLite keeps one limit per process and the lowest value set wins.
    heap_limit_bytes: int = 256 << 20

    def __post_init__(self):
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, found {self.timeout_s}")
        for name in ("max_output_chars", "max_sql_chars", "max_value_bytes", "heap_limit_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, found {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class TableImage:
    """A task's database as MySQL would have created it, serialized for fast per-episode copies."""

    database: str  # DBBench names the database after the table
    table: str
    columns: tuple[str, ...]
    # "ok"; "no_table" when MySQL rejects the column definitions; "no_database" when it rejects the name.
    state: str
    image: bytes  # empty when there is no table


@dataclasses.dataclass(frozen=True)
class Execution:
    """What one statement gave back."""

    text: str  # the text DBBench shows the agent: str(rows) or the error, truncated
    # None on success, else the kind of error: syntax, empty, multiple, unsupported, table, column,
    # function, timeout, memory, denied, or sqlite (any other error SQLite reports).
    error: str | None = None


class MysqlError(Exception):
    def __init__(self, text: str, kind: str):
        super().__init__(text)
        self.text = text
        self.kind = kind


def _schema_state(task: SqlTask) -> str:
    """Whether MySQL accepts DBBench's CREATE DATABASE / CREATE TABLE for this task."""
    name = task.table_name
    if not name or name != name.rstrip() or len(name) > 64:
        return "no_database"
    seen = set()
    for column in task.columns:
        if not column or column != column.rstrip() or len(column) > 64 or column.lower() in seen:
            return "no_table"  # MySQL: incorrect column name / identifier too long / duplicate column
        seen.add(column.lower())
    return "ok"


def build_image(task: SqlTask) -> TableImage:
    state = _schema_state(task)
    conn = sqlite3.connect(":memory:")
    try:
        if state == "ok":
            conn.create_collation(mysql_text.COLLATION, mysql_text.compare)
            table = dialect.quote_identifier(task.table_name)
            columns = ", ".join(
                f"{dialect.quote_identifier(c)} TEXT COLLATE {mysql_text.COLLATION}" for c in task.columns
            )
            try:
                conn.execute(f"CREATE TABLE {table} ({columns})")
            except sqlite3.Error as e:  # e.g. SQLite reserves names starting with "sqlite_"
                raise ValueError(
                    f"task {task.task_id}: SQLite cannot create table {task.table_name!r} ({e}); rename the table"
                ) from None
            placeholders = ", ".join("?" * len(task.columns))
            rows = [tuple(mysql_text.cell_text(cell) for cell in row) for row in task.rows]
            conn.executemany(f"INSERT INTO {table} VALUES ({placeholders})", rows)
            conn.commit()
            image = conn.serialize()
        else:
            image = b""  # MySQL would have created no table; SQLite cannot serialize an empty database
    finally:
        conn.close()
    return TableImage(task.table_name, task.table_name, task.columns, state, image)


class EpisodeDatabase:
    """One episode's copy of a task database."""

    def __init__(self, image: TableImage, limits: Limits = Limits()):
        self.image = image
        self.limits = limits
        self._deadline = math.inf
        self._denied_action = ""
        self._refused_like_chars = 0  # length of a value LIKE refused in the current statement
        self._cte_names: frozenset[str] = frozenset()
        # Autocommit, as DBBench commits after every statement. One episode runs on one thread at a
        # time, but not necessarily on the thread that created it.
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if image.image:
            conn.deserialize(image.image)
        conn.create_collation(mysql_text.COLLATION, mysql_text.compare)
        conn.create_function(mysql_text.FOLD_FUNCTION, 1, self._like_fold, deterministic=True)
        conn.create_function(mysql_text.TEXT_FUNCTION, 1, mysql_text.stored_text, deterministic=True)
        conn.create_function(mysql_text.NUMBER_FUNCTION, 1, mysql_text.number_value, deterministic=True)
        mysql_functions.register(conn, max_chars=limits.max_value_bytes)
        conn.execute("PRAGMA temp_store = MEMORY")  # sorts and temporary tables never touch disk
        conn.execute(f"PRAGMA hard_heap_limit = {int(limits.heap_limit_bytes)}")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_value_bytes)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, mysql_text.LIKE_PATTERN_LIMIT)
        conn.set_authorizer(self._authorize)
        conn.set_progress_handler(self._past_deadline, _PROGRESS_INTERVAL)
        self._conn = conn

    def close(self) -> None:
        self._conn.close()

    # -- the sandbox ---------------------------------------------------------------------------

    def _like_fold(self, value):
        try:
            return mysql_text.like_fold(value)
        except mysql_text.LikeValueTooLong as e:  # SQLite reports only that a function raised
            self._refused_like_chars = e.args[0]
            raise

    def _authorize(self, action, arg1, arg2, db_name, _trigger):
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() not in _DENIED_FUNCTIONS:
            return sqlite3.SQLITE_OK
        table_actions = (sqlite3.SQLITE_READ, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)
        if action in table_actions and db_name == "main" and arg1 == self.image.table:
            return sqlite3.SQLITE_OK
        # SQLite names no database for a read of no particular column (SELECT 1 FROM t, count(*)),
        # and reports such reads of the statement's own CTEs too.
        if action == sqlite3.SQLITE_READ and db_name is None and arg1 in (self.image.table, *self._cte_names):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            self._denied_action = f"function {arg2}"
        elif action in table_actions:
            self._denied_action = f"{_ACTION_NAMES[action]} on {arg1}"
        else:
            self._denied_action = _ACTION_NAMES.get(action, f"operation {action}")
        return sqlite3.SQLITE_DENY

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    # -- statements ----------------------------------------------------------------------------

    def run(self, parsed: dialect.ParsedSql) -> Execution:
        """Runs one parsed MySQL statement; never raises for anything the statement does."""
        try:
            statement, references = self._admit(parsed)
            sqlite_sql = dialect.to_sqlite(statement, database=self.image.database)
        except MysqlError as e:
            return Execution(self._truncate(e.text), e.kind)
        except Exception as e:  # sqlglot cannot generate SQLite for it
            return Execution(self._truncate(f"1105 (HY000): {e}"), "unsupported")
        return self.run_sqlite(sqlite_sql, parsed, references.cte_names)

    def _admit(self, parsed: dialect.ParsedSql) -> tuple[exp.Expression, dialect.References]:
        """The statement to run and what it refers to, or the MySQL-style error for one that cannot run."""
        if self.image.state == "no_database":
            raise MysqlError(f"1049 (42000): Unknown database '{self.image.database}'", "table")
        if len(parsed.sql) > self.limits.max_sql_chars:
            raise MysqlError(
                f"1105 (HY000): the statement is {len(parsed.sql)} characters long; "
                f"the limit is {self.limits.max_sql_chars}",
                "unsupported",
            )
        if parsed.syntax is not None:
            raise MysqlError(dialect.syntax_error_text(parsed.syntax), "syntax")
        if not parsed.statements:
            raise MysqlError("1065 (42000): Query was empty", "empty")
        if len(parsed.statements) > 1:
            raise MysqlError(
                f"1105 (HY000): {len(parsed.statements)} statements were sent; "
                "one statement is executed at a time",
                "multiple",
            )
        statement = parsed.statements[0]
        kind = dialect.statement_kind(statement, parsed.sql)
        if kind != dialect.READ_KIND and kind not in dialect.WRITE_KINDS:
            raise MysqlError(
                f"1105 (HY000): {kind} statements are not available here; use SELECT, INSERT, UPDATE or DELETE",
                "unsupported",
            )
        references = dialect.References.of(statement)
        self._check_tables(references)
        return statement, references

    def _check_tables(self, references: dialect.References) -> None:
        """MySQL table names are case-sensitive (SQLite's are not) and may be qualified by the database."""
        cte_names = {name.lower() for name in references.cte_names}
        for table in references.tables:
            name, database = table.name, table.db
            if not name or (not database and name.lower() in cte_names):
                continue
            if (database and database != self.image.database) or name != self.image.table:
                raise MysqlError(
                    f"1146 (42S02): Table '{database or self.image.database}.{name}' doesn't exist", "table"
                )

    def run_sqlite(
        self, sqlite_sql: str, source: dialect.ParsedSql | None = None, ctes: frozenset[str] = frozenset()
    ) -> Execution:
        """Runs SQLite text as it is inside the sandbox, where the authorizer and limits are the only guards.

        `source` (the MySQL statement it came from) and `ctes` (its CTE names) only sharpen error messages
        and let the statement read its own CTEs.
        """
        self._deadline = time.monotonic() + self.limits.timeout_s
        self._denied_action = ""
        self._refused_like_chars = 0
        self._cte_names = ctes
        cursor = self._conn.cursor()
        try:
            cursor.execute(sqlite_sql)
            return Execution(self._truncate(self._format_rows(cursor)))
        except Exception as e:  # sqlite3 errors, MemoryError, decoding errors: all become error text
            error = self._as_mysql_error(e, source or dialect.ParsedSql(sqlite_sql, ()))
            return Execution(self._truncate(error.text), error.kind)
        finally:
            self._deadline = math.inf
            self._cte_names = frozenset()
            cursor.close()

    def _format_rows(self, cursor: sqlite3.Cursor) -> str:
        """str(list of row tuples), as DBBench prints MySQL's result, reading no more rows than shown."""
        parts, size = ["["], 1
        while size <= self.limits.max_output_chars:
            row = cursor.fetchone()
            if row is None:
                parts.append("]")
                break
            piece = repr(row) if len(parts) == 1 else ", " + repr(row)
            parts.append(piece)
            size += len(piece)
        return "".join(parts)

    def _truncate(self, text: str) -> str:
        limit = self.limits.max_output_chars
        return text if len(text) <= limit else text[:limit] + TRUNCATION_MARK

    def _as_mysql_error(self, error: Exception, parsed: dialect.ParsedSql) -> MysqlError:
        """SQLite's error, in the words MySQL would use where there is a MySQL counterpart."""
        message = str(error)
        statement = parsed.statements[0] if parsed.statements else None
        database = self.image.database
        if isinstance(error, MemoryError):
            return MysqlError("1105 (HY000): the statement needs more memory than this database allows", "memory")
        if message == "interrupted":
            return MysqlError(
                "3024 (HY000): Query execution was interrupted, maximum statement execution time exceeded", "timeout"
            )
        if "not authorized" in message or "authorization denied" in message or message.endswith("is prohibited"):
            action = self._denied_action or "this operation"
            return MysqlError(f"1142 (42000): {action} is not permitted in this database", "denied")
        if message.startswith("no such column: "):
            column = message.removeprefix("no such column: ")
            clause = dialect.column_clause(statement, column) if statement is not None else "field list"
            return MysqlError(f"1054 (42S22): Unknown column '{column}' in '{clause}'", "column")
        if message.startswith("no such table: "):
            table = message.removeprefix("no such table: ").rsplit(".", 1)[-1]
            return MysqlError(f"1146 (42S02): Table '{database}.{table}' doesn't exist", "table")
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
        if message == "user-defined function raised exception" and self._refused_like_chars:
            return MysqlError(f"1105 (HY000): LIKE on a value of {self._refused_like_chars} characters is not "
                              f"supported here (at most {mysql_text.LIKE_VALUE_LIMIT})", "memory")
        if message.startswith("LIKE or GLOB pattern too complex"):
            return MysqlError(f"1105 (HY000): LIKE patterns longer than {mysql_text.LIKE_PATTERN_LIMIT} characters "
                              "are not supported here", "memory")
        if message.startswith("string or blob too big"):
            return MysqlError(
                f"1105 (HY000): a value would exceed {self.limits.max_value_bytes} bytes", "memory"
            )
        return MysqlError(f"1105 (HY000): {message}", "sqlite")

    # -- grading -------------------------------------------------------------------------------

    def table_rows(self) -> list[tuple]:
        """Every row of the task table (for the final-state hash); MySQL's error if there is no table."""
        if self.image.state == "no_database":
            raise MysqlError(f"1049 (42000): Unknown database '{self.image.database}'", "table")
        if self.image.state == "no_table":
            raise MysqlError(f"1146 (42S02): Table '{self.image.database}.{self.image.table}' doesn't exist", "table")
        try:
            return self._conn.execute(f"SELECT * FROM {dialect.quote_identifier(self.image.table)}").fetchall()
        except Exception as e:  # e.g. out of memory after a statement filled the table
            raise self._as_mysql_error(e, dialect.ParsedSql("", ())) from None
