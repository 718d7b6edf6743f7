"""A seeded corpus of adversarial episodes for the SQL environment, and a runner that checks the sandbox's promises.

`corpus(seed)` builds the same cases for the same seed: every attack vector
docs/sql_env.md's safety model names (native pointers, filesystem and schema
access, statements that outrun the timeout or fill memory, tables grown past
their cap, oversized observations, every function of the running SQLite build),
plus thousands of random statements from a small MySQL grammar, token soup and
mutations of the DBBench gold SQL. A case is one episode: its statements, then
an Answer step (graded, so the final-state hash runs after every mutation).

`run(cases)` drives SqlEnv exactly as training does and reports: exceptions that
escaped `step`/`reset`; the slowest steps (Answer steps included) and those over
timeout + 0.5 s; the process's peak RSS; observations over their limit;
statements that called a function outside the allow-list and got rows back;
task tables changed (a fresh episode's final-state hash differs from the one
taken before the run); files created or changed in the working directory; and
episode databases failing SQLite's integrity check.

    python tools/fuzz_sql.py                 # the full corpus, default limits
    python tools/fuzz_sql.py --sample 300    # what the test suite runs
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import random
import re
import resource
import sqlite3
import time
import traceback
from typing import Iterable, Iterator

from cmat_jax.envs.sql import allowlist, grading
from cmat_jax.envs.sql.database import EpisodeDatabase, Limits, build_image
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS, SqlTask, load_tasks, parse_task

SLACK_S = 0.5  # a step may take the statement timeout plus this
ANSWER = "Action: Answer\nFinal Answer: []"


def operation_reply(sql: str) -> str:
    """A reply that runs `sql`, in DBBench's format (docs/sql_env.md, Protocol)."""
    return f"Action: Operation\n```sql\n{sql}\n```"


@dataclasses.dataclass(frozen=True)
class Case:
    """One episode of the corpus."""

    family: str  # which generator made it
    task: str  # key into the corpus's tasks
    statements: tuple[str, ...]
    answer: str = ANSWER  # the last reply
    checker: str = "report"  # SqlEnvConfig.checker
    calls_denied_function: bool = False  # the statements call a function outside the allow-list


# -- tasks ----------------------------------------------------------------------------------------


def _task(name: str, columns: list[str], rows: list[list], mutation: bool) -> SqlTask:
    record = {
        "description": "fuzz", "add_description": f"The name of this table is {name}.",
        "type": ["UPDATE" if mutation else "other"], "label": ["UPDATE t SET x = 1"] if mutation else ["x"],
        "table": {"table_name": name, "table_info": {"columns": [{"name": c} for c in columns], "rows": rows}},
    }  # fmt: skip
    if mutation:
        record["answer_md5"] = "[(None,)]"
    return parse_task(record, f"fuzz:{name}")


def fuzz_tasks() -> dict[str, SqlTask]:
    """The tables the corpus plays on: the issue's 76-row table, Unicode data, a wide table, the dev tasks."""
    words = ["Émile", "emile", "EMILE", "Zoë", "zoe", "Bob", "ﷺ", "Straße", "ǅ", "İstanbul", "a_b", "a%b", "",
             "x" * 200, "١٢٣", "😀", "NULL", "0", "-1", "1e308", "7.400", "  pad  "]
    tasks = {
        "T": _task("T", ["c"], [[f"r{i}"] for i in range(76)], mutation=True),
        "T_read": _task("T", ["c"], [[f"r{i}"] for i in range(76)], mutation=False),
        "U": _task("U", ["Name", "Score", "City"],
                   [[w, str(i * 7 % 50), words[(i * 5) % len(words)]] for i, w in enumerate(words * 3)], mutation=True),
        "W": _task("W", [f"col{i}" for i in range(12)],
                   [[f"v{r}_{i}" if (r + i) % 7 else None for i in range(12)] for r in range(40)], mutation=True),
    }  # fmt: skip
    for task in load_tasks(DBBENCH_DEV_TASKS):
        tasks[task.task_id] = task
    return tasks


# -- building blocks ------------------------------------------------------------------------------


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _string(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.5:
        text = rng.choice(["a", "Paris", "émile", "%", "_", "\\", "'", '"', "ﷺ", "😀", "", " ", "x y", "1", "1e5"])
    elif choice < 0.8:
        text = "".join(rng.choice("abcXYZ019 _%'\\éÆß") for _ in range(rng.randint(0, 40)))
    else:
        text = "".join(chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FFF), rng.randint(0x3000, 0xFFFD),
                                       rng.randint(0x10000, 0x1FFFF)])) for _ in range(rng.randint(1, 30)))
    text = "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF)
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _number(rng: random.Random) -> str:
    return rng.choice(["0", "1", "-1", "2.5", "7.400", "1e308", "-1e308", "9223372036854775807", "-9223372036854775808",
                       "99999999999999999999", "0.0000001", str(rng.randint(-1000, 1000)), str(rng.randint(0, 100000))])


