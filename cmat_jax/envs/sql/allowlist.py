"""The SQL functions model SQL may call: an allow-list, so that no SQLite build can add one silently.

The sandbox's authorizer (database.py) asks `denial(name)` for every function a
statement calls and refuses the statement when it answers a reason. Allowed are
the functions the MySQL dialect layer registers (mysql_text, mysql_functions) and
SQLite's ordinary scalar, aggregate, math, date and window functions: each is
linear in its input, and inputs are capped in size. Everything else is denied,
whatever the SQLite build offers, among them:

- load_extension: loads native code;
- fts3_tokenizer: returns and overwrites a native pointer (an ASLR leak and the
  first half of a published code-execution chain);
- rtreenode, rtreedepth, rtreecheck: debugging parsers of caller-supplied blobs;
- printf, format: one call can spin for seconds inside a single VM instruction;
- sqlite_* introspection, changes/last_insert_rowid, JSON, FTS and session
  functions: not part of the MySQL dialect served here.

tests/envs/test_sql_allowlist.py calls every function of the running build's
`pragma_function_list` through the sandbox and checks this module's answer.
"""

from __future__ import annotations

from cmat_jax.envs.sql import mysql_functions, mysql_text

# The MySQL dialect layer: functions dialect.to_sqlite emits and database.py registers.
DIALECT_FUNCTIONS = frozenset(
    {
        mysql_text.FOLD_FUNCTION,
        mysql_text.TEXT_FUNCTION,
        mysql_text.NUMBER_FUNCTION,
        mysql_text.SORT_KEY_FUNCTION,
        *mysql_functions.NAMES,
    }
)

# SQLite's ordinary functions (https://sqlite.org/lang_corefunc.html, lang_aggfunc.html,
# lang_mathfunc.html, lang_datefunc.html, windowfunctions.html). Names a build lacks are harmless.
SQLITE_FUNCTIONS = frozenset(
    {
        # scalar ("like" is the LIKE operator; instr and replace are database.py's linear versions)
        "abs", "char", "coalesce", "concat", "concat_ws", "hex", "ifnull", "iif", "instr", "length", "like",
        "likelihood", "likely", "lower", "ltrim", "max", "min", "nullif", "octet_length", "quote", "random",
        "randomblob", "replace", "round", "rtrim", "sign", "soundex", "substr", "substring", "trim", "typeof",
        "unhex", "unicode", "unlikely", "upper", "zeroblob",
        # aggregate
        "avg", "count", "group_concat", "string_agg", "sum", "total",
        # math
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos", "cosh",
        "degrees", "exp", "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow", "power", "radians",
        "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
        # date and time
        "date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff",
        "current_date", "current_time", "current_timestamp",
        # window
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
        "first_value", "last_value", "nth_value",
    }
)  # fmt: skip

ALLOWED_FUNCTIONS = DIALECT_FUNCTIONS | SQLITE_FUNCTIONS

# Why the best-known dangerous functions are denied (any other unlisted function gets the generic reason).
_REASONS = {
    "load_extension": "it loads native code",
    "fts3_tokenizer": "it reads and writes a native pointer",
    "rtreenode": "it parses raw r-tree blobs (a debugging function)",
    "rtreedepth": "it parses raw r-tree blobs (a debugging function)",
    "rtreecheck": "it is an r-tree debugging function",
    "printf": "one call can run for seconds, out of reach of the statement timeout",
    "format": "one call can run for seconds, out of reach of the statement timeout",
}


def denial(name: str) -> str | None:
    """None when model SQL may call function `name`, else a one-line reason it may not."""
    key = name.lower()
    if key in ALLOWED_FUNCTIONS:
        return None
    why = _REASONS.get(key, "it is not one of MySQL's or SQLite's ordinary functions")
    return f"function {name} is not available here: {why}"
