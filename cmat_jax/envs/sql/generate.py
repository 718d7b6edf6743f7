"""A seeded generator of DBBench-style training tasks, checked by the project's own SQL environment.

    tasks = generate_tasks(n=500, seed=0, profile="dbbench")    # list[SqlTask], no files
    write_tasks("train.jsonl", n=500, seed=0, profile="tiny")  # the JSONL that load_tasks reads

Each task is one freshly drawn Wikipedia-style table (generate_tables), one question
or change request in words (generate_text) and its gold SQL in MySQL's dialect. The
label is what the environment gives for that SQL: for the SELECT family the values
in the result the agent would see after running the gold query (`sql.query`); for
INSERT and UPDATE, `answer_md5` is the environment's own table hash after the gold
statement ran, exactly as grading computes it at the end of an episode. Every label
is also computed independently in Python from the task's meaning (filters, numeric
order, sums), and the two must agree. A draft whose answer would be empty, tied (a
ranking with two tops), longer than the result DBBench shows, or a number with more
than two decimals is dropped and redrawn; a disagreement is a bug and raises.

Determinism: task i of (profile, seed) depends only on those three values: the same
call gives the same tasks (and `write_tasks` the same bytes), and a shorter run is a
prefix of a longer one. Task types follow the profile's cycle, shuffled per cycle, so
every type appears in each run of `len(cycle)` tasks. Task ids are
"gen-<profile>-<seed>-<i>".

Profiles:
  dbbench  realistic tables (10-30 rows, 5-8 columns, headers with spaces and
           punctuation), half SELECT family and a quarter each INSERT and UPDATE,
           many phrasings; MIN/MAX/ranking cast text to numbers as MySQL needs.
  tiny     for the CPU demo's 2-layer model: 3-6 rows, 2-4 one-word columns,
           two-digit numbers (equal widths, so text order is number order and the
           gold SQL needs no casts), one or two phrasings per kind, 78% SELECT family,
           prompts of about 40-60 tokens (bundled tokenizer); one operation solves
           every task.
  lookup   the tiny tables with only lookups by key ('other') and counts by
           category ('counting'): the tasks of the embedded CMAT demo
           (configs/cmat_tiny.py), which a 2-layer model learns within minutes.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import random
import re
from typing import Sequence

from cmat_jax.envs.sql import generate_tables as tables_mod
from cmat_jax.envs.sql import generate_text as text
from cmat_jax.envs.sql import grading, mysql_text
from cmat_jax.envs.sql.checker import Checker
from cmat_jax.envs.sql.database import TRUNCATION_MARK, EpisodeDatabase, build_image
from cmat_jax.envs.sql.dialect import parse_mysql
from cmat_jax.envs.sql.generate_tables import Column, Domain, Table
from cmat_jax.envs.sql.tasks import SELECT_TYPES, SqlTask, parse_task
from cmat_jax.fileio import atomic_write

GENERATED_TYPES = SELECT_TYPES + ("INSERT", "UPDATE")  # every type DBBench has (it has no DELETE tasks)
_MAX_ATTEMPTS = 200  # drafts per task before giving up (a profile that needs more is broken)
_MAX_DECIMALS = 2  # numeric answers with more digits are ambiguous to state


class GeneratorError(RuntimeError):
    """The environment disagreed with the generator: a bug in one of them, never a property of the data."""


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    domains: tuple[Domain, ...]
    rows: tuple[int, int]  # rows per table, inclusive
    columns: tuple[int, int] | None  # headers per table (None: each domain's own, some optional ones left out)
    cycle: tuple[str, ...]  # task types of one cycle; each cycle holds each entry once, in a seeded order
    style: str  # generate_text style
    max_answers: int  # most values a SELECT-family answer may list
    max_conditions: int
    lowercase: float  # share of SELECT-family questions written in lower case, as WikiTQ's are
    snake_case: float  # share of table names written like identifiers (race_results)
    numeric_cast: bool  # MIN/MAX and ORDER BY cast text to numbers (tiny tables need not: equal widths)
    insert_columns: int | None = None  # fewer headers for INSERT tasks (their description lists every value)


PROFILES = {
    "dbbench": Profile(
        name="dbbench", domains=tables_mod.DBBENCH_DOMAINS, rows=(10, 30), columns=None,
        cycle=("other", "other", "counting", "counting", "comparison", "comparison", "ranking", "ranking",
               "aggregation-SUM", "aggregation-MIN", "aggregation-MAX", "aggregation-AVG") + ("INSERT",) * 6
        + ("UPDATE",) * 6,
        style="dbbench", max_answers=8, max_conditions=2, lowercase=0.25, snake_case=0.2, numeric_cast=True,
    ),
    "tiny": Profile(
        name="tiny", domains=tables_mod.TINY_DOMAINS, rows=(3, 6), columns=(2, 4),
        cycle=("other",) * 3 + ("counting",) * 3 + ("comparison",) * 2 + ("ranking",) * 2
        + ("aggregation-SUM", "aggregation-MIN", "aggregation-MAX", "aggregation-AVG") + ("INSERT",) * 2
        + ("UPDATE",) * 2,
        style="tiny", max_answers=3, max_conditions=1, lowercase=0.0, snake_case=0.0, numeric_cast=False,
        insert_columns=3,
    ),
    # The CPU demo's tasks (configs/cmat_tiny.py): tiny tables, and only the two question kinds a 2-layer,
    # d=64 model learns within minutes (a lookup by key, a count by category).
    "lookup": Profile(
        name="lookup", domains=tables_mod.TINY_DOMAINS, rows=(3, 6), columns=(2, 4),
        cycle=("other", "counting"), style="tiny", max_answers=3, max_conditions=1, lowercase=0.0, snake_case=0.0,
        numeric_cast=False, insert_columns=3,
    ),
}  # fmt: skip

# Types whose question needs a number column.
_NUMERIC_TYPES = ("comparison", "ranking", "aggregation-SUM", "aggregation-MIN", "aggregation-MAX",
                  "aggregation-AVG")
# MySQL 8 reserved words that appear as headers (they must be quoted); other names are checked by executing.
_RESERVED = frozenset({"RANK", "RANGE", "USE", "ROW", "ROWS", "GROUP", "ORDER", "KEY", "INDEX", "DIV", "MOD",
                       "TABLE", "SELECT", "WHERE", "FROM", "LIMIT", "OPTION", "CONDITION", "CHANGE", "MATCH"})
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def task_id(profile: str, seed: int, index: int) -> str:
    return f"gen-{profile}-{seed}-{index}"


# -- SQL text -------------------------------------------------------------------------------------------


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


def _distinct(values: Sequence[str]) -> list[str]:
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


def _draft_other(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
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
    answers = _distinct([r[table.index(target)] for r in _filtered(table, conds)])
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


def _draft_comparison(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
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
    answers = _distinct([r[table.index(target)] for r in _filtered(table, conds)])
    if not 1 <= len(answers) <= profile.max_answers:
        return None
    question = _question(rng, profile, "comparison", target=target.name, conds=[c.words() for c in conds],
                         rows=table.row_noun)
    sql = f"SELECT {_ident(target.name)} FROM {_ident(table.name)}{_where(conds)};"
    return Draft("comparison", question, sql, tuple(answers))


def _draft_counting(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
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


def _draft_ranking(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
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


def _draft_aggregate(agg: str):
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


def _draft_insert(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
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


def _draft_update(rng: random.Random, table: Table, profile: Profile) -> Draft | None:
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


_DRAFTERS = {
    "other": _draft_other,
    "counting": _draft_counting,
    "comparison": _draft_comparison,
    "ranking": _draft_ranking,
    "aggregation-SUM": _draft_aggregate("SUM"),
    "aggregation-MIN": _draft_aggregate("MIN"),
    "aggregation-MAX": _draft_aggregate("MAX"),
    "aggregation-AVG": _draft_aggregate("AVG"),
    "INSERT": _draft_insert,
    "UPDATE": _draft_update,
}


# -- executing the gold SQL in the environment -------------------------------------------------------------


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


def _execute(draft: Draft, table: Table, where: str) -> dict | None:
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
    label = _distinct([_label_text(r[0]) for r in rows])
    if not label:
        raise GeneratorError(f"{where}: {draft.sql!r} found no rows, the generator expected {list(draft.expected)}")
    if draft.task_type.startswith("aggregation-") and (_decimals(label[0]) > _MAX_DECIMALS or "e" in label[0]):
        return None  # e.g. an average of 12.333333333333334: the answer's precision is a guess
    if not _same_answer(label, draft.expected):
        raise GeneratorError(f"{where}: {draft.sql!r} gave {label} in the environment, the generator expected "
                             f"{list(draft.expected)}")
    return _record(draft, table, label, None)


# -- the public API ------------------------------------------------------------------------------------------


def _profile(profile: str) -> Profile:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, found {profile!r}")
    return PROFILES[profile]


def _check_args(n: int, seed: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of tasks), found {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, found {seed!r}")


def task_type_at(profile: Profile, seed: int, index: int) -> str:
    """Task i's type: position i % len(cycle) of cycle i // len(cycle), each cycle shuffled by its own seed."""
    cycle = list(profile.cycle)
    random.Random(f"gen-{profile.name}-{seed}-cycle-{index // len(cycle)}").shuffle(cycle)
    return cycle[index % len(cycle)]