def _literal(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.45:
        return _string(rng)
    if choice < 0.85:
        return _number(rng)
    if choice < 0.93:
        return "NULL"
    return "x'" + "".join(rng.choice("0123456789abcdef") for _ in range(2 * rng.randint(0, 8))) + "'"


_FUNCTIONS = [  # MySQL functions with their argument counts
    ("UPPER", 1), ("LOWER", 1), ("LENGTH", 1), ("CHAR_LENGTH", 1), ("CONCAT", 2), ("CONCAT", 3), ("CONCAT_WS", 3),
    ("SUBSTRING", 2), ("SUBSTRING", 3), ("SUBSTRING_INDEX", 3), ("LEFT", 2), ("RIGHT", 2), ("LPAD", 3), ("RPAD", 3),
    ("REPEAT", 2), ("REPLACE", 3), ("INSTR", 2), ("LOCATE", 2), ("LOCATE", 3), ("TRIM", 1), ("LTRIM", 1),
    ("ROUND", 1), ("ROUND", 2), ("ABS", 1), ("COALESCE", 2), ("IFNULL", 2), ("IF", 3), ("NULLIF", 2), ("HEX", 1),
    ("SPACE", 1), ("MOD", 2), ("FLOOR", 1), ("CEIL", 1), ("SIGN", 1), ("SQRT", 1), ("POW", 2), ("LN", 1),
    ("SOUNDEX", 1), ("REVERSE", 1), ("ASCII", 1), ("UNHEX", 1), ("CHAR", 1), ("DATE", 1), ("YEAR", 1), ("NOW", 0),
]  # fmt: skip
_AGGREGATES = ["COUNT", "SUM", "AVG", "MIN", "MAX", "GROUP_CONCAT"]
_OPERATORS = ["+", "-", "*", "/", "%", "DIV", "=", "<>", "<", ">=", "<=>", "LIKE", "NOT LIKE", "AND", "OR", "||",
              "XOR", "REGEXP"]


class _Grammar:
    """Random MySQL over one task's table: mostly valid, often odd."""

    def __init__(self, rng: random.Random, task: SqlTask):
        self.rng = rng
        self.table = _q(task.table_name)
        self.columns = [_q(c) for c in task.columns] or ["`x`"]

    def column(self, alias: str = "") -> str:
        name = self.rng.choice(self.columns)
        return f"{alias}.{name}" if alias and self.rng.random() < 0.5 else name

    def expr(self, depth: int = 2, alias: str = "") -> str:
        rng = self.rng
        choice = rng.random()
        if depth <= 0 or choice < 0.3:
            return self.column(alias) if rng.random() < 0.6 else _literal(rng)
        if choice < 0.6:
            name, arity = rng.choice(_FUNCTIONS)
            args = [self.expr(depth - 1, alias) for _ in range(arity)]
            if name in ("REPEAT", "LPAD", "RPAD", "SPACE") and rng.random() < 0.3:
                args[-1 if name != "LPAD" and name != "RPAD" else 1] = str(rng.choice([1000, 30000, 70000, 10**9]))
            return f"{name}({', '.join(args)})"
        if choice < 0.8:
            return f"({self.expr(depth - 1, alias)} {rng.choice(_OPERATORS)} {self.expr(depth - 1, alias)})"
        if choice < 0.9:
            return (f"CASE WHEN {self.expr(depth - 1, alias)} THEN {self.expr(depth - 1, alias)} "
                    f"ELSE {self.expr(depth - 1, alias)} END")
        if choice < 0.95:
            return f"CAST({self.expr(depth - 1, alias)} AS {rng.choice(['SIGNED', 'CHAR', 'DECIMAL(10,2)', 'DOUBLE'])})"
        return f"(SELECT {rng.choice(_AGGREGATES)}({self.column()}) FROM {self.table})"

    def select(self, depth: int = 2) -> str:
        rng = self.rng
        joins = rng.choice([0, 0, 0, 1, 1, 2])
        aliases = ["a", "b", "c"][: joins + 1]
        source = ", ".join(f"{self.table} {alias}" for alias in aliases)
        if rng.random() < 0.3 and joins:
            source = f"{self.table} a JOIN {self.table} b ON {self.expr(1, 'a')} = {self.expr(1, 'b')}"
        aggregate = rng.random() < 0.3
        items = []
        for _ in range(rng.randint(1, 3)):
            if aggregate and rng.random() < 0.6:
                items.append(f"{rng.choice(_AGGREGATES)}({'DISTINCT ' if rng.random() < 0.2 else ''}{self.expr(1, 'a')})")
            else:
                items.append(self.expr(depth, "a") + (f" AS x{len(items)}" if rng.random() < 0.3 else ""))
        if rng.random() < 0.1:
            items = ["*"]
        sql = f"SELECT {'DISTINCT ' if rng.random() < 0.15 else ''}{', '.join(items)} FROM {source}"
        if rng.random() < 0.5:
            sql += f" WHERE {self.expr(depth, 'a')}"
        if aggregate and rng.random() < 0.5:
            sql += f" GROUP BY {rng.choice([self.column('a'), '1', self.expr(1, 'a')])}"
            if rng.random() < 0.3:
                sql += f" HAVING COUNT(*) > {rng.randint(0, 3)}"
        if rng.random() < 0.4:
            terms = [rng.choice([self.column("a"), "1", self.expr(1, "a"), "RAND()"]) for _ in range(rng.randint(1, 2))]
            sql += " ORDER BY " + ", ".join(f"{t}{rng.choice(['', ' DESC', ' ASC'])}" for t in terms)
        if rng.random() < 0.4:
            sql += f" LIMIT {rng.choice([0, 1, 5, 100, 10**9])}"
        return sql

    def statement(self, writable: bool) -> str:
        rng = self.rng
        choice = rng.random()
        if not writable or choice < 0.55:
            if rng.random() < 0.1:
                return f"{self.select(1)} UNION {'ALL ' if rng.random() < 0.5 else ''}{self.select(1)}" + (
                    " ORDER BY 1" if rng.random() < 0.5 else "")
            if rng.random() < 0.1:
                return f"WITH s AS ({self.select(1)}) SELECT * FROM s"
            return self.select()
        if choice < 0.7:
            rows = ", ".join("(" + ", ".join(self.expr(1) for _ in self.columns) + ")" for _ in range(rng.randint(1, 3)))
            return f"INSERT INTO {self.table} VALUES {rows}"
        if choice < 0.75:
            return f"INSERT INTO {self.table} SELECT * FROM {self.table} WHERE {self.expr(1)}"
        if choice < 0.9:
            return f"UPDATE {self.table} SET {self.column()} = {self.expr(2)} WHERE {self.expr(1)}"
        return f"DELETE FROM {self.table} WHERE {self.expr(2)}"


_SOUP = [
    "SELECT", "INSERT", "INTO", "UPDATE", "DELETE", "FROM", "WHERE", "VALUES", "SET", "ORDER BY", "GROUP BY",
    "HAVING", "LIMIT", "JOIN", "ON", "UNION", "WITH RECURSIVE", "AS", "AND", "OR", "NOT", "LIKE", "IN", "BETWEEN",
    "IS NULL", "DISTINCT", "COUNT(*)", "SUM(", "MAX(", "ATTACH", "PRAGMA", "DROP", "CREATE", "TABLE", "(", ")",
    ";", "=", "<", ">", "+", "-", "/", "%", "'a'", "'%e%'", "\"q\"", "1", "0", "-1", "2.5", "1e308", "NULL", "`",
    "'", "\\", "x'ff'", "*", ",", "COLLATE", "utf8mb4_bin", "CAST(", "AS CHAR", "REPEAT('ﷺ', 20000)", "fts3_tokenizer(",
    "load_extension(", "sqlite_master", "pragma_table_info('T')", "OVER (", "PARTITION BY", "ROW_NUMBER()",
]  # fmt: skip


def _soup(rng: random.Random, task: SqlTask) -> str:
    words = _SOUP + [_q(task.table_name), _q(task.table_name)] + [_q(c) for c in task.columns]
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))


