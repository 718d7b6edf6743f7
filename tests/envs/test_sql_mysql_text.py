"""MySQL's text rules in Python: the collation, LIKE folding, numbers as text and text as numbers."""

import functools
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmat_jax.envs.sql import mysql_text


def test_collation_ignores_case_and_accents_but_not_trailing_spaces():
    assert mysql_text.compare("Émile", "EMILE") == 0
    assert mysql_text.compare("straße", "STRASSE") == 0
    assert mysql_text.compare("Ærø", "aero") == 0
    assert mysql_text.compare("a ", "a") > 0  # NO PAD
    assert mysql_text.compare("a\x01b", "ab") == 0  # control characters carry no weight


def test_collation_orders_punctuation_then_digits_then_letters():
    words = ["b", "_x", "10", "A", "(", "$5", "-", "~", "é", "Z", "1"]
    ordered = sorted(words, key=mysql_text.collation_key)
    assert ordered == ["_x", "-", "(", "~", "$5", "1", "10", "A", "b", "é", "Z"]


def test_like_fold_keeps_wildcards():
    assert mysql_text.like_fold("Zoë_%\\") == "zoe_%\\"
    assert mysql_text.like_fold(None) is None
    assert mysql_text.like_fold(12) == "12"


@pytest.mark.parametrize(
    "literal, negative, text",
    [("10", False, "10"), ("007", False, "7"), ("7.400", False, "7.400"), ("0.5", False, "0.5"),
     ("1.", False, "1"), ("3", True, "-3"), ("0.0", True, "0.0"), ("1e3", False, "1000"), ("1.5e-7", False, "1.5e-7")],
)  # fmt: skip
def test_number_literal_text(literal, negative, text):
    assert mysql_text.number_literal_text(literal, negative) == text


def test_numbers_stored_as_text_and_text_read_as_numbers():
    assert mysql_text.stored_text(6.0) == "6" and mysql_text.stored_text(0.1 + 0.2) == "0.30000000000000004"
    assert mysql_text.stored_text(12) == "12" and mysql_text.stored_text("x") == "x"
    assert mysql_text.cell_text(2.0) == "2.0" and mysql_text.cell_text(-1.5) == "-1.5"  # as the client sends it
    assert mysql_text.number_value(" 12abc") == 12.0 and mysql_text.number_value("1,429") == 1.0
    assert mysql_text.number_value("abc") == 0.0 and mysql_text.number_value(".5e1") == 5.0
    assert mysql_text.number_value(7) == 7 and mysql_text.number_value(None) is None


def _reference_fold(text):
    """fold as first written: NFKD, combining marks dropped, case folded, expansions."""
    bare = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return bare.casefold().translate(mysql_text._EXPANSIONS)


_ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=3000)
_ASCII_TEXT = st.text(st.characters(max_codepoint=127), max_size=3000)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=st.one_of(_ANY_TEXT, _ASCII_TEXT, st.sampled_from(["ﷺ" * 1500, "é" * 2049, "Æ\u0301" * 1100])))
def test_chunked_folding_and_the_ascii_path_equal_folding_the_whole_text(text):
    """Long text is folded in chunks (with deadline checks between them), ASCII text by lower() and a byte table."""
    expected = _reference_fold(text)
    assert mysql_text.fold(text) == mysql_text.fold(text, lambda: None) == expected
    key = expected.translate(mysql_text._RANK_TABLE)
    assert mysql_text.collation_key(text) == mysql_text.collation_key(text, lambda: None) == key
    assert mysql_text.sort_key(text) == key


def test_sort_keys_order_as_the_collation_and_keep_other_types():
    words = ["b", "_x", "10", "A", "(", "$5", "-", "~", "é", "Z", "1", "Émile", "emile", "a" * 300, "B" * 300]
    by_collation = sorted(words, key=functools.cmp_to_key(mysql_text.compare))
    assert sorted(words, key=mysql_text.sort_key) == by_collation
    # SQLite compares the keys' UTF-8 bytes: that order is code point order.
    assert sorted(words, key=lambda w: mysql_text.sort_key(w).encode()) == by_collation
    assert [mysql_text.sort_key(v) for v in (None, 3, 2.5, b"\xff")] == [None, 3, 2.5, b"\xff"]


def test_as_text_is_the_one_conversion_of_sql_values_to_text():
    assert [mysql_text.as_text(v) for v in (None, "x", b"caf\xc3\xa9", b"\xff", 7, 2.0, 1.5)] == [
        None, "x", "café", "\ufffd", "7", "2", "1.5"]
