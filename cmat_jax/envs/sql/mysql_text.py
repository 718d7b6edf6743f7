"""How MySQL compares text and turns numbers into text, in plain Python.

DBBench's MySQL creates every column as TEXT with the server default collation,
utf8mb4_0900_ai_ci: the primary level of the Unicode Collation Algorithm, so
comparisons ignore case and accents and trailing spaces count (NO PAD). SQLite
gets the same behaviour through the functions below, registered on every
episode's connection.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata

COLLATION = "mysql_ai_ci"  # the SQLite collation name declared on every column
FOLD_FUNCTION = "mysql_fold"  # SQL function: case/accent folding for LIKE
TEXT_FUNCTION = "mysql_text"  # SQL function: the text MySQL stores for a value written to a TEXT column
NUMBER_FUNCTION = "mysql_number"  # SQL function: a value as MySQL reads it in a numeric context

_LEADING_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

# Primary-weight order of the ASCII characters in the Unicode collation table:
# whitespace, punctuation and symbols, then '$', digits, letters (case folded first).
_ASCII_ORDER = "\t\n\x0b\x0c\r _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789abcdefghijklmnopqrstuvwxyz"
# Ranks stay below U+0080, so ASCII sorts before other scripts, which keep code point order.
_RANK_TABLE = {ord(c): chr(rank + 1) for rank, c in enumerate(_ASCII_ORDER)}
# Other ASCII control characters have no weight at all.
_RANK_TABLE.update({code: None for code in [*range(0x20), 0x7F] if chr(code) not in _ASCII_ORDER})
# Letters whose primary weight is that of a base letter or a pair of letters.
_EXPANSIONS = str.maketrans({"æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ł": "l"})


def fold(text: str) -> str:
    """Case- and accent-folded text: equal at MySQL's primary level iff folds are equal (approximately)."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.casefold().translate(_EXPANSIONS)


def collation_key(text: str) -> str:
    """A string whose code point order is the collation's order."""
    # Only short strings are cached: sorting long computed strings would
    # otherwise fill the cache with megabytes that SQLite's heap cap never sees.
    return _short_collation_key(text) if len(text) <= 256 else fold(text).translate(_RANK_TABLE)


@functools.lru_cache(maxsize=1 << 16)
def _short_collation_key(text: str) -> str:
    return fold(text).translate(_RANK_TABLE)


def compare(a: str, b: str) -> int:
    """The SQLite collation callback: negative, zero or positive, as MySQL would order a and b."""
    key_a, key_b = collation_key(a), collation_key(b)
    return (key_a > key_b) - (key_a < key_b)


# SQLite's LIKE runs inside one VM step, out of reach of the statement timeout, and
# takes time ~ len(value) * len(pattern): both are capped (the pattern through
# SQLITE_LIMIT_LIKE_PATTERN_LENGTH). DBBench values and patterns are far shorter.
LIKE_PATTERN_LIMIT = 1_000
LIKE_VALUE_LIMIT = 1 << 16


class LikeValueTooLong(ValueError):
    pass


def like_fold(value):
    """SQL function applied to both sides of LIKE, so that LIKE ignores case and accents as MySQL's does."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = stored_text(value)
    if len(value) > LIKE_VALUE_LIMIT:
        raise LikeValueTooLong(len(value))
    return fold(value)


def number_value(value):
    """SQL function: text in a numeric context is a DOUBLE read from its numeric prefix ('12abc' -> 12.0,
    'abc' -> 0.0); numbers stay as they are."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    match = _LEADING_NUMBER.match(value)
    return float(match.group(0)) if match else 0.0


def double_text(value: float) -> str:
    """MySQL's text for a DOUBLE: shortest round-trip digits, no trailing '.0', exponent without '+'."""
    if not math.isfinite(value):  # MySQL has no such DOUBLE; SQLite can compute one
        return repr(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value).replace("e+", "e").replace("e-0", "e-")


def number_literal_text(literal: str, negative: bool = False) -> str:
    """MySQL's text for a numeric literal stored into a TEXT column.

    Integers lose leading zeros; decimals keep their digits as written ('7.400');
    literals with an exponent are DOUBLEs.
    """
    text = literal.strip()
    if "e" in text.lower():
        return double_text(-float(text) if negative else float(text))
    if "." in text:
        whole, fraction = text.split(".", 1)
        digits = str(int(whole or "0")) + ("." + fraction if fraction else "")
    else:
        digits = str(int(text))
    is_zero = not any(c in "123456789" for c in digits)
    return "-" + digits if negative and not is_zero else digits


def stored_text(value):
    """SQL function: the value a MySQL TEXT column holds after storing `value` (numbers become text)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return double_text(value)
    return value


def cell_text(value):
    """The text MySQL stores for a task cell bound as a query parameter (DBBench's table creation)."""
    if isinstance(value, float) and math.isfinite(value):
        # The MySQL client sends repr(value); MySQL reads it as a literal.
        return number_literal_text(repr(value).lstrip("-"), negative=value < 0)
    return stored_text(value)