def _mutate(rng: random.Random, sql: str) -> str:
    tokens = sql.split(" ")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(tokens))
        op = rng.random()
        if op < 0.25 and len(tokens) > 1:
            del tokens[i]
        elif op < 0.5:
            tokens.insert(i, rng.choice(_SOUP))
        elif op < 0.7:
            tokens[i] = tokens[i][::-1]
        elif op < 0.85:
            tokens.insert(i, tokens[i])
        else:
            tokens[i] = _literal(rng)
    return " ".join(tokens)


# -- the corpus -----------------------------------------------------------------------------------


def _build_functions() -> list[tuple[str, int]]:
    """(name, argument count) of every function the running SQLite build offers, and known names it may lack."""
    conn = sqlite3.connect(":memory:")
    try:
        found = {(name, narg) for name, narg in conn.execute("SELECT name, narg FROM pragma_function_list")}
    finally:
        conn.close()
    for name in ("fts3_tokenizer", "rtreenode", "rtreedepth", "rtreecheck", "load_extension", "printf", "format",
                 "sqlite_version", "sqlite_source_id", "sqlite_offset", "geopoly_blob", "json_each", "readfile",
                 "writefile", "edit", "fts5_source_id", "sqlite_dbpage", "zipfile", "eval", "shell_add_schema"):
        found.add((name, 1))
    return sorted(found)


def _issue_vectors(tmp: str) -> Iterator[Case]:
    """The reproducers of the attack report, verbatim and at the value limit."""
    ptr = "x'4141414141414141'"
    yield Case("issue", "T", ("SELECT fts3_tokenizer('simple')",))
    yield Case("issue", "T", (f"SELECT fts3_tokenizer('simple', {ptr})", "SELECT fts3_tokenizer('simple')"))
    yield Case("issue", "T", ("SELECT rtreenode(2, x'000100000000000000000000000000000000000000')",))
    yield Case("issue", "T", ("SELECT rtreedepth(x'0001')", "SELECT rtreecheck('T')"))
    yield Case("issue", "T", (f"SELECT load_extension('{tmp}/x.so')",))
    for n in (30000, 100000, 21000, 10000):
        yield Case("issue", "T", (f"SELECT COUNT(*) FROM T a, T b WHERE CONCAT(a.c, b.c) = REPEAT('ﷺ', {n})",))
    for n in (15000, 3000, 1500, 500):
        yield Case("issue", "T", (f"SELECT LENGTH(x) FROM (SELECT CONCAT(REPEAT('ﷺ', {n}), c) AS x FROM T) s ORDER BY x",))
        yield Case("issue", "T", (f"SELECT LENGTH(x) FROM (SELECT CONCAT(REPEAT('ﷺ', {n}), c) AS x FROM T) s GROUP BY x",))
    for a, b in ((999000, 499000), (65000, 32000), (60000, 30000)):
        yield Case("issue", "T", (f"SELECT INSTR(REPEAT('a', {a}), CONCAT(REPEAT('a', {b}), 'b'))",
                                  f"SELECT LOCATE(CONCAT(REPEAT('a', {b}), 'b'), REPEAT('a', {a}))",
                                  f"SELECT REPLACE(REPEAT('a', {a}), CONCAT(REPEAT('a', {b}), 'b'), 'x')"))
    grow = "INSERT INTO T (c) SELECT NULL FROM T a, T b, T c, T d LIMIT 5000000"
    yield Case("issue", "T", (grow, grow, grow, grow, "SELECT COUNT(*) FROM T"))
    yield Case("issue", "T", ("INSERT INTO T (c) SELECT NULL FROM T a, T b, T c LIMIT 400000",) * 3)
    zeroblobs = ", ".join(f"zeroblob({999999 - i})" for i in range(240))
    yield Case("issue", "T", (f"SELECT {zeroblobs}",))
    yield Case("issue", "T", ("SELECT " + ", ".join(f"zeroblob({65536 - i})" for i in range(240)),))
    yield Case("issue", "T", ("SELECT " + ", ".join("zeroblob(65536)" for _ in range(1200)),))
    long_name = "a" * 19000
    yield Case("issue", "T", (f"SELECT `{long_name}` FROM T",), checker="enforce")
    yield Case("issue", "T", (f"SELECT * FROM `{long_name[:9000]}`", f"{long_name[:9000]} x"), checker="enforce")
    yield Case("issue", "T", ("SELECT * FROM pragma_table_info('x')", "SELECT * FROM pragma_table_info('T')"))
    yield Case("issue", "T", ("SELECT * FROM pragma_table_info('T')",), checker="enforce")


