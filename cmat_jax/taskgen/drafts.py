"""Drafts of generated tasks: for each DBBench task type, a question or change request in words, its gold SQL in
MySQL's dialect, and the answer computed in Python from what the task means.

A drafter takes (rng, table, profile) and returns a `Draft`, or None to draw again
(an ambiguous question, an empty or tied answer, a change that is no change). The
expected answer follows MySQL's semantics: equality under its case- and accent-blind
collation (mysql_text), numeric order and sums on number columns. Names are written
as DBBench's gold SQL writes them: bare where MySQL allows, else in backticks.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from typing import Sequence

from cmat_jax.envs.sql import mysql_text
from cmat_jax.taskgen import text
from cmat_jax.taskgen.profiles import Profile
from cmat_jax.taskgen.tables import Column, Table


# -- SQL text -------------------------------------------------------------------------------------------

# MySQL 8 reserved words that appear as headers (they must be quoted); other names are checked by executing.
_RESERVED = frozenset({"RANK", "RANGE", "USE", "ROW", "ROWS", "GROUP", "ORDER", "KEY", "INDEX", "DIV", "MOD",
                       "TABLE", "SELECT", "WHERE", "FROM", "LIMIT", "OPTION", "CONDITION", "CHANGE", "MATCH"})
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _ident(name: str) -> str:
    """A name as DBBench's gold SQL writes it: bare when MySQL allows, else in backticks."""
    if _BARE_NAME.fullmatch(name) and name.upper() not in _RESERVED:
        return name
    return "`" + name.replace("`", "``") + "`"


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclasses.dataclass(frozen=True)
class Cond:
    column: Column
    op: str  # "=", "<" or ">"
    value: str  # as stored (equality) or a number as written (< and >)

    def sql(self) -> str:
        value = _literal(self.value) if self.op == "=" else self.value
        return f"{_ident(self.column.name)} {self.op} {value}"

    def words(self) -> text.Cond:
        return (self.column.name, self.op, self.value)


def _where(conds: Sequence[Cond]) -> str:
    return " WHERE " + " AND ".join(c.sql() for c in conds) if conds else ""


def _numeric(column: Column, profile: Profile) -> str:
    """The column as a number in MIN/MAX/ORDER BY (MySQL compares TEXT as text there: '9' > '10')."""
    if not profile.numeric_cast:
        return _ident(column.name)
    kind = "UNSIGNED" if column.numeric == "int" else "DECIMAL(10,2)"
    return f"CAST({_ident(column.name)} AS {kind})"


# -- the meaning of a draft, in Python -------------------------------------------------------------------


def _matches(table: Table, row: Sequence[str], cond: Cond) -> bool:
    cell = row[table.index(cond.column)]
    if cond.op == "=":
        return mysql_text.compare(cell, cond.value) == 0  # MySQL's case- and accent-blind equality
    return float(cell) < float(cond.value) if cond.op == "<" else float(cell) > float(cond.value)


def _filtered(table: Table, conds: Sequence[Cond]) -> list[tuple[str, ...]]:
    return [row for row in table.rows if all(_matches(table, row, c) for c in conds)]


def distinct(values: Sequence[str]) -> list[str]:
    seen, out = set(), []
    for value in values:
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out


def _number_text(value: float) -> str:
    return mysql_text.double_text(float(value))


@dataclasses.dataclass(frozen=True)
class Draft:
    task_type: str
    description: str
    sql: str
    expected: tuple  # SELECT family: the answer values; INSERT/UPDATE: the table's rows afterwards


# -- drafts per task type: None means "draw again" ---------------------------------------------------------


def _columns(table: Table, *roles: str, exclude: Sequence[Column] = ()) -> list[Column]:
    return [c for c in table.columns if c.role in roles and c not in exclude]


def _eq_conds(rng: random.Random, table: Table, row: Sequence[str], columns: Sequence[Column], count: int):
    chosen = rng.sample(list(columns), min(count, len(columns)))
    return [Cond(c, "=", row[table.index(c)]) for c in chosen]


def _question(rng, profile: Profile, kind: str, **parts) -> str:
    lowercase = rng.random() < profile.lowercase
    return text.select_question(rng, profile.style, kind, lowercase=lowercase, **parts)


