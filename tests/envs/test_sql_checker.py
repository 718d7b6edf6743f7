"""The static Checker: each rejection with its reason, valid SQL accepted, and every dev gold statement accepted."""

import pytest

from cmat_jax.envs.sql.checker import Checker
from tests.envs.sql_helpers import make_task

READ_ONLY = Checker.for_task(make_task("counting"))
WRITABLE = Checker.for_task(make_task("UPDATE", label=["UPDATE People SET City = 'x'"], answer_md5="[(None,)]"))

VALID = [
    "SELECT Name FROM People WHERE City = 'Berlin'",
    "SELECT `Name`, COUNT(*) AS n FROM `People` GROUP BY `Name` ORDER BY n DESC LIMIT 1;",
    "select name from People where score > 10",  # column names are case-insensitive
    "SELECT p.Name FROM People AS p JOIN People q ON p.City = q.City WHERE q.Score < 5",
    "SELECT s.total FROM (SELECT SUM(Score) AS total FROM People) AS s",
    "WITH best (who, pts) AS (SELECT Name, Score FROM People) SELECT who FROM best ORDER BY pts",
    "WITH c AS (SELECT City FROM People) SELECT City FROM c",
    "SELECT Name FROM People WHERE Score = (SELECT MAX(Score) FROM People)",
    "SELECT People.* FROM People",
    "SELECT * FROM People.People",  # the database carries the table's name
    "SELECT Name FROM People WHERE City = \"Berlin\"",  # MySQL: a double-quoted string, not a column
    "SELECT Name FROM People UNION SELECT City FROM People",
]


@pytest.mark.parametrize("sql", VALID)
def test_accepts_valid_sql(sql):
    assert READ_ONLY.check(sql).ok, READ_ONLY.check(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO People (Name, Score, City) VALUES ('Eve', '3', 'Oslo')",
        "INSERT INTO People VALUES ('Eve', '3', 'Oslo')",
        "UPDATE People SET City = 'Lyon', Score = Score + 1 WHERE Name = 'Bob'",
        "DELETE FROM People WHERE Score IS NULL",
        "SELECT * FROM People",
    ],
)
def test_mutation_tasks_may_write_their_table(sql):
    assert WRITABLE.check(sql).ok, WRITABLE.check(sql)


@pytest.mark.parametrize(
    "checker, sql, rule, reason",
    [
        (READ_ONLY, "SELECT Name FROM People WHERE", "syntax", "Syntax error near 'WHERE'"),
        (READ_ONLY, "SELECT 'unterminated", "syntax", "Syntax error"),
        (READ_ONLY, "SELECT '" + "x" * 30_000 + "'", "syntax", "longer than 20000 characters"),
        (READ_ONLY, "", "statement_count", "found no statement"),
        (READ_ONLY, "SELECT 1; SELECT 2", "statement_count", "found 2 statements"),
        (READ_ONLY, "UPDATE People SET City = 'x'", "statement_kind", "UPDATE is not allowed: this task only reads"),
        (READ_ONLY, "DROP TABLE People", "statement_kind", "DROP is not allowed"),
        (WRITABLE, "DROP TABLE People", "statement_kind", "only SELECT, INSERT, UPDATE and DELETE on `People`"),
        (WRITABLE, "PRAGMA writable_schema = 1", "statement_kind", "PRAGMA is not allowed"),
        (READ_ONLY, "SELECT * FROM Persons", "unknown_table", "Unknown table 'Persons'; the table is `People`."),
        (READ_ONLY, "SELECT * FROM people", "unknown_table", "(table names are case-sensitive)"),
        (READ_ONLY, "SELECT * FROM other.People", "unknown_table", "Unknown table 'other.People'"),
        (WRITABLE, "INSERT INTO Persons VALUES ('a', 'b', 'c')", "unknown_table", "Unknown table 'Persons'"),
        (READ_ONLY, "SELECT Title FROM People", "unknown_column",
         "Unknown column 'Title'; columns are: `Name`, `Score`, `City`."),
        (READ_ONLY, "SELECT Name FROM People WHERE Cty = 'x'", "unknown_column", "did you mean `City`?"),
        (READ_ONLY, "SELECT Name FROM People ORDER BY Rank", "unknown_column", "Unknown column 'Rank'"),
        (READ_ONLY, "SELECT Name FROM People GROUP BY Town", "unknown_column", "Unknown column 'Town'"),
        (READ_ONLY, "SELECT a.Name FROM People a JOIN People b ON a.Town = b.City", "unknown_column", "'Town'"),
        (READ_ONLY, "SELECT x.Name FROM People", "unknown_table", "Unknown table 'x'"),
        (WRITABLE, "INSERT INTO People (Name, Town) VALUES ('a', 'b')", "unknown_column", "Unknown column 'Town'"),
        (WRITABLE, "UPDATE People SET Town = 'x' WHERE Name = 'Bob'", "unknown_column", "Unknown column 'Town'"),
        (WRITABLE, "INSERT INTO People VALUES ('a', 'b')", "value_count", "Row 1 has 2 values for 3 columns"),
        (WRITABLE, "INSERT INTO People (Name) VALUES ('a'), ('b', 'c')", "value_count", "Row 2 has 2 values for 1"),
    ],
)
def test_rejections_give_an_actionable_reason(checker, sql, rule, reason):
    verdict = checker.check(sql)
    assert not verdict.ok
    assert verdict.rule == rule
    assert reason in verdict.reason
    assert "\n" not in verdict.reason


def test_accepts_every_gold_statement_of_the_dev_tasks(dev_tasks):
    mutations = [t for t in dev_tasks if t.is_mutation]
    rejected = [(t.task_id, Checker.for_task(t).check(t.gold_sql)) for t in mutations]
    assert [r for r in rejected if not r[1].ok] == []
    assert len(rejected) == 40