def _escapes(tmp: str) -> Iterator[Case]:
    new_db, existing = f"{tmp}/attached.db", f"{tmp}/existing.db"
    statements = [
        f"ATTACH DATABASE '{new_db}' AS evil", f"ATTACH '{existing}' AS e", f"ATTACH 'file:{new_db}?mode=rwc' AS x",
        "ATTACH 'relative.db' AS evil", "DETACH evil", f"VACUUM INTO '{tmp}/copy.db'", "VACUUM",
        "PRAGMA writable_schema = ON", "PRAGMA writable_schema=1; UPDATE sqlite_master SET sql = 'x'",
        f"PRAGMA temp_store_directory = '{tmp}'", "PRAGMA journal_mode = WAL", "PRAGMA hard_heap_limit = 0",
        "PRAGMA max_page_count = 2147483646", "CREATE TABLE copy AS SELECT * FROM T", "CREATE TEMP TABLE s (a)",
        "CREATE VIEW v AS SELECT * FROM T", "CREATE TRIGGER t AFTER INSERT ON T BEGIN DELETE FROM T; END",
        "CREATE VIRTUAL TABLE v USING fts3(x)", "CREATE VIRTUAL TABLE v USING rtree(id, a, b)", "DROP TABLE T",
        "ALTER TABLE T RENAME TO U", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT a", "RELEASE a",
        "SELECT * FROM T; DROP TABLE T", f"SELECT 1; ATTACH '{new_db}' AS evil", "SELECT * FROM sqlite_master",
        "SELECT * FROM sqlite_schema", "SELECT * FROM sqlite_temp_master", "SELECT * FROM pragma_database_list",
        "SELECT * FROM json_each('[1,2]')", "SELECT * FROM generate_series(1, 10)", "SELECT * FROM dbstat",
        "SELECT * FROM sqlite_dbpage", "SELECT * FROM T, pragma_function_list", f"SELECT * INTO OUTFILE '{tmp}/o' FROM T",
        f"SELECT * FROM T INTO DUMPFILE '{tmp}/d'", f"LOAD DATA INFILE '{existing}' INTO TABLE T",
        "SELECT LOAD_FILE('/etc/passwd')", "SELECT sqlite_version(), sqlite_source_id()", "SELECT changes()",
        "SELECT last_insert_rowid()", "SELECT sqlite_compileoption_get(0)", "SELECT printf('%.*c', 1000000000, 'x')",
        "SELECT format('%s', 1)", "SELECT json('{}')", "SELECT '{\"a\":1}' -> '$.a'", "SELECT match('a', 'b')",
        "SELECT c FROM T WHERE c MATCH 'x'", "SELECT c FROM T WHERE c GLOB '*'", "SELECT highlight(T, 0, '', '')",
        "REPLACE INTO T VALUES ('x')", "INSERT INTO T VALUES ('x') ON DUPLICATE KEY UPDATE c = 'y'",
        "SELECT \x00", "SELECT '\ud800'", "```", "", "SHOW TABLES", "DESCRIBE T", "SELECT * FROM information_schema.tables",
        "SELECT SLEEP(100)", "SELECT BENCHMARK(100000000, MD5('a'))", "USE mysql", "SET GLOBAL x = 1", "KILL 1",
        "GRANT ALL ON *.* TO root", "SELECT * FROM mysql.user", "HANDLER T OPEN", "LOCK TABLES T WRITE",
    ]  # fmt: skip
    for sql in statements:
        yield Case("escape", "T", (sql,))
        yield Case("escape", "T_read", (sql,), checker="enforce")


