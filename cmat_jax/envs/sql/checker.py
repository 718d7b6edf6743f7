"""The Checker's static part: verifies a statement against the task's schema before it runs.

Checks, in order: the text parses in MySQL's dialect; it holds exactly one
statement; the statement kind is allowed (SELECT-family tasks only read; mutation
tasks may also INSERT, UPDATE or DELETE rows of the task table); every table
exists (MySQL table names are case-sensitive); every column referenced exists
(column names are not). A rejection carries a one-line reason the Assistant can
act on.
"""

from __future__ import annotations

import dataclasses
import difflib

from sqlglot import exp

from cmat_jax.envs.sql import dialect
from cmat_jax.envs.sql.tasks import SqlTask


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    # Which check rejected the statement: syntax, statement_count, statement_kind, unknown_table,
    # unknown_column or value_count ("" when accepted).
    rule: str = ""


ACCEPTED = Verdict(True)


def _quoted(name: str) -> str:
    return dialect.quote_identifier(name)


_ECHO_CHARS = 64  # MySQL's longest identifier: reasons never echo more of a name the statement made up


def _echo(name: str) -> str:
    return name if len(name) <= _ECHO_CHARS else name[:_ECHO_CHARS] + "..."


class Checker:
    """Static verification of MySQL statements for one table."""

    def __init__(
        self, table: str, columns: tuple[str, ...], writable: bool, max_sql_chars: int = dialect.MAX_SQL_CHARS
    ):
        self.table = table
        self.max_sql_chars = max_sql_chars
        self.columns = tuple(columns)
        self.writable = writable
        self._columns_by_key = {c.lower(): c for c in self.columns}
        self._column_list = ", ".join(_quoted(c) for c in self.columns)

    @classmethod
    def for_task(cls, task: SqlTask) -> Checker:
        return cls(task.table_name, task.columns, writable=task.is_mutation)

    def check(self, sql: str) -> Verdict:
        return self.check_parsed(dialect.parse_mysql(sql, max_chars=self.max_sql_chars))

    def check_parsed(self, parsed: dialect.ParsedSql) -> Verdict:
        if parsed.syntax is not None:
            near = f" near '{parsed.syntax.near[:40]}'" if parsed.syntax.near else ""
            return Verdict(False, f"Syntax error{near}: {parsed.syntax.description}; fix the SQL.", "syntax")
        count = len(parsed.statements)
        if count != 1:
            found = "no statement" if count == 0 else f"{count} statements"
            return Verdict(False, f"Expected exactly one SQL statement, found {found}.", "statement_count")
        statement = parsed.statements[0]
        verdict = self._check_kind(dialect.statement_kind(statement, parsed.sql))
        if not verdict.ok:
            return verdict
        references = dialect.References.of(statement)
        verdict = self._check_tables(references)
        if verdict.ok:
            verdict = self._check_columns(statement, references)
        if verdict.ok:
            verdict = self._check_value_count(statement)
        return verdict

    # -- individual checks -----------------------------------------------------------------------

    def _check_kind(self, kind: str) -> Verdict:
        if kind == dialect.READ_KIND or (self.writable and kind in dialect.WRITE_KINDS):
            return ACCEPTED
        if self.writable:
            allowed = f"only SELECT, INSERT, UPDATE and DELETE on {_quoted(self.table)} are allowed"
        else:
            allowed = "this task only reads the table; use SELECT"
        return Verdict(False, f"{_echo(kind)} is not allowed: {allowed}.", "statement_kind")

    def _check_tables(self, references: dialect.References) -> Verdict:
        # DBBench names the database after the table.
        unknown = dialect.unknown_table(references, self.table, database=self.table)
        if unknown is None:
            return ACCEPTED
        name = dialect.table_name(unknown)
        return self._unknown_table(f"{unknown.db}.{name}" if unknown.db and unknown.db != self.table else name)

    def _unknown_table(self, name: str) -> Verdict:
        hint = " (table names are case-sensitive)" if name.lower() == self.table.lower() else ""
        return Verdict(
            False, f"Unknown table '{_echo(name)}'{hint}; the table is {_quoted(self.table)}.", "unknown_table"
        )

    def _check_columns(self, statement: exp.Expression, references: dialect.References) -> Verdict:
        task_qualifiers = {self.table.lower()}
        task_qualifiers.update(t.alias.lower() for t in references.tables if t.alias and t.name == self.table)
        derived_qualifiers = {name.lower() for name in references.cte_names}
        derived_qualifiers.update(s.alias.lower() for s in references.subqueries if s.alias)
        # Names an unqualified column may also refer to: aliases, derived-table and CTE outputs.
        other_names = {alias.alias.lower() for alias in references.aliases if alias.alias}
        for table_alias in references.table_aliases:
            other_names.update(column.name.lower() for column in table_alias.columns)

        for column in references.columns:
            if isinstance(column.this, exp.Star):
                continue
            key, qualifier = column.name.lower(), column.table.lower()
            if not qualifier or qualifier in task_qualifiers:
                if key in self._columns_by_key or (not qualifier and key in other_names):
                    continue
                return self._unknown_column(column.name)
            if qualifier not in derived_qualifiers:
                return self._unknown_table(column.table)
        if isinstance(statement, exp.Insert) and isinstance(statement.this, exp.Schema):
            for identifier in statement.this.expressions:
                if identifier.name.lower() not in self._columns_by_key:
                    return self._unknown_column(identifier.name)
        return ACCEPTED

    def _unknown_column(self, name: str) -> Verdict:
        close = difflib.get_close_matches(name, self.columns, n=1, cutoff=0.75)
        hint = f" did you mean {_quoted(close[0])}?" if close else ""
        return Verdict(
            False, f"Unknown column '{_echo(name)}';{hint} columns are: {self._column_list}.", "unknown_column"
        )

    def _check_value_count(self, statement: exp.Expression) -> Verdict:
        if not isinstance(statement, exp.Insert) or not isinstance(statement.expression, exp.Values):
            return ACCEPTED
        target = statement.this
        listed = target.expressions if isinstance(target, exp.Schema) else []
        expected = len(listed) if listed else len(self.columns)
        for number, row in enumerate(statement.expression.expressions, start=1):
            found = len(row.expressions) if isinstance(row, exp.Tuple) else 1
            if found != expected:
                return Verdict(
                    False, f"Row {number} has {found} values for {expected} columns; give one value per column.",
                    "value_count",
                )
        return ACCEPTED