def draft_other(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
    key = table.key
    target = rng.choice([c for c in table.columns if c is not key])
    row = rng.choice(table.rows)
    if rng.random() < 0.5:
        conds, key_value = [Cond(key, "=", row[table.index(key)])], row[table.index(key)]
    else:
        pool = [c for c in table.columns if c not in (key, target)]
        if profile.style == "tiny":
            pool = _columns(table, "category", exclude=(target,))
        if not pool:
            return None
        conds, key_value = _eq_conds(rng, table, row, pool, rng.randint(1, profile.max_conditions)), None
    answers = distinct([r[table.index(target)] for r in _filtered(table, conds)])
    if len(answers) != 1:
        return None  # several rows answer: the question is ambiguous
    question = _question(rng, profile, "other", target=target.name, conds=[c.words() for c in conds],
                         rows=table.row_noun, key_value=key_value)
    sql = f"SELECT {_ident(target.name)} FROM {_ident(table.name)}{_where(conds)};"
    return Draft("other", question, sql, tuple(answers))


def _threshold_cond(rng: random.Random, table: Table, column: Column) -> Cond:
    """A strict comparison with a value of the column (so some rows fall on each side)."""
    value = rng.choice(table.values(column))
    return Cond(column, rng.choice(("<", ">")), value)


def draft_comparison(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
    numbers = _columns(table, "number")
    if not numbers:
        return None
    number = rng.choice(numbers)
    targets = [c for c in table.columns if c is not number and c.role in ("key", "text", "category", "display")]
    if not targets:
        return None
    target = rng.choice(targets)
    conds = [_threshold_cond(rng, table, number)]
    if profile.max_conditions > 1 and rng.random() < 0.5:
        others = _columns(table, "category", exclude=(target,))
        if others:
            conds += _eq_conds(rng, table, rng.choice(table.rows), others, 1)
        rng.shuffle(conds)
    answers = distinct([r[table.index(target)] for r in _filtered(table, conds)])
    if not 1 <= len(answers) <= profile.max_answers:
        return None
    question = _question(rng, profile, "comparison", target=target.name, conds=[c.words() for c in conds],
                         rows=table.row_noun)
    sql = f"SELECT {_ident(target.name)} FROM {_ident(table.name)}{_where(conds)};"
    return Draft("comparison", question, sql, tuple(answers))


def draft_counting(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
    if profile.style != "tiny" and rng.random() < 0.25:  # COUNT(DISTINCT ...)
        targets = _columns(table, "category", "text")
        if not targets:
            return None
        target = rng.choice(targets)
        conds = []
        if rng.random() < 0.4:
            conds = _eq_conds(rng, table, rng.choice(table.rows), _columns(table, "category", exclude=(target,)), 1)
        rows = _filtered(table, conds)
        count = len({mysql_text.collation_key(r[table.index(target)]) for r in rows})
        question = _question(rng, profile, "count_distinct", target=target.name,
                             conds=[c.words() for c in conds], rows=table.row_noun)
        sql = f"SELECT COUNT(DISTINCT {_ident(target.name)}) FROM {_ident(table.name)}{_where(conds)};"
        return Draft("counting", question, sql, (str(count),))
    row = rng.choice(table.rows)
    if profile.style == "tiny":
        conds = _eq_conds(rng, table, row, _columns(table, "category"), 1)
    else:
        pool = _columns(table, "category")
        if not pool or rng.random() < 0.25:  # mostly a category ("how many matches were away?")
            pool = [c for c in table.columns if c.role in ("text", "display", "number") and not c.sequence]
        conds = _eq_conds(rng, table, row, pool, rng.randint(1, profile.max_conditions))
        numbers = _columns(table, "number")
        if numbers and rng.random() < 0.3:
            conds = conds[:1] + [_threshold_cond(rng, table, rng.choice(numbers))]
    if not conds:
        return None
    count = len(_filtered(table, conds))
    if count == 0:
        return None
    question = _question(rng, profile, "count", target="", conds=[c.words() for c in conds], rows=table.row_noun)
    sql = f"SELECT COUNT(*) FROM {_ident(table.name)}{_where(conds)};"
    return Draft("counting", question, sql, (str(count),))


def draft_ranking(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
    numbers = [c for c in _columns(table, "number") if not c.sequence]
    if not numbers:
        return None
    number = rng.choice(numbers)
    key = table.key
    target = key if rng.random() < 0.7 else rng.choice([c for c in table.columns if c is not number])
    conds = []
    if profile.max_conditions > 1 and rng.random() < 0.4:
        conds = _eq_conds(rng, table, rng.choice(table.rows), _columns(table, "category", exclude=(target,)), 1)
    rows = _filtered(table, conds)
    if len(rows) < 2:
        return None
    direction = rng.choice(("DESC", "ASC"))
    values = [float(r[table.index(number)]) for r in rows]
    best = max(values) if direction == "DESC" else min(values)
    if values.count(best) != 1:
        return None  # a tie at the top: LIMIT 1 would pick either
    answer = rows[values.index(best)][table.index(target)]
    question = _question(rng, profile, "ranking", target=target.name, conds=[c.words() for c in conds],
                         rows=table.row_noun, number=number.name, direction=direction)
    sql = (f"SELECT {_ident(target.name)} FROM {_ident(table.name)}{_where(conds)} "
           f"ORDER BY {_numeric(number, profile)} {direction} LIMIT 1;")
    return Draft("ranking", question, sql, (answer,))


def draft_aggregate(agg: str):
    def draft(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
        # Sums and means of years or positions mean nothing; the extreme of a sequence (Week, Rank) only
        # under a condition ("the lowest week with an attendance of 52,000").
        numbers = [c for c in _columns(table, "number") if c.measure or agg in ("MIN", "MAX")]
        if not numbers:
            return None
        number = rng.choice(numbers)
        conds = []
        if rng.random() < 0.7 or number.sequence:
            pool = _columns(table, "category")
            if profile.style != "tiny" and rng.random() < 0.3:
                pool = [c for c in table.columns if c.role in ("text", "display")]
            count = rng.randint(1, profile.max_conditions)
            conds = _eq_conds(rng, table, rng.choice(table.rows), pool, count)
        rows = _filtered(table, conds)
        if not rows or (number.sequence and not conds):
            return None
        values = [float(r[table.index(number)]) for r in rows]
        if agg == "SUM":
            value, inner = math.fsum(values), _ident(number.name)
        elif agg == "AVG":
            value, inner = math.fsum(values) / len(values), _ident(number.name)
        else:
            value = min(values) if agg == "MIN" else max(values)
            inner = _numeric(number, profile)
        question = _question(rng, profile, "aggregate", target="", conds=[c.words() for c in conds],
                             rows=table.row_noun, number=number.name, agg=agg)
        sql = f"SELECT {agg}({inner}) FROM {_ident(table.name)}{_where(conds)};"
        return Draft(f"aggregation-{agg}", question, sql, (_number_text(value),))

    return draft


def draft_insert(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
    row = table.spare
    pairs = [(c.name, v) for c, v in zip(table.columns, row)]
    description = text.insert_description(rng, profile.style, table=table.name, rows=table.row_noun, pairs=pairs,
                                          key=table.index(table.key), says=[c.say for c in table.columns])
    values = ", ".join(_literal(v) for v in row)
    if profile.style == "tiny":
        sql = f"INSERT INTO {_ident(table.name)} VALUES ({values});"
    else:
        columns = ", ".join(_ident(c.name) for c in table.columns)
        sql = f"INSERT INTO {_ident(table.name)} ({columns}) VALUES ({values});"
    return Draft("INSERT", description, sql, table.rows + (row,))


def draft_update(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
    key = table.key
    r = rng.randrange(len(table.rows))
    row = table.rows[r]
    pool = [c for c in table.columns if c is not key and not c.sequence
            and table.spare[table.index(c)] != row[table.index(c)]]
    if not pool:
        return None
    count = 1 if profile.style == "tiny" else min(len(pool), rng.choice((1, 1, 1, 2, 2, 3)))
    changed = sorted(rng.sample(pool, count), key=table.index)
    new_row = list(row)
    for column in changed:
        new_row[table.index(column)] = table.spare[table.index(column)]
    key_value = row[table.index(key)]
    sets = [(c.name, new_row[table.index(c)]) for c in changed]
    description = text.update_description(rng, profile.style, table=table.name, rows=table.row_noun,
                                          key=(key.name, key_value), sets=sets, says=[c.say for c in changed],
                                          key_says=key.say)
    assignments = ", ".join(f"{_ident(c)} = {_literal(v)}" for c, v in sets)
    sql = f"UPDATE {_ident(table.name)} SET {assignments} WHERE {_ident(key.name)} = {_literal(key_value)};"
    rows = table.rows[:r] + (tuple(new_row),) + table.rows[r + 1:]
    return Draft("UPDATE", description, sql, rows)