def _functions(rng: random.Random) -> Iterator[Case]:
    """Every function of this SQLite build (and known ones it may lack), called through the sandbox."""
    args_pool = ["'simple'", "x'4141414141414141'", "c", "NULL", "1", "-1", "2.5", "REPEAT('ﷺ', 20000)",
                 "zeroblob(65536)", "'%s%s%s%n'", "'{\"a\":[1,2]}'", "'$.a'", "100000000"]
    for name, narg in _build_functions():
        for variant in range(3):
            count = narg if narg >= 0 else rng.randint(0, 4)
            args = ", ".join(rng.choice(args_pool) for _ in range(count))
            if name in ("->", "->>"):
                sql = f"SELECT '{{\"a\":1}}' {name} '$.a'"
            else:
                sql = f"SELECT {_q(name)}({args}) FROM T" if variant else f"SELECT {_q(name)}({args})"
            yield Case("function", "T", (sql,))


def _heavy_time(rng: random.Random) -> Iterator[Case]:
    """Statements that would run for seconds to hours: joins, sorts in one instruction, slow callbacks."""
    cross = "FROM T a, T b, T c, T d"
    for n in (100_000, 300_000, 600_000, 1_000_000, 2_000_000, 5_000_000):
        sub = f"(SELECT CONCAT(a.c, b.c, c.c, d.c) AS x, a.c AS y {cross} LIMIT {n}) s"
        for sql in (f"SELECT COUNT(*) FROM (SELECT x FROM {sub} GROUP BY x COLLATE utf8mb4_bin) t",
                    f"SELECT COUNT(*) FROM (SELECT x FROM {sub} GROUP BY x) t",
                    f"SELECT x FROM {sub} ORDER BY x COLLATE utf8mb4_bin",
                    f"SELECT x FROM {sub} ORDER BY x DESC",
                    f"SELECT x FROM {sub} UNION SELECT y FROM {sub} ORDER BY 1",
                    f"SELECT COUNT(*) FROM (SELECT ROW_NUMBER() OVER (PARTITION BY x ORDER BY y) FROM {sub}) t",
                    f"SELECT COUNT(DISTINCT x) FROM {sub}",
                    f"SELECT y, COUNT(*) FROM {sub} GROUP BY y ORDER BY 2 DESC",
                    f"SELECT COUNT(*) FROM {sub} WHERE x IN (SELECT y FROM {sub})"):
            yield Case("time", "T", (sql,))
    never = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r)"
    for sql in (f"{never} SELECT COUNT(*) FROM r", f"{never} SELECT i FROM r ORDER BY i DESC",
                f"{never} SELECT i FROM r GROUP BY i % 7", f"{never} SELECT MAX(i) FROM r",
                f"SELECT COUNT(*) {cross}, T e", f"SELECT a.c {cross} ORDER BY a.c || b.c",
                f"SELECT DISTINCT CONCAT(a.c, b.c, c.c, d.c) {cross}", f"SELECT COUNT(*) {cross} WHERE a.c LIKE '%r1%'",
                f"SELECT a.c, COUNT(*) {cross} GROUP BY a.c ORDER BY 2",
                f"SELECT GROUP_CONCAT(a.c) {cross}", f"SELECT SUM(LENGTH(REPEAT(a.c, 1000))) {cross}"):
        yield Case("time", "T", (sql,))
    for n in (1000, 5000, 20000, 21845):
        for sql in (f"SELECT COUNT(*) FROM T a WHERE a.c = REPEAT('ﷺ', {n})",
                    f"SELECT COUNT(*) FROM T a, T b WHERE CONCAT(a.c, REPEAT('ﷺ', {n})) = CONCAT(b.c, REPEAT('ﷺ', {n}))",
                    f"SELECT COUNT(*) FROM T a, T b WHERE CONCAT(a.c, REPEAT('ﷺ', {n})) LIKE CONCAT(b.c, '%')",
                    f"SELECT MIN(CONCAT(REPEAT('ﷺ', {n}), c) COLLATE utf8mb4_0900_ai_ci) FROM T",
                    f"SELECT COUNT(DISTINCT CONCAT(REPEAT('㍿', {n}), a.c)) FROM T a, T b",
                    f"SELECT c FROM T ORDER BY CONCAT(REPEAT('Æ', {n}), c)"):
            yield Case("time", "T", (sql,))
    for m in (1000, 10000, 32000):
        for sql in (f"SELECT COUNT(*) FROM T a, T b WHERE INSTR(REPEAT(a.c, {m} / 3), CONCAT(REPEAT('r', {m // 2}), 'b'))",
                    f"SELECT COUNT(*) FROM T a, T b WHERE LOCATE(REPEAT('r', {m // 2}), REPEAT('r', {m})) > 0",
                    f"SELECT COUNT(*) FROM T a, T b WHERE LENGTH(REPLACE(REPEAT('ab', {m}), 'ab', 'b')) > 0",
                    f"SELECT COUNT(*) FROM T a, T b WHERE REPEAT('a', {m}) LIKE CONCAT('%', REPEAT('a', 999))",
                    f"SELECT COUNT(*) FROM T a, T b WHERE SUBSTRING_INDEX(REPEAT('a,', {m}), ',', -{m}) = a.c"):
            yield Case("time", "T", (sql,))
    long = {  # statements near the 20,000-character limit: parsing and translating them takes time too
        "plus": "SELECT " + " + ".join(["1"] * 6600), "concat": "SELECT CONCAT(" + ", ".join(["c"] * 6600) + ") FROM T",
        "in": "SELECT c FROM T WHERE c IN (" + ",".join(str(i) for i in range(4000)) + ")",
        "parens": "SELECT " + "(" * 9000 + "1" + ")" * 9000, "funcs": "SELECT " + "LOWER(" * 3000 + "c" + ")" * 3000,
        "case": "SELECT " + "CASE WHEN 1 THEN " * 1000 + "1" + " END" * 1000,
        "union": " UNION ".join(["SELECT c FROM T"] * 1300), "joins": "SELECT 1 FROM " + ", ".join(
            f"T t{i}" for i in range(1800)), "and": "SELECT c FROM T WHERE " + " AND ".join(["c = 'a'"] * 1800),
        "subq": "SELECT " + "(SELECT " * 1500 + "1" + ")" * 1500, "values": "INSERT INTO T VALUES " + ", ".join(
            ["('x')"] * 2800), "wide": "INSERT INTO T VALUES (" + ", ".join(["1"] * 6000) + ")",
        "cte": "WITH " + ", ".join(f"c{i} AS (SELECT {i})" for i in range(1000)) + " SELECT 1",
        "order": "SELECT c FROM T ORDER BY " + ", ".join(["c"] * 6000),
        "group": "SELECT c FROM T GROUP BY " + ", ".join(["c"] * 6000), "not": "SELECT " + "NOT " * 4900 + "1",
        "left": "SELECT " + ", ".join(["LEFT(c, 1)"] * 2000) + " FROM T",
        "like": "SELECT c FROM T WHERE " + " OR ".join(["c LIKE '%a%b%'"] * 1300),
    }  # fmt: skip
    for sql in long.values():
        yield Case("time", "T", (sql[:20_000],))
    for _ in range(60):
        width = rng.randint(3, 5)
        tables = ", ".join(f"T t{i}" for i in range(width))
        func = rng.choice(["UPPER", "LOWER", "REVERSE", "HEX", "TRIM", "LENGTH"])
        tail = rng.choice(["ORDER BY 1", "GROUP BY 1", "ORDER BY RAND()", "", "LIMIT 1", "ORDER BY 1 DESC LIMIT 3"])
        yield Case("time", "T", (f"SELECT {func}(CONCAT(t0.c, t1.c, t2.c)) FROM {tables} {tail}",))


