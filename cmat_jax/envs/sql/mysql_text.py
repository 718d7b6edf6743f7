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
SORT_KEY_FUNCTION = "mysql_sort_key"  # SQL function: a value whose binary order is the collation's order

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


# ASCII text folds to its lower case; its collation key is then one bytes.translate away.
_ASCII_RANKS = bytes(ord(_RANK_TABLE.get(code) or chr(code)) for code in range(128)) + bytes(range(128, 256))
_ASCII_UNWEIGHTED = bytes(code for code in range(128) if code in _RANK_TABLE and _RANK_TABLE[code] is None)
# Long text is folded in chunks of this many characters, with a deadline check between chunks: folding
# is character by character, and one chunk takes ~20 ms at worst (U+FDFA expands to 18 characters).
_CHUNK_CHARS = 1024


def _fold_chunk(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.casefold().translate(_EXPANSIONS)


def _chunked(text: str, convert, check) -> str:
    if len(text) <= _CHUNK_CHARS or check is None:
        return convert(text)
    parts = []
    for start in range(0, len(text), _CHUNK_CHARS):
        check()
        parts.append(convert(text[start : start + _CHUNK_CHARS]))
    return "".join(parts)


def fold(text: str, check=None) -> str:
    """Case- and accent-folded text: equal at MySQL's primary level iff folds are equal (approximately).

    `check`, when given, is called between chunks of long text (a deadline check that may raise)."""
    if text.isascii():  # NFKD leaves ASCII alone, it has no combining marks, and casefold is lower
        return text.lower()
    # Character by character (NFKD's reordering moves only combining marks, which are dropped): chunks
    # fold exactly as the whole text does.
    return _chunked(text, _fold_chunk, check)


def collation_key(text: str, check=None) -> str:
    """A string whose code point order is the collation's order. `check` as for fold."""
    # Only short strings are cached: sorting long computed strings would
    # otherwise fill the cache with megabytes that SQLite's heap cap never sees.
    if len(text) <= 256:
        return _short_collation_key(text)
    return _uncached_collation_key(text, check)


def _uncached_collation_key(text: str, check=None) -> str:
    if text.isascii():
        return text.lower().encode("ascii").translate(_ASCII_RANKS, _ASCII_UNWEIGHTED).decode("ascii")
    return _chunked(text, lambda chunk: _fold_chunk(chunk).translate(_RANK_TABLE), check)


@functools.lru_cache(maxsize=1 << 16)
def _short_collation_key(text: str) -> str:
    return _uncached_collation_key(text)


def compare(a: str, b: str, check=None) -> int:
    """The SQLite collation callback: negative, zero or positive, as MySQL would order a and b."""
    key_a, key_b = collation_key(a, check), collation_key(b, check)
    return (key_a > key_b) - (key_a < key_b)


def sort_key(value, check=None):
    """SQL function: text becomes its collation key, so that SQLite's binary order (UTF-8 bytes, that
    is code points) orders it as the collation does; NULL, numbers and blobs stay as they are, keeping
    SQLite's order of types. Sorting by sort_key(x) puts rows in the same order as sorting by x under
    the collation, with every comparison made in C."""
    return collation_key(value, check) if isinstance(value, str) else value


# SQLite's LIKE runs inside one VM step, out of reach of the statement timeout, and
# takes time ~ len(value) * len(pattern): both are capped (the pattern through
# SQLITE_LIMIT_LIKE_PATTERN_LENGTH). DBBench values and patterns are far shorter.
LIKE_PATTERN_LIMIT = 1_000
LIKE_VALUE_LIMIT = 1 << 16


class LikeValueTooLong(ValueError):
    pass


def like_fold(value, check=None):
    """SQL function applied to both sides of LIKE, so that LIKE ignores case and accents as MySQL's does."""
    value = as_text(value)
    if value is None:
        return None
    if len(value) > LIKE_VALUE_LIMIT:
        raise LikeValueTooLong(len(value))
    return fold(value, check)


def number_value(value):
    """SQL function: text in a numeric context is a DOUBLE read from its numeric prefix ('12abc' -> 12.0,
    'abc' -> 0.0); numbers stay as they are."""
    if value is None or isinstance(value, (int, float)):
        return value
    match = _LEADING_NUMBER.match(as_text(value))
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


def as_text(value):
    """An SQL value as MySQL's text: NULL stays None, blobs are read as UTF-8 (invalid bytes become
    U+FFFD), numbers become the text MySQL stores for them. The one conversion of SQL values to text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return stored_text(value)


def cell_text(value):
    """The text MySQL stores for a task cell bound as a query parameter (DBBench's table creation)."""
    if isinstance(value, float) and math.isfinite(value):
        # The MySQL client sends repr(value); MySQL reads it as a literal.
        return number_literal_text(repr(value).lstrip("-"), negative=value < 0)
    return stored_text(value)
