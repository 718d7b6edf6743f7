"""A task's table in a private in-memory SQLite database, answering MySQL-dialect SQL as DBBench's MySQL would.

Each task's table is built once (every column TEXT, with the MySQL collation) and
serialized; every episode deserializes its own copy, so no episode sees another's
writes and the task data is never modified.

Safety, whatever the statement (docs/sql_env.md, "Safety model"):
- an SQLite authorizer allows reading the task table (and the statement's CTEs),
  writing its rows, and calling the functions of allowlist.py; no ATTACH, VACUUM,
  PRAGMA, schema change, transaction or virtual table;
- time: a deadline per statement, checked by every Python callback, by the
  progress handler and by a watchdog thread that interrupts the connection
  (deadline.py); statements that sort in one SQLite instruction get a share of
  the timeout for producing their rows, and none sorts through a Python collation;
- memory: values capped (`max_value_bytes`), result rows capped in columns, the
  database capped in pages (a clean "table is full", never a corrupt file),
  temporary storage in memory, SQLite's heap capped; the result text is built cell
  by cell and only up to `max_output_chars`; the final-state hash streams the table.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sqlite3
import time
from typing import Iterator

from sqlglot import exp

from cmat_jax.envs.sql import allowlist, dialect, linear_functions, mysql_functions, mysql_text
from cmat_jax.envs.sql.deadline import WATCHDOG, Deadline, StatementTimeout
from cmat_jax.envs.sql.mysql_errors import TIMEOUT_TEXT, MysqlError, mysql_error, value_too_long
from cmat_jax.envs.sql.tasks import SqlTask

TRUNCATION_MARK = "[TRUNCATED]"  # DBBench appends it to results cut at 800 characters
_PROGRESS_INTERVAL = 1000  # SQLite VM instructions between deadline checks
# A statement whose plan sorts (GROUP BY, PARTITION BY, ORDER BY without LIMIT) may produce rows only for
# this share of its timeout: SQLite then sorts them all inside one instruction that no interrupt reaches.
# Measured (docs/sql_env.md): that sort takes up to ~2.5x as long as producing what it sorts.
SORT_SHARE = 0.2
_MAY_SORT = re.compile(r"\bBY\b", re.IGNORECASE)  # every SQLite sorter comes from an "... BY" clause
_FETCH_BATCH = 1024  # rows read at a time by the final-state hash
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"})
_DENIABLE_ACTIONS = (
    "ATTACH", "DETACH", "PRAGMA", "TRANSACTION", "SAVEPOINT", "ALTER_TABLE", "ANALYZE", "REINDEX",
    "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER",
    "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "CREATE_VTABLE", "DROP_INDEX", "DROP_TABLE",
    "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER",
    "DROP_VIEW", "DROP_VTABLE", "READ", "INSERT", "UPDATE", "DELETE",
)  # fmt: skip
_ACTION_NAMES = {getattr(sqlite3, "SQLITE_" + name): name.replace("_", " ") for name in _DENIABLE_ACTIONS}
_TABLE_ACTIONS = (sqlite3.SQLITE_READ, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE)


@dataclasses.dataclass(frozen=True)
class Limits:
    timeout_s: float = 2.0  # per statement (and for the final-state hash), wall clock
    max_output_chars: int = 800  # DBBench's truncation length
    max_sql_chars: int = dialect.MAX_SQL_CHARS  # longer statements are refused before parsing
    # Largest string or blob a statement may build, and largest stored row. DBBench values are short.
    max_value_bytes: int = 1 << 16
    max_columns: int = 256  # of a result row (so a fetched row holds at most max_columns x max_value_bytes)
    max_database_bytes: int = 8 << 20  # an episode's database; writes past it fail as MySQL's "table is full"
    # SQLite's heap cap. Process-wide: SQLite keeps one limit per process and the lowest value set wins.
    heap_limit_bytes: int = 256 << 20

    def __post_init__(self):
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, found {self.timeout_s}")
        for name in ("max_output_chars", "max_sql_chars", "max_value_bytes", "max_columns", "max_database_bytes",
                     "heap_limit_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, found {getattr(self, name)}")

    @property
    def max_observation_chars(self) -> int:
        """The longest observation: a result cut at max_output_chars, plus the truncation mark."""
        return self.max_output_chars + len(TRUNCATION_MARK)


def truncate(text: str, max_chars: int) -> str:
    """DBBench's cut: text over max_chars keeps its first max_chars characters and gets TRUNCATION_MARK."""
    return text if len(text) <= max_chars else text[:max_chars] + TRUNCATION_MARK


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
        self._deadline = Deadline()
        self._denial = ""  # why the authorizer refused the current statement
        self._callback_error: MysqlError | None = None  # why a Python function of the statement raised
        # A KeyboardInterrupt (Ctrl-C, SIGTERM via cmat_jax.interrupts) or SystemExit that landed inside a
        # callback: the sqlite3 module would turn it into a statement error, so it is raised again after.
        self._escaped: BaseException | None = None
        self._cte_names: frozenset[str] = frozenset()
        # Autocommit, as DBBench commits after every statement. One episode runs on one thread at a
        # time, but not necessarily on the thread that created it.
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        if image.image:
            conn.deserialize(image.image)
        conn.create_collation(mysql_text.COLLATION, self._compare)
        guard = self._guarded
        conn.create_function(mysql_text.FOLD_FUNCTION, 1, guard(self._like_fold), deterministic=True)
        conn.create_function(mysql_text.TEXT_FUNCTION, 1, guard(mysql_text.stored_text), deterministic=True)
        conn.create_function(mysql_text.NUMBER_FUNCTION, 1, guard(mysql_text.number_value), deterministic=True)
        conn.create_function(mysql_text.SORT_KEY_FUNCTION, 1, guard(self._sort_key), deterministic=True)
        mysql_functions.register(conn, max_bytes=limits.max_value_bytes, wrap=guard)
        # Over SQLite's own, which take time ~ len(haystack) x len(needle) inside one instruction.
        conn.create_function("instr", 2, guard(linear_functions.instr), deterministic=True)
        replace = linear_functions.make_replace(limits.max_value_bytes)
        conn.create_function("replace", 3, guard(replace), deterministic=True)
        conn.execute("PRAGMA temp_store = MEMORY")  # sorts and temporary tables never touch disk
        conn.execute(f"PRAGMA hard_heap_limit = {int(limits.heap_limit_bytes)}")
        # Growth past the heap cap can leave a corrupt database; past max_page_count a write fails cleanly.
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(1, limits.max_database_bytes // page_size)}")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_value_bytes)
        conn.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, max(limits.max_columns, len(image.columns)))
        conn.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, mysql_text.LIKE_PATTERN_LIMIT)
        self._authorizer = self._keeping_interrupts(self._authorize)
        conn.set_authorizer(self._authorizer)
        conn.set_progress_handler(self._keeping_interrupts(self._past_deadline), _PROGRESS_INTERVAL)
        self._conn = conn

    def close(self) -> None:
        self._conn.close()

    def integrity(self) -> str:
        """SQLite's own check of the episode's database file: "ok", or what is wrong (a trusted call, for
        tests and the fuzz; the sandbox denies PRAGMA to statements)."""
        self._conn.set_authorizer(None)
        try:
            return "\n".join(row[0] for row in self._conn.execute("PRAGMA integrity_check").fetchall())
        except sqlite3.Error as e:
            return str(e)
        finally:
            self._conn.set_authorizer(self._authorizer)

    # -- the sandbox ---------------------------------------------------------------------------

    def _keeping_interrupts(self, callback):
        """`callback` for SQLite, remembering an interrupt that lands in it (see `_escaped`)."""

        def call(*args):
            try:
                return callback(*args)
            except (KeyboardInterrupt, SystemExit) as e:
                self._escaped = e
                raise

        return call

    def _guarded(self, function):
        """`function` as an SQL function: it first checks the deadline, and a refusal it raises is
        remembered (SQLite reports only that a function raised), as is an interrupt (`_escaped`)."""
        deadline = self._deadline

        def call(*args):
            try:
                deadline.check()
                return function(*args)
            except StatementTimeout:
                self._callback_error = MysqlError(TIMEOUT_TEXT, "timeout")
                raise
            except linear_functions.ValueTooLong:
                self._callback_error = self._callback_error or self._too_long_error()
                raise

        return self._keeping_interrupts(call)

    def _compare(self, a: str, b: str) -> int:
        # Raising is how a collation stops a statement: the sqlite3 module then skips the statement's
        # remaining comparisons (a sort in progress ends at once) and re-raises the exception.
        self._deadline.check()
        return mysql_text.compare(a, b, self._deadline.check)

    def _sort_key(self, value):
        key = mysql_text.sort_key(value, self._deadline.check)
        if isinstance(key, str) and len(key) * 4 > self.limits.max_value_bytes \
                and len(key.encode("utf-8")) > self.limits.max_value_bytes:
            self._callback_error = MysqlError(
                f"1105 (HY000): sorting or grouping by this value needs a collation key of more than "
                f"{self.limits.max_value_bytes} bytes, which is not supported here", "memory")
            raise linear_functions.ValueTooLong()
        return key

    def _like_fold(self, value):
        try:
            return mysql_text.like_fold(value, self._deadline.check)
        except mysql_text.LikeValueTooLong as e:
            self._callback_error = MysqlError(
                f"1105 (HY000): LIKE on a value of {e.args[0]} characters is not supported here "
                f"(at most {mysql_text.LIKE_VALUE_LIMIT})", "memory")
            raise

    def _too_long_error(self) -> MysqlError:
        return value_too_long(self.limits.max_value_bytes)

    def _authorize(self, action, arg1, arg2, db_name, _trigger):
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            denial = allowlist.denial(arg2 or "")
            if denial is None:
                return sqlite3.SQLITE_OK
            self._denial = denial
            return sqlite3.SQLITE_DENY
        if action in _TABLE_ACTIONS and db_name == "main" and arg1 == self.image.table:
            return sqlite3.SQLITE_OK
        # SQLite names no database for a read of no particular column (SELECT 1 FROM t, count(*)),
        # and reports such reads of the statement's own CTEs too.
        if action == sqlite3.SQLITE_READ and db_name is None and arg1 in (self.image.table, *self._cte_names):
            return sqlite3.SQLITE_OK
        if action in _TABLE_ACTIONS and (arg1 or "").lower() in _SCHEMA_TABLES:
            # Also what SQLite asks first when a table-valued function (pragma_table_info, ...) is used.
            self._denial = f"the schema ({arg1}) and table-valued functions are not available here"
        elif action in _TABLE_ACTIONS:
            self._denial = f"{_ACTION_NAMES[action]} on {arg1} is not permitted in this database"
        else:
            self._denial = f"{_ACTION_NAMES.get(action, f'operation {action}')} is not permitted in this database"
        return sqlite3.SQLITE_DENY

    def _raise_escaped(self) -> None:
        """Raises the interrupt that landed in a callback of this statement, if one did (`_escaped`):
        the statement's error is then not the statement's doing, and the program is being stopped."""
        escaped, self._escaped = self._escaped, None
        if escaped is not None:
            raise escaped

    def _past_deadline(self) -> int:
        return 1 if self._deadline.passed() else 0

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
        unknown = dialect.unknown_table(references, self.image.table, self.image.database)
        if unknown is not None:
            name = dialect.table_name(unknown)
            raise MysqlError(f"1146 (42S02): Table '{unknown.db or self.image.database}.{name}' doesn't exist", "table")

    def run_sqlite(
        self, sqlite_sql: str, source: dialect.ParsedSql | None = None, ctes: frozenset[str] = frozenset()
    ) -> Execution:
        """Runs SQLite text as it is inside the sandbox, where the authorizer and limits are the only guards.

        `source` (the MySQL statement it came from) and `ctes` (its CTE names) sharpen error messages and
        let the statement read its own CTEs; the timeout counts from when `source` began to be parsed.
        """
        start = source.started if source is not None else time.monotonic()
        self._denial = ""
        self._callback_error = None
        self._escaped = None
        self._cte_names = ctes
        cursor = self._conn.cursor()
        ticket = None
        try:
            share = SORT_SHARE if _MAY_SORT.search(sqlite_sql) and self._sorts(sqlite_sql) else 1.0
            self._deadline.at = start + self.limits.timeout_s * share
            ticket = WATCHDOG.arm(self._conn, self._deadline.at)
            cursor.execute(sqlite_sql)
            return Execution(self._truncate(self._format_rows(cursor)))
        except Exception as e:  # sqlite3 errors, MemoryError, decoding errors: all become error text
            self._raise_escaped()
            error = e if isinstance(e, MysqlError) else self._as_mysql_error(
                e, source or dialect.ParsedSql(sqlite_sql, ())
            )
            return Execution(self._truncate(error.text), error.kind)
        finally:
            self._deadline.at = math.inf
            cursor.close()  # resets the statement: a late interrupt then cannot reach the next one
            if ticket is not None:
                WATCHDOG.disarm(ticket)
            self._cte_names = frozenset()

    def _sorts(self, sqlite_sql: str) -> bool:
        """Whether SQLite's plan for the statement sorts in one instruction; refuses one that would sort
        through the Python collation (N log N callbacks no deadline can cut short)."""
        try:
            plan = self._conn.execute("EXPLAIN " + sqlite_sql).fetchall()
        except sqlite3.Error:
            self._raise_escaped()
            return False  # running it gives the same error
        sorters = [str(step[5]) for step in plan if step[1] == "SorterOpen"]
        if any(mysql_text.COLLATION in key for key in sorters):
            raise MysqlError(
                "1105 (HY000): this statement would sort text in one step here; in GROUP BY and ORDER BY, name "
                "the columns instead of numbering columns of SELECT *", "unsupported")
        return bool(sorters)

    def _format_rows(self, cursor: sqlite3.Cursor) -> str:
        """str(list of row tuples), as DBBench prints MySQL's result, up to the first character past
        max_output_chars: rows are read, and cells turned into text, only until then."""
        limit = self.limits.max_output_chars
        parts, size = ["["], 1
        while size <= limit:
            row = cursor.fetchone()
            if row is None:
                parts.append("]")
                break
            opening = "(" if len(parts) == 1 else ", ("
            parts.append(opening)
            size += len(opening)
            for index, cell in enumerate(row):
                if size > limit:
                    break
                piece = repr(cell) if index == 0 else ", " + repr(cell)
                parts.append(piece)
                size += len(piece)
            else:
                closing = ",)" if len(row) == 1 else ")"
                parts.append(closing)
                size += len(closing)
        return "".join(parts)

    def _truncate(self, text: str) -> str:
        return truncate(text, self.limits.max_output_chars)

    def _as_mysql_error(self, error: Exception, parsed: dialect.ParsedSql) -> MysqlError:
        """SQLite's error in MySQL's words (mysql_errors.py), with what this statement's callbacks recorded."""
        callback_error = self._callback_error
        if callback_error is None and self._deadline.passed():
            # A collation past its deadline leaves its StatementTimeout pending, and the next Python
            # function then fails at once: SQLite reports only that a function raised.
            callback_error = MysqlError(TIMEOUT_TEXT, "timeout")
        return mysql_error(error, parsed, database=self.image.database, table=self.image.table,
                           callback_error=callback_error, denial=self._denial,
                           max_value_bytes=self.limits.max_value_bytes)

    # -- grading -------------------------------------------------------------------------------

    def table_rows(self) -> list[tuple]:
        """Every row of the task table; MySQL's error if there is no table, or past the statement timeout."""
        return list(self.iter_table_rows())

    def iter_table_rows(self) -> Iterator[tuple]:
        """Every row of the task table, read lazily (for the streaming final-state hash) under the statement
        timeout, which covers the consumer's time too; MySQL's error if there is no table, or on timeout."""
        if self.image.state == "no_database":
            raise MysqlError(f"1049 (42000): Unknown database '{self.image.database}'", "table")
        if self.image.state == "no_table":
            raise MysqlError(f"1146 (42S02): Table '{self.image.database}.{self.image.table}' doesn't exist", "table")
        self._escaped = None
        self._deadline.at = time.monotonic() + self.limits.timeout_s
        ticket = WATCHDOG.arm(self._conn, self._deadline.at)
        cursor = self._conn.cursor()
        try:
            cursor.execute(f"SELECT * FROM {dialect.quote_identifier(self.image.table)}")
            while True:
                if self._deadline.passed():
                    raise MysqlError(TIMEOUT_TEXT, "timeout")
                rows = cursor.fetchmany(_FETCH_BATCH)
                if not rows:
                    return
                yield from rows
        except MysqlError:
            raise
        except Exception as e:  # e.g. interrupted, or out of memory
            self._raise_escaped()
            raise self._as_mysql_error(e, dialect.ParsedSql("", ())) from None
        finally:
            self._deadline.at = math.inf
            cursor.close()
            WATCHDOG.disarm(ticket)