def _heavy_memory(rng: random.Random) -> Iterator[Case]:
    for size in (65536, 65537, 1_000_000, 2**31 - 1):
        yield Case("memory", "T", (f"SELECT zeroblob({size}), randomblob({size})", f"SELECT REPEAT('x', {size})",
                                   f"SELECT LPAD('', {size}, 'ab'), SPACE({size})",
                                   f"UPDATE T SET c = REPEAT('y', {size})", "SELECT LENGTH(c) FROM T LIMIT 1"))
    for cols in (20, 100, 255, 256, 300, 2000):
        yield Case("memory", "T", ("SELECT " + ", ".join(f"zeroblob(65536) AS z{i}" for i in range(cols)),))
    yield Case("memory", "T", ("SELECT * FROM (SELECT " + ", ".join(f"zeroblob(65536) z{i}" for i in range(100)) +
                               ") x, (SELECT " + ", ".join(f"zeroblob(65536) y{i}" for i in range(100)) + ") y",))
    yield Case("memory", "T", ("SELECT " + ", ".join(["x.*"] * 1500) + " FROM (SELECT " +
                               ", ".join(f"zeroblob(65536) z{i}" for i in range(20)) + ") x",))
    for rows in (10_000, 100_000, 1_000_000):
        yield Case("memory", "T", (f"INSERT INTO T (c) SELECT REPEAT('z', 60000) FROM T a, T b, T c LIMIT {rows}",
                                   f"UPDATE T SET c = REPEAT(c, 100)", "DELETE FROM T WHERE c LIKE 'r1%'",
                                   "SELECT COUNT(*), SUM(LENGTH(c)) FROM T"))
        yield Case("memory", "T", (f"INSERT INTO T (c) SELECT CONCAT(a.c, b.c) FROM T a, T b, T c LIMIT {rows}",
                                   "INSERT INTO T (c) SELECT c FROM T", "INSERT INTO T (c) SELECT c FROM T",
                                   "UPDATE T SET c = CONCAT(c, c)", "SELECT c FROM T ORDER BY c DESC LIMIT 3"))
    yield Case("memory", "W", tuple(f"UPDATE W SET col{i} = REPEAT('w', 5000)" for i in range(12)) +
               ("SELECT * FROM W LIMIT 1",))
    for _ in range(40):
        n = rng.choice([100, 1000, 10000, 60000])
        yield Case("memory", "T", (
            f"SELECT GROUP_CONCAT(REPEAT('g', {n})) FROM T a, T b",
            f"WITH RECURSIVE r(s) AS (SELECT 'a' UNION ALL SELECT CONCAT(s, s) FROM r WHERE LENGTH(s) < {n * 10}) "
            "SELECT LENGTH(s) FROM r",
            f"SELECT MAX(REPEAT(c, {n})) FROM T GROUP BY c"))


