"""Typical mistaken first statements, for demonstrations of recovering from an error.

`candidates(task, kind)` rewrites the task's gold statement (`gold_sql` of a
mutation, `gold_query` of the SELECT family) with one mistake that small models
make on DBBench, of one kind, each a `Mistake` (the statement, its kind, the
name as written and the right name, for text that explains the fix):

- "table": the table's name mangled (spaces to underscores, underscores to
  spaces, a word dropped, its case changed);
- "unquoted": a column whose name holds spaces or punctuation left without
  backquotes (`CAST(Full Name AS UNSIGNED)`);
- "column": a column's name misspelled or shortened (a word or a parenthesis
  dropped, two letters swapped, a letter dropped), never into another column's.

The edit is made on the statement's text at the identifier's tokens (sqlglot's
MySQL tokenizer), so the rest of the statement stays as the gold one wrote it.

A mistake is only useful if the environment rejects it and nothing changes:
`rejection(task, sql)` runs it on a fresh copy of the task's database and gives
the error text only when the statement errors and the table's hash is the one
before; `checked_mistake` draws kinds and statements until one passes (None
when none does), a pure function of the task and the random.Random given.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Sequence

import sqlglot
from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.tokens import TokenType

from cmat_jax.envs.sql import grading
from cmat_jax.envs.sql.database import EpisodeDatabase, Limits, TableImage, build_image
from cmat_jax.envs.sql.dialect import parse_mysql
from cmat_jax.envs.sql.env import SqlEnvConfig
from cmat_jax.envs.sql.mysql_errors import MysqlError
from cmat_jax.envs.sql.tasks import SqlTask

KINDS = ("table", "unquoted", "column")

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Errors that depend on the machine's speed or memory are no typical mistake and would not replay exactly.
_UNSTABLE_ERRORS = ("timeout", "memory")


@dataclasses.dataclass(frozen=True)
class Mistake:
    """A mistaken statement and what is wrong in it: `wrong` is the name as the statement wrote it (its
    first occurrence; for "unquoted", the column left bare), `right` the table's or column's real name."""

    sql: str
    kind: str
    wrong: str
    right: str


def gold_statement(task: SqlTask) -> str | None:
    """The statement the oracle runs for the task, or None when it runs none."""
    return task.gold_sql if task.is_mutation else task.gold_query


def plain_name(name: str) -> bool:
    """Whether MySQL reads `name` as an identifier without backquotes."""
    return _PLAIN_NAME.fullmatch(name) is not None


def _render(name: str, quoted: bool) -> str:
    """A name backquoted when `quoted` or when it needs quotes."""
    return name if not quoted and _PLAIN_NAME.fullmatch(name) else "`" + name.replace("`", "``") + "`"


def _references(sql: str) -> tuple[set[str], set[str]] | None:
    """(table names, column names) the statement refers to, or None when sqlglot cannot parse it."""
    try:
        trees = [t for t in sqlglot.parse(sql, read="mysql") if t is not None]
    except Exception:  # a malformed gold statement (DBBench's own have some) gets no mistake
        return None
    if len(trees) != 1:
        return None
    tables = {t.name for t in trees[0].find_all(exp.Table) if t.name}
    columns = {c.name for c in trees[0].find_all(exp.Column) if c.name}
    for schema in trees[0].find_all(exp.Schema):  # INSERT INTO t (a, b): the column list
        columns.update(e.name for e in schema.expressions if isinstance(e, exp.Identifier))
    return tables, columns


def _name_tokens(sql: str, name: str) -> list[tuple[int, int, bool]]:
    """(start, end, quoted) of every token of `sql` that names `name` (not strings, not function calls)."""
    try:
        tokens = MySQL().tokenize(sql)
    except Exception:
        return []
    spans = []
    for i, token in enumerate(tokens):
        quoted = token.token_type == TokenType.IDENTIFIER
        if token.token_type in (TokenType.STRING, TokenType.NATIONAL_STRING) or token.text != name:
            continue
        calls = i + 1 < len(tokens) and tokens[i + 1].token_type == TokenType.L_PAREN
        if quoted or not calls:
            spans.append((token.start, token.end + 1, quoted))
    return spans


def _replace(sql: str, spans: list[tuple[int, int, bool]], make) -> str:
    """`sql` with each span replaced by make(quoted)."""
    pieces, at = [], 0
    for start, end, quoted in spans:
        pieces.append(sql[at:start])
        pieces.append(make(quoted))
        at = end
    return "".join(pieces) + sql[at:]


def _table_variants(name: str) -> list[str]:
    words = name.replace("_", " ").split()
    variants = []
    if " " in name:
        variants.append(name.replace(" ", "_"))
        variants.append("_".join([words[0]] + [w.lower() for w in words[1:]]))  # Football Stats -> Football_stats
    if "_" in name:
        variants.append(name.replace("_", " "))
    if len(words) > 1:
        joiner = "_" if "_" in name else " "
        variants += [joiner.join(words[:i] + words[i + 1:]) for i in range(len(words))]
    variants += [name.lower(), name.title(), name.upper()]
    return list(dict.fromkeys(v for v in variants if v and v != name))


def _column_variants(name: str) -> list[str]:
    variants = []
    stripped = re.sub(r"\s*\([^)]*\)", "", name).strip()  # "Power (W)" -> "Power"
    if stripped:
        variants.append(stripped)
    variants.append(name.rstrip(".%#?"))  # "No." -> "No"
    words = name.split()
    if len(words) > 1:
        variants += [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]
        variants.append("_".join(words))
    letters = [i for i in range(1, len(name) - 1) if name[i].isalpha() and name[i + 1].isalpha()]
    variants += [name[:i] + name[i + 1] + name[i] + name[i + 2:] for i in letters if name[i] != name[i + 1]]
    variants += [name[:i] + name[i + 1:] for i in letters]
    variants.append(name[:-1] if name.endswith("s") else name + "s")
    return list(dict.fromkeys(v for v in variants if v and v != name))


def candidates(task: SqlTask, kind: str) -> list[Mistake]:
    """Every mistaken statement of one kind for the task, with the names it gets wrong, in a fixed order (empty
    when the kind does not apply)."""
    if kind not in KINDS:
        raise ValueError(f"mistake kind must be one of {', '.join(KINDS)}, found {kind!r}")
    sql = gold_statement(task)
    references = _references(sql) if sql else None
    if references is None:
        return []
    tables, columns = references
    known = {c.lower() for c in task.columns} | {task.table_name.lower()}
    found: list[Mistake] = []
    if kind == "table":
        spans = _name_tokens(sql, task.table_name) if task.table_name in tables else []
        for variant in _table_variants(task.table_name) if spans else []:
            # Written bare when it can be (`Football_stats`): models drop the quotes along with the spaces.
            written = _render(variant, False)
            found.append(Mistake(_replace(sql, spans, lambda quoted, w=written: w), kind, written,
                                 task.table_name))
    for column in sorted(c for c in columns if c.lower() in known - {task.table_name.lower()}):
        spans = _name_tokens(sql, column)
        if not spans:
            continue
        if kind == "unquoted" and not _PLAIN_NAME.fullmatch(column) and all(q for _, _, q in spans):
            found.append(Mistake(_replace(sql, spans, lambda quoted, c=column: c), kind, column, column))
        if kind == "column":
            for variant in _column_variants(column):
                if variant.lower() not in known:
                    found.append(Mistake(_replace(sql, spans, lambda quoted, v=variant: _render(v, quoted)), kind,
                                         _render(variant, spans[0][2]), column))
    unique: dict[str, Mistake] = {}
    for mistake in found:
        if mistake.sql != sql:
            unique.setdefault(mistake.sql, mistake)
    return list(unique.values())


def _table_state(db: EpisodeDatabase) -> str:
    """The table's state as grading reads it (DBBench's hash query's output, or its error)."""
    try:
        return grading.hash_result_text(grading.mysql_table_hash(db.iter_table_rows()))
    except MysqlError as e:
        return e.text