def _draw_table(rng: random.Random, profile: Profile, task_type: str) -> Table:
    domain = rng.choice(profile.domains)
    n_rows = rng.randint(*profile.rows)
    columns = None
    if profile.columns is not None:
        low, high = profile.columns
        if task_type == "INSERT" and profile.insert_columns is not None:
            high = min(high, profile.insert_columns)
        columns = rng.randint(max(low, 3) if task_type in _NUMERIC_TYPES else low, high)
    return tables_mod.make_table(rng, domain, n_rows, columns=columns, snake_case=profile.snake_case)


def generate_record(profile: str, seed: int, index: int) -> dict:
    """Task `index` of (profile, seed) as a DBBench JSON record."""
    spec = _profile(profile)
    where = task_id(profile, seed, index)
    task_type = task_type_at(spec, seed, index)
    rng = random.Random(where)  # string seeds hash with SHA-512: stable across runs and platforms
    for _ in range(_MAX_ATTEMPTS):
        table = _draw_table(rng, spec, task_type)
        draft = _DRAFTERS[task_type](rng, table, spec)
        if draft is not None:
            record = _execute(draft, table, where)
            if record is not None:
                return record
    raise GeneratorError(f"{where}: no valid {task_type} task in {_MAX_ATTEMPTS} draws; the profile cannot "
                         f"make this type")


def generate_records(n: int, seed: int, profile: str = "dbbench") -> list[dict]:
    _check_args(n, seed)
    _profile(profile)
    return [generate_record(profile, seed, i) for i in range(n)]


def generate_tasks(n: int, seed: int, profile: str = "dbbench") -> list[SqlTask]:
    """`n` tasks, ids "gen-<profile>-<seed>-<i>", read exactly as load_tasks reads the written file."""
    records = generate_records(n, seed, profile)
    return [parse_task(r, task_id(profile, seed, i)) for i, r in enumerate(records)]


def write_tasks(path: str | os.PathLike, n: int, seed: int, profile: str = "dbbench") -> int:
    """Writes `n` tasks as DBBench JSONL (UTF-8, one record per line) and returns n; atomic."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):  # before generating, so a bad path costs nothing
        raise FileNotFoundError(f"output directory {directory} does not exist; create it first")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; pass the path of the .jsonl file to write, e.g. "
                                f"{os.path.join(path, 'tasks.jsonl')}")
    records = generate_records(n, seed, profile)
    with atomic_write(path, "wb") as f:  # bytes: "\n" line ends on every platform
        for record in records:
            f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    return len(records)
