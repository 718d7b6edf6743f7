"""Random statements for the adversarial corpus: a small MySQL grammar over one task's table, token soup, and
mutations of gold SQL.

`Grammar(rng, task).statement(writable)` draws mostly valid, often odd MySQL (joins,
aggregates, CASE, CAST, subqueries, UNION, CTEs, INSERT/UPDATE/DELETE on a writable
table) with literals from edge cases (Unicode, quotes, backslashes, huge numbers,
blobs). `soup` strings random keywords and names together; `mutate` deletes, inserts,
reverses and duplicates tokens of a statement. Every draw comes from the `random.Random`
given, so a seed gives the same statements.
"""

from __future__ import annotations

import random

from cmat_jax.envs.sql.dialect import quote_identifier
from cmat_jax.envs.sql.tasks import SqlTask


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


class Grammar:
    """Random MySQL over one task's table: mostly valid, often odd."""

    def __init__(self, rng: random.Random, task: SqlTask):
        self.rng = rng
        self.table = quote_identifier(task.table_name)
        self.columns = [quote_identifier(c) for c in task.columns] or ["`x`"]

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


def soup(rng: random.Random, task: SqlTask) -> str:
    words = _SOUP + [quote_identifier(task.table_name), quote_identifier(task.table_name)] + [quote_identifier(c) for c in task.columns]
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))


def mutate(rng: random.Random, sql: str) -> str:
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