# Demonstrations are played with a statement timeout of at least this. Their scripted statements are quick,
# but the wall-clock limit (2 s by default) also counts a loaded machine's stalls, and a demonstration would
# then show a timeout where its answer follows from a result (seen under a test suite's load).
DEMONSTRATION_TIMEOUT_S = 60.0


def demonstration_limits(limits: Limits) -> Limits:
    """`limits` with a statement timeout of at least DEMONSTRATION_TIMEOUT_S; every other limit as it is."""
    if limits.timeout_s >= DEMONSTRATION_TIMEOUT_S:
        return limits
    return dataclasses.replace(limits, timeout_s=DEMONSTRATION_TIMEOUT_S)


def demonstration_env(env_config: SqlEnvConfig) -> SqlEnvConfig:
    """The environment settings demonstrations are played with: `env_config`'s, with demonstration_limits."""
    return dataclasses.replace(env_config, limits=demonstration_limits(env_config.limits))


def rejection(task: SqlTask, sql: str, limits: Limits = Limits(), image: TableImage | None = None) -> str | None:
    """The error the environment answers `sql` with on the task's fresh database, or None when the statement
    runs, errors only by timeout or memory, or leaves the table changed."""
    db = EpisodeDatabase(image or build_image(task), limits)
    try:
        before = _table_state(db)
        execution = db.run(parse_mysql(sql, max_chars=limits.max_sql_chars))
        rejected = execution.error is not None and execution.error not in _UNSTABLE_ERRORS
        return execution.text if rejected and _table_state(db) == before else None
    finally:
        db.close()


def checked_mistake(task: SqlTask, rng: random.Random, limits: Limits = Limits()) -> Mistake | None:
    """A mistake whose statement `rejection` confirms, drawn kind first (in a random order), then among the
    kind's statements; None when no kind has one."""
    kinds = list(KINDS)
    rng.shuffle(kinds)
    image = None
    for kind in kinds:
        statements = candidates(task, kind)
        rng.shuffle(statements)
        for mistake in statements:
            image = image or build_image(task)
            if rejection(task, mistake.sql, limits, image) is not None:
                return mistake
    return None


def draw_mistakes(tasks: Sequence[SqlTask], fraction: float, draw: str, seed: int,
                  limits: Limits = Limits()) -> dict[str, Mistake]:
    """Task id -> a confirmed mistake, for about the share `fraction` of the tasks: each task's own draw,
    seeded by (`draw`, seed, task id), so a task's choice depends on no other task and two draws with other
    names are independent. Tasks with no gold statement or no confirmed mistake get none."""
    limits = demonstration_limits(limits)
    chosen: dict[str, Mistake] = {}
    for task in tasks:
        rng = random.Random(f"{draw}:{seed}:{task.task_id}")
        if fraction == 0.0 or rng.random() >= fraction or gold_statement(task) is None:
            continue
        mistake = checked_mistake(task, rng, limits)
        if mistake is not None and chosen.setdefault(task.task_id, mistake) != mistake:
            raise ValueError(f"two different training tasks share the id {task.task_id}; task ids must be unique")
    return chosen
