"""The hand-written attack families of the adversarial corpus: every vector docs/sql_env.md's safety model names.

- `issue_vectors`: the attack report's reproducers, verbatim and at the value limit;
- `escapes`: filesystem, schema and session access (ATTACH, VACUUM INTO, PRAGMA,
  DDL, transactions, MySQL-only statements);
- `functions`: every function of the running SQLite build, called with odd arguments;
- `heavy_time`: statements that would run for seconds to hours (cross joins, sorts in
  one instruction, slow collation callbacks, statements near the length limit);
- `heavy_memory`: blobs, wide rows and tables grown past their cap;
- `answers`: Answer replies that are huge, malformed or code.

Paths in attacks point into `tmp`, the directory the runner watches.
"""

from __future__ import annotations

import random
from typing import Iterator

from cmat_jax.envs.sql.dialect import quote_identifier
from cmat_jax.sqlfuzz.cases import Case


def issue_vectors(tmp: str) -> Iterator[Case]:
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


def escapes(tmp: str) -> Iterator[Case]:
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


def functions(rng: random.Random, build_functions: list[tuple[str, int]]) -> Iterator[Case]:
    """Every function of this SQLite build (and known ones it may lack; `build_functions`: their names and
    argument counts), called through the sandbox."""
    args_pool = ["'simple'", "x'4141414141414141'", "c", "NULL", "1", "-1", "2.5", "REPEAT('ﷺ', 20000)",
                 "zeroblob(65536)", "'%s%s%s%n'", "'{\"a\":[1,2]}'", "'$.a'", "100000000"]
    for name, narg in build_functions:
        for variant in range(3):
            count = narg if narg >= 0 else rng.randint(0, 4)
            args = ", ".join(rng.choice(args_pool) for _ in range(count))
            if name in ("->", "->>"):
                sql = f"SELECT '{{\"a\":1}}' {name} '$.a'"
            else:
                sql = f"SELECT {quote_identifier(name)}({args}) FROM T" if variant else f"SELECT {quote_identifier(name)}({args})"
            yield Case("function", "T", (sql,))


def heavy_time(rng: random.Random) -> Iterator[Case]:
    """Statements that would run for seconds to hours: joins, sorts in one instruction, slow callbacks."""
    yield from _slow_joins()
    yield from _slow_strings()
    yield from _long_statements()
    for _ in range(60):
        width = rng.randint(3, 5)
        tables = ", ".join(f"T t{i}" for i in range(width))
        func = rng.choice(["UPPER", "LOWER", "REVERSE", "HEX", "TRIM", "LENGTH"])
        tail = rng.choice(["ORDER BY 1", "GROUP BY 1", "ORDER BY RAND()", "", "LIMIT 1", "ORDER BY 1 DESC LIMIT 3"])
        yield Case("time", "T", (f"SELECT {func}(CONCAT(t0.c, t1.c, t2.c)) FROM {tables} {tail}",))


def _slow_joins() -> Iterator[Case]:
    """Cross joins sorted, grouped or deduplicated in one instruction, and a recursion that never ends."""
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


def _slow_strings() -> Iterator[Case]:
    """Long values through the collation's Python callbacks and quadratic string searches."""
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


def _long_statements() -> Iterator[Case]:
    """Statements near the 20,000-character limit: parsing and translating them takes time too."""
    long = {
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


def heavy_memory(rng: random.Random) -> Iterator[Case]:
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
                                   "UPDATE T SET c = REPEAT(c, 100)", "DELETE FROM T WHERE c LIKE 'r1%'",
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


def answers(rng: random.Random) -> Iterator[Case]:
    finals = ["[" * 5000, "[" * 100 + "]" * 100, "9" * 10000, "1e999", "[" + ", ".join(["'x'"] * 20000) + "]",
              "'" + "ﷺ" * 50000 + "'", "__import__('os').system('touch pwned')", "[1+1]", "{1: 2}", "None",
              "\x00", "[b'\\x00' * 10]", "(" * 200, "-" * 100000]
    for final in finals:
        for task in ("T", "T_read", "dev.jsonl:1"):
            yield Case("answer", task, (), answer=f"Action: Answer\nFinal Answer: {final}")
    for text in ("", "Action: Operation\n", "Action: Answer\n", "Final Answer: x", "Action: " * 5000, "\n" * 100000,
                 "Action: Operation\n```sql\n" + "SELECT 1\n" * 5000 + "```"):
        yield Case("answer", "T", (), answer=text)
