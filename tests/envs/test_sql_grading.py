"""DBBench v0.2 grading: Final Answer comparison and MySQL's table hash."""

import hashlib

import pytest

from cmat_jax.envs.sql import grading
from cmat_jax.envs.sql.database import EpisodeDatabase, build_image
from cmat_jax.envs.sql.dialect import parse_mysql


@pytest.mark.parametrize(
    "answer, label, correct",
    [
        (' ["March 19, 1998"]', ["March 19, 1998"], True),
        (' ["march 19, 1998"]', ["March 19, 1998"], False),  # strings compare exactly
        (" [2011]", ["2011.0"], True),  # one value each: float comparison
        (' ["2011.00"]', ["2011.0"], True),
        (" [1e3]", ["1000"], True),
        (' ["nan"]', ["nan"], False),  # NaN equals nothing, as in DBBench
        (' ["b", "a"]', ["a", "b"], True),  # several values: sets
        (' ["a", "a", "b"]', ["a", "b"], True),
        (' ["a"]', ["a", "b"], False),
        (" [1, 2]", ["1", "2"], False),  # sets compare without conversion
        (" [[1], [2]]", ["1", "2"], False),  # unhashable answers never match
        (" 5", ["5"], True),  # not a list: kept as text, and ' 5' converts to 5.0
        (" Giza", ["Giza"], False),  # not a literal: the raw text ' Giza' is compared
        (' "ab"', ["a", "b"], True),  # a string literal becomes its characters, as list(eval(...)) does
        ("", [""], True),  # no answer at all equals an empty label
        ("", ["x"], False),
        (' ["x"]; __import__("os")', ["x"], False),  # never evaluated
        (" [" * 500, ["x"], False),
    ],
)
def test_answer_comparison(answer, label, correct):
    assert grading.answer_is_correct(answer, label) is correct


def _reference_hash(rows):
    """The hash query written out for tiny inputs: md5 of ','-joined sorted 5-char row hashes."""
    row_hashes = sorted(hashlib.md5(",".join(v for v in row if v is not None).encode()).hexdigest()[:5] for row in rows)
    return hashlib.md5(",".join(row_hashes).encode()).hexdigest()


def test_table_hash_matches_the_formula_and_skips_nulls():
    rows = [("a", "b"), ("c", None), (None, None), ("", "x")]
    assert grading.mysql_table_hash(rows) == _reference_hash(rows)
    # CONCAT_WS skips NULLs: ('c', NULL) hashes like ('c',), but ('c', '') does not.
    assert grading.mysql_table_hash([("c", None)]) == grading.mysql_table_hash([("c",)])
    assert grading.mysql_table_hash([("c", None)]) != grading.mysql_table_hash([("c", "")])
    assert grading.mysql_table_hash([]) is None
    assert grading.hash_result_text(None) == "[(None,)]"
    assert grading.hash_result_text("0f3a") == "[('0f3a',)]"


def test_table_hash_order_does_not_matter_and_non_ascii_is_utf8():
    rows = [("Émile", "5"), ("Zoë", "17"), ("adam", "100")]
    assert grading.mysql_table_hash(rows) == grading.mysql_table_hash(rows[::-1])
    expected_first = hashlib.md5("Émile,5".encode("utf-8")).hexdigest()[:5]
    assert grading.mysql_table_hash([rows[0]]) == hashlib.md5(expected_first.encode()).hexdigest()


def _row_with_hash_prefix(prefix):
    n = 0
    while not hashlib.md5(str(n).encode()).hexdigest().startswith(prefix):
        n += 1
    return (str(n),)


def test_group_concat_stops_at_1024_characters():
    # 5 characters + ',' per row: 171 rows fill 1025 characters, so the 171st row hash is cut after 4
    # characters, and a row whose hash sorts last no longer changes the result.
    small = [(str(i),) for i in range(20)]
    large = [(str(i),) for i in range(400)]
    last = _row_with_hash_prefix("fff")
    assert grading.mysql_table_hash(small + [last]) != grading.mysql_table_hash(small)
    assert grading.mysql_table_hash(large + [last]) == grading.mysql_table_hash(large)
    assert grading.mysql_table_hash(large) != _reference_hash(large)  # the untruncated formula differs


def test_gold_sql_reproduces_answer_md5_on_every_dev_mutation(dev_tasks):
    mutations = [t for t in dev_tasks if t.is_mutation]
    assert len(mutations) == 40
    for task in mutations:
        database = EpisodeDatabase(build_image(task))
        result = database.run(parse_mysql(task.gold_sql))
        assert result.error is None, (task.task_id, result.text)
        hash_text = grading.hash_result_text(grading.mysql_table_hash(database.table_rows()))
        assert grading.table_state_is_correct(hash_text, task.answer_md5), task.task_id
        database.close()


def test_untouched_tables_do_not_match_answer_md5(dev_tasks):
    """The hash is sensitive: the initial table state is never the expected one."""
    for task in (t for t in dev_tasks if t.is_mutation):
        database = EpisodeDatabase(build_image(task))
        hash_text = grading.hash_result_text(grading.mysql_table_hash(database.table_rows()))
        assert not grading.table_state_is_correct(hash_text, task.answer_md5), task.task_id
        database.close()
