"""MySQL-dialect SQL parsed with sqlglot, inspected, and turned into the SQLite text that computes what MySQL would.

`parse_mysql` never raises: garbage in gives a syntax problem, with the text MySQL's
client prints for it (`syntax_error_text`). `References` gathers the names a statement
uses in one walk; `unknown_table` is the one rule of table admission (the Checker and
the database both apply it); `statement_kind` names what a statement does;
`column_clause` the clause MySQL names in an unknown-column error. `to_sqlite` gives
SQLite text for one statement, with mysql_semantics.py's rewrites carrying over MySQL
semantics SQLite lacks (text meeting numbers, the collation, LIKE, MySQL's string
functions, stored number text, interruptible sorts).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time

import sqlglot
from sqlglot import exp
from sqlglot.dialects.sqlite import SQLite

from cmat_jax.envs.sql import mysql_semantics

# sqlglot warns when it falls back to an opaque Command for syntax it does not model; such statements
# are rejected with a clear message here, so the warning would only be noise in rollout logs.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


MAX_SQL_CHARS = 20_000  # default bound on statement text; parsing far longer text takes seconds


@dataclasses.dataclass(frozen=True)
class SyntaxProblem:
    description: str
    line: int
    near: str  # the statement text from the offending token on


@dataclasses.dataclass(frozen=True)
class ParsedSql:
    """A statement string parsed in MySQL's dialect: either statements or a syntax problem."""

    sql: str
    statements: tuple[exp.Expression, ...]
    syntax: SyntaxProblem | None = None
    # time.monotonic() when parsing began: the statement's timeout counts from here, so that parsing,
    # checking and translating a long statement leave it less time to run.
    started: float = dataclasses.field(default_factory=time.monotonic, compare=False)


def parse_mysql(sql: str, max_chars: int | None = None) -> ParsedSql:
    """Parses MySQL text; never raises (garbage in gives a syntax problem). Text over `max_chars` is not parsed."""
    started = time.monotonic()
    if max_chars is not None and len(sql) > max_chars:
        problem = SyntaxProblem(f"the statement is longer than {max_chars} characters", 1, "")
        return ParsedSql(sql, (), problem, started)
    try:
        trees = sqlglot.parse(sql, read="mysql")
    except sqlglot.errors.ParseError as e:
        first = e.errors[0] if e.errors else {}
        near = (first.get("highlight") or "") + (first.get("end_context") or "")
        description = first.get("description") or str(e).splitlines()[0]
        return ParsedSql(sql, (), SyntaxProblem(description, first.get("line") or 1, near), started)
    except Exception as e:  # tokenizer errors, recursion on absurd nesting, ...
        description = (str(e).splitlines() or [type(e).__name__])[0]
        return ParsedSql(sql, (), SyntaxProblem(description, 1, ""), started)
    return ParsedSql(sql, tuple(tree for tree in trees if tree is not None), started=started)


def syntax_error_text(problem: SyntaxProblem) -> str:
    """The error a MySQL client prints for a syntax error."""
    return (
        "1064 (42000): You have an error in your SQL syntax; check the manual that corresponds to your "
        f"MySQL server version for the right syntax to use near '{problem.near[:80]}' at line {problem.line}"
    )


@dataclasses.dataclass(frozen=True)
class References:
    """The names a statement refers to, gathered in one walk over its tree."""

    tables: tuple[exp.Table, ...]
    columns: tuple[exp.Column, ...]
    ctes: tuple[exp.CTE, ...]
    subqueries: tuple[exp.Subquery, ...]
    aliases: tuple[exp.Alias, ...]
    table_aliases: tuple[exp.TableAlias, ...]

    @classmethod
    def of(cls, statement: exp.Expression) -> References:
        kinds = (exp.Table, exp.Column, exp.CTE, exp.Subquery, exp.Alias, exp.TableAlias)
        found: dict[type, list] = {kind: [] for kind in kinds}
        for node in statement.walk():
            for kind in kinds:
                if isinstance(node, kind):
                    found[kind].append(node)
        return cls(*(tuple(found[kind]) for kind in kinds))

    @property
    def cte_names(self) -> frozenset[str]:
        return frozenset(cte.alias for cte in self.ctes)