def _answers(rng: random.Random) -> Iterator[Case]:
    finals = ["[" * 5000, "[" * 100 + "]" * 100, "9" * 10000, "1e999", "[" + ", ".join(["'x'"] * 20000) + "]",
              "'" + "ﷺ" * 50000 + "'", "__import__('os').system('touch pwned')", "[1+1]", "{1: 2}", "None",
              "\x00", "[b'\\x00' * 10]", "(" * 200, "-" * 100000]
    for final in finals:
        for task in ("T", "T_read", "dev.jsonl:1"):
            yield Case("answer", task, (), answer=f"Action: Answer\nFinal Answer: {final}")
    for text in ("", "Action: Operation\n", "Action: Answer\n", "Final Answer: x", "Action: " * 5000, "\n" * 100000,
                 "Action: Operation\n```sql\n" + "SELECT 1\n" * 5000 + "```"):
        yield Case("answer", "T", (), answer=text)


def corpus(seed: int = 0, statements: int = 10_000, tmp: str = ".") -> list[Case]:
    """The cases, deterministic for a seed; random families are sized so the corpus holds at least
    `statements` statements. `tmp`: the directory paths in attacks point into."""
    rng = random.Random(seed)
    tasks = fuzz_tasks()
    cases = [*_issue_vectors(tmp), *_escapes(tmp), *_functions(rng), *_heavy_time(rng), *_heavy_memory(rng),
             *_answers(rng)]
    dev = [t for key, t in tasks.items() if key.startswith("dev")]
    grammar_tasks = ["T", "T_read", "U", "W"] + [t.task_id for t in dev]
    gold = [t.gold_sql if t.is_mutation else t.gold_query for t in dev]
    gold = [g for g in gold if g]
    count = sum(len(c.statements) for c in cases)
    while count < statements:
        kind = rng.random()
        key = rng.choice(grammar_tasks)
        task = tasks[key]
        checker = "enforce" if rng.random() < 0.25 else "report"
        if kind < 0.55:
            grammar = _Grammar(rng, task)
            sql = tuple(grammar.statement(task.is_mutation) for _ in range(rng.choice([1, 1, 1, 2, 3])))
            family = "grammar"
        elif kind < 0.8:
            sql, family = (_soup(rng, task),), "soup"
        else:
            source = rng.choice(dev)
            text = source.gold_sql if source.is_mutation else source.gold_query
            if not text:
                continue
            key, sql, family = source.task_id, (_mutate(rng, text),), "mutation"
        cases.append(Case(family, key, sql, checker=checker))
        count += len(sql)
    denied = _denied_names()
    return [dataclasses.replace(c, calls_denied_function=_calls_denied(c.statements, denied)) for c in cases]


_LITERAL = re.compile(r"'(?:[^'\\]|\\.|'')*'")
_CALL = re.compile(r"\b([A-Za-z_]\w*)`?\s*\(")  # a name, maybe in backticks, then "("


def _denied_names() -> frozenset[str]:
    return frozenset(name.lower() for name, _ in _build_functions()) - allowlist.ALLOWED_FUNCTIONS


def _calls_denied(statements: tuple[str, ...], denied: frozenset[str]) -> bool:
    """Whether a statement names a function outside the allow-list (its MySQL spelling may be translated to
    another SQLite function; the sandbox must deny that one just the same)."""
    for sql in statements:
        sql = _LITERAL.sub("''", sql)
        if re.search(r"->>?\s*''|\b(MATCH|GLOB)\s+''", sql, re.IGNORECASE):  # operators that are functions
            return True
        if any(name.lower() in denied for name in _CALL.findall(sql)):
            return True
    return False