def table_name(table: exp.Table) -> str:
    """The name a FROM item refers to; for a table-valued function (`pragma_table_info('x')`) its name."""
    if table.name:
        return table.name
    function = table.this
    if isinstance(function, exp.Anonymous):
        return function.name
    return function.sql_name() if isinstance(function, exp.Func) else table.sql()


def unknown_table(references: References, table: str, database: str) -> exp.Table | None:
    """The first FROM item that is neither the task's table nor one of the statement's CTEs, else None.

    The one rule of table admission (the Checker and the database both apply it): MySQL table names
    are case-sensitive and may be qualified by the database; a table-valued function is no table.
    """
    cte_names = {name.lower() for name in references.cte_names}
    for reference in references.tables:
        is_function = not reference.name
        name = table_name(reference)
        if not is_function and not reference.db and name.lower() in cte_names:
            continue
        if is_function or (reference.db and reference.db != database) or name != table:
            return reference
    return None


READ_KIND = "SELECT"
WRITE_KINDS = ("INSERT", "UPDATE", "DELETE")


def statement_kind(statement: exp.Expression, sql: str) -> str:
    """SELECT, INSERT, UPDATE, DELETE, or the leading keyword of any other statement (DROP, PRAGMA, ...)."""
    if isinstance(statement, (exp.Select, exp.SetOperation, exp.Subquery)):
        return READ_KIND
    for kind, node_type in (("INSERT", exp.Insert), ("UPDATE", exp.Update), ("DELETE", exp.Delete)):
        if isinstance(statement, node_type):
            return kind
    keyword = re.match(r"\W*([A-Za-z_]+)", sql)
    return keyword.group(1).upper() if keyword else type(statement).__name__.upper()


# ---------------------------------------------------------------------------------------------
# SQLite text.


class _SQLiteBackticks(SQLite):
    """SQLite quoting identifiers with backticks: SQLite reads a double-quoted name that is not a
    column as a string literal, which would turn MySQL's "Unknown column" into silently wrong rows."""

    class Tokenizer(SQLite.Tokenizer):
        IDENTIFIERS = ["`"]


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def to_sqlite(statement: exp.Expression, database: str | None = None) -> str:
    """SQLite text for one parsed MySQL statement; `database.table` qualifiers naming `database` are dropped."""
    tree = mysql_semantics.sort_compounds_outside(statement.copy())
    if database is not None:
        for table in tree.find_all(exp.Table):
            if table.args.get("db") is not None and table.db == database and not table.catalog:
                table.set("db", None)
    for node in list(tree.walk()):  # snapshot: rewrites insert wrappers that need no rewriting themselves
        mysql_semantics.rewrite(node)
    return tree.sql(dialect=_SQLiteBackticks, copy=False)  # the tree is already a private copy


# ---------------------------------------------------------------------------------------------
# Error context.

_CLAUSE_NAMES = {
    "expressions": "field list",
    "where": "where clause",
    "group": "group statement",
    "having": "having clause",
    "order": "order clause",
}


def column_clause(statement: exp.Expression, column: str) -> str:
    """The clause MySQL names in 'Unknown column ... in <clause>' for the first use of `column`."""
    wanted = column.rsplit(".", 1)[-1].lower()
    for node in statement.find_all(exp.Column):
        if node.name.lower() != wanted:
            continue
        while node.parent is not None:
            if isinstance(node.parent, exp.Join) and node.arg_key == "on":
                return "on clause"
            if isinstance(node.parent, (exp.Select, exp.Update, exp.Delete)) and node.arg_key in _CLAUSE_NAMES:
                return _CLAUSE_NAMES[node.arg_key]
            node = node.parent
    return "field list"