def sample(cases: list[Case], size: int, seed: int = 0) -> list[Case]:
    """A deterministic sample holding every family, for the test suite."""
    rng = random.Random(seed)
    by_family = collections.defaultdict(list)
    for case in cases:
        by_family[case.family].append(case)
    picked = []
    share = max(1, size // len(by_family))
    for family in sorted(by_family):
        members = by_family[family]
        picked.extend(rng.sample(members, min(share, len(members))))
    return picked


# -- the runner -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    limits: Limits
    episodes: int = 0
    statements: int = 0
    answer_steps: int = 0
    escaped: list = dataclasses.field(default_factory=list)  # (family, statement, traceback)
    slow: list = dataclasses.field(default_factory=list)  # (seconds, family, reply), over timeout + SLACK_S
    slowest: list = dataclasses.field(default_factory=list)  # the ten slowest steps
    oversized: list = dataclasses.field(default_factory=list)  # (length, family, reply)
    denied_functions_ran: list = dataclasses.field(default_factory=list)  # (family, statement, observation)
    changed_tables: list = dataclasses.field(default_factory=list)  # task keys
    created_files: list = dataclasses.field(default_factory=list)
    corrupted: list = dataclasses.field(default_factory=list)  # (family, statements, integrity message)
    peak_rss_mib: float = 0.0
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # error kind -> steps
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not (self.escaped or self.slow or self.oversized or self.denied_functions_ran or self.changed_tables
                    or self.created_files or self.corrupted) and self.peak_rss_mib < 1024

    def summary(self) -> dict:
        """The counts, and the first few examples of each finding, as JSON-ready values."""
        return {
            "passed": self.passed, "episodes": self.episodes, "statements": self.statements,
            "answer_steps": self.answer_steps, "seconds": round(self.seconds, 1),
            "timeout_s": self.limits.timeout_s, "heap_limit_mib": self.limits.heap_limit_bytes >> 20,
            "escaped_exceptions": len(self.escaped), "steps_over_limit": len(self.slow),
            "slowest_steps": [[round(s, 3), family, reply[:200]] for s, family, reply in self.slowest],
            "peak_rss_mib": round(self.peak_rss_mib), "oversized_observations": len(self.oversized),
            "functions_outside_allow_list": len(self.denied_functions_ran),
            "changed_task_tables": self.changed_tables, "created_files": self.created_files,
            "corrupted_databases": len(self.corrupted),
            "errors_by_kind": {str(k): v for k, v in sorted(self.errors.items(), key=str)},
            "examples": {"escaped": [e[:2] for e in self.escaped[:5]], "slow": [e[:2] for e in self.slow[:5]],
                         "oversized": self.oversized[:5], "functions": self.denied_functions_ran[:5],
                         "corrupted": [[f, list(s)[:2], m] for f, s, m in self.corrupted[:5]]},
        }  # fmt: skip

    def lines(self) -> list[str]:
        limit = self.limits.timeout_s + SLACK_S
        slowest = self.slowest[0][0] if self.slowest else 0.0
        lines = [
            f"episodes {self.episodes}, statements {self.statements}, answer steps {self.answer_steps}, "
            f"{self.seconds:.0f} s",
            f"escaped exceptions          {len(self.escaped)}",
            f"steps over {limit:.1f} s            {len(self.slow)} (slowest {slowest:.2f} s)",
            f"peak RSS                    {self.peak_rss_mib:.0f} MiB",
            f"oversized observations      {len(self.oversized)} (limit {self.limits.max_observation_chars})",
            f"functions outside the list  {len(self.denied_functions_ran)}",
            f"changed task tables         {len(self.changed_tables)}",
            f"created or changed files    {len(self.created_files)}",
            f"corrupted databases         {len(self.corrupted)}",
            "errors by kind              " + ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items(), key=str)),
        ]
        for seconds, family, reply in self.slowest[:5]:
            lines.append(f"  {seconds:6.2f} s  {family:9} {reply[:100]!r}")
        for family, statement, trace in self.escaped[:5]:
            lines.append(f"  escaped in {family}: {statement[:100]!r}\n{trace}")
        return lines


def _snapshot(directory: str) -> dict[str, tuple[int, str]]:
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    files[path] = (os.stat(path).st_mtime_ns, hashlib.sha256(f.read()).hexdigest())
            except OSError:
                files[path] = (0, "unreadable")
    return files


def _fresh_hash(task: SqlTask) -> str | None:
    database = EpisodeDatabase(build_image(task))
    try:
        return grading.mysql_table_hash(database.table_rows()) if database.image.state == "ok" else None
    finally:
        database.close()


def run(cases: Iterable[Case], limits: Limits = Limits(), workdir: str = ".", progress=None) -> Report:
    """Plays every case through SqlEnv with `limits` (the working directory should be `workdir`, the
    directory the corpus's paths point into, so that relative paths land there too)."""
    tasks = fuzz_tasks()
    report = Report(limits)
    before_files = _snapshot(workdir)
    before_hashes = {key: _fresh_hash(task) for key, task in tasks.items()}
    images: dict = {}
    envs = {mode: SqlEnv(SqlEnvConfig(checker=mode, limits=limits), image_cache=images)
            for mode in ("report", "enforce")}
    limit_s = limits.timeout_s + SLACK_S
    start = time.monotonic()
    for number, case in enumerate(cases):
        env = envs[case.checker]
        report.episodes += 1
        replies = [operation_reply(sql) for sql in case.statements]
        try:
            env.reset(tasks[case.task])
            for sql, reply in zip(case.statements, replies):
                step = _timed(report, env, case, reply, limit_s)
                report.statements += 1
                report.errors[step.info.get("error")] += 1
                if case.calls_denied_function and step.info.get("executed") and step.info.get("error") is None:
                    report.denied_functions_ran.append((case.family, sql, step.observation[:200]))
                if step.done:
                    break
            else:
                check = env._db.integrity()  # noqa: SLF001 - the fuzz inspects the episode's database
                if check != "ok":
                    report.corrupted.append((case.family, case.statements, check[:300]))
                _timed(report, env, case, case.answer, limit_s)
                report.answer_steps += 1
        except Exception:  # noqa: BLE001 - counting these is the point
            report.escaped.append((case.family, "\n".join(case.statements)[:300], traceback.format_exc()))
            env.close()
        if progress is not None:
            progress(number, report)
    report.seconds = time.monotonic() - start
    after_hashes = {key: _fresh_hash(task) for key, task in tasks.items()}
    report.changed_tables = sorted(key for key in tasks if after_hashes[key] != before_hashes[key])
    after_files = _snapshot(workdir)
    report.created_files = sorted(path for path in set(before_files) | set(after_files)
                                  if before_files.get(path) != after_files.get(path))
    report.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _timed(report: Report, env: SqlEnv, case: Case, reply: str, limit_s: float):
    started = time.monotonic()
    step = env.step(reply)
    seconds = time.monotonic() - started
    entry = (seconds, case.family, reply)
    if seconds > limit_s:
        report.slow.append(entry)
    if len(report.slowest) < 10 or seconds > report.slowest[-1][0]:
        report.slowest = sorted([*report.slowest, entry], key=lambda e: -e[0])[:10]
    if len(step.observation) > report.limits.max_observation_chars:
        report.oversized.append((len(step.observation), case.family, reply[:200]))
    return step
