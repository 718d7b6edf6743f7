"""The words of generated tasks: questions for the SELECT family, instructions for INSERT and UPDATE.

Pure text: every function takes the parts of a task (column names, conditions as
(column, op, value) triples with op one of "=", "<", ">", values exactly as stored)
and a `random.Random`, and returns one description. The `dbbench` style mixes
WikiSQL-like questions ("Which Score has a Result of 2–1, and a Goal smaller than
17?"), WikiTQ-like lower-case questions and narrative change requests; the `tiny`
style has one or two short phrasings per kind. A value that an INSERT or UPDATE writes
always appears verbatim (the graded table hash is case-sensitive), and so does the
value that identifies the row to change.
"""

from __future__ import annotations

import random
from typing import Sequence

Cond = tuple[str, str, str]  # (column, op, value)

_OF = {
    "=": ("a {c} of {v}", "{c} of {v}", "a {c} listed as {v}"),
    "<": ("a {c} smaller than {v}", "a {c} less than {v}", "a {c} lower than {v}", "{c} under {v}"),
    ">": ("a {c} larger than {v}", "a {c} greater than {v}", "a {c} higher than {v}", "{c} over {v}"),
}
_IS = {
    "=": ("the {c} is {v}", "{c} is {v}", "the {c} was {v}"),
    "<": ("the {c} is less than {v}", "the {c} is below {v}", "{c} is smaller than {v}"),
    ">": ("the {c} is more than {v}", "the {c} is above {v}", "{c} is larger than {v}"),
}

_SUPERLATIVE = {"DESC": ("highest", "largest", "most", "greatest", "biggest"),
                "ASC": ("lowest", "smallest", "least", "fewest")}
_AGG_WORDS = {
    "SUM": ("total", "combined", "overall"),
    "MIN": ("lowest", "smallest", "minimum", "least"),
    "MAX": ("highest", "largest", "maximum", "biggest"),
    "AVG": ("average", "mean"),
}

_OTHER = (
    "What is the {t} when {is}?", "Which {t} has {of}?", "What {t} has {of}?", "Name the {t} for {of}",
    "Tell me the {t} for {of}", "{Of} has what {t}?", "What was the {t} when {is}?",
    "For the {row} where {is}, what is the {t}?", "Give the {t} of the {row} with {of}.",
    "What {t} is listed for {of}?",
)
_OTHER_KEY = ("what is the {t} of {v}?", "What {t} does {v} have?", "what was the {t} for {v}?",
              "Give me the {t} of {v}.")
_COMPARISON = (
    "Which {t} has {of}?", "{Of} has what {t}?", "What {t} has {of}?", "Name the {t} with {of}",
    "List the {t} of every {row} where {is}.", "Which {rows} have {of}? Give their {t}.",
    "What are the {t} values for {rows} with {of}?", "Tell me the {t} when {is}",
)
_COUNT = (
    "How many {rows} have {of}?", "What is the total number of {rows} where {is}?",
    "How many {rows} are there where {is}?", "Count the {rows} with {of}.", "what is the number of {rows} with {of}?",
    "In how many {rows} does {is} hold?",
)
_COUNT_DISTINCT = ("How many different {t} values are there?", "How many distinct {t} appear in the table?",
                   "what is the number of different {t} entries?")
_COUNT_DISTINCT_WHERE = ("How many different {t} values are listed for {rows} with {of}?",
                         "How many distinct {t} are there when {is}?")
_RANKING = (
    "Which {t} has the {sup} {n}?", "What {t} had the {sup} {n}?", "Name the {t} with the {sup} {n}",
    "Give the {t} of the {row} with the {sup} {n}.", "which {row} has the {sup} {n}? answer with its {t}.",
)
_RANKING_WHERE = (
    "Among the {rows} with {of}, which {t} has the {sup} {n}?",
    "Of the {rows} where {is}, which had the {sup} {n}? Give the {t}.",
    "Which {t} has the {sup} {n} among {rows} with {of}?",
)
_AGG = (
    "What is the {w} {n} when {is}?", "What is the {w} {n} for {rows} with {of}?",
    "Name the {w} {n} for {of}", "What was the {w} {n} of the {rows} where {is}?",
    "{Of}: what is the {w} {n}?", "Which is the {w} {n} that has {of}?",
)
_AGG_ALL = ("What is the {w} {n}?", "What was the {w} {n} across all {rows}?", "Tell me the {w} {n} in the table.",
            "Name the {w} {n}", "Over all {rows}, what is the {w} {n}?", "Give the {w} {n} of the {rows}.")
_SUM_EXTRA = ("Add up the {n} of all {rows} where {is}.", "What is the sum of {n} for {of}?")
_AVG_EXTRA = ("On average, what was the {n} for {rows} with {of}?", "Calculate the mean {n} where {is}.")


def _cond_text(rng: random.Random, cond: Cond, table: dict, quote: bool) -> str:
    column, op, value = cond
    if quote and op == "=":
        value = f"'{value}'"
    template = rng.choice(table[op])
    if template.startswith("a {c}") and column[:1].lower() in "aeiou":
        template = "an" + template[1:]
    return template.format(c=column, v=value)


def _join(parts: Sequence[str], rng: random.Random) -> str:
    if len(parts) == 1:
        return parts[0]
    return (", and " if rng.random() < 0.5 else " and ").join(parts)


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(rng: random.Random, template: str, conds: Sequence[Cond], quote: bool, **slots) -> str:
    of = _join([_cond_text(rng, c, _OF, quote) for c in conds], rng) if conds else ""
    is_ = _join([_cond_text(rng, c, _IS, quote) for c in conds], rng) if conds else ""
    return template.format(of=of, Of=_capitalize(of), **{"is": is_}, **slots)


def select_question(rng: random.Random, style: str, kind: str, *, target: str, conds: Sequence[Cond],
                    rows: tuple[str, str], key_value: str | None = None, number: str | None = None,
                    direction: str | None = None, agg: str | None = None, lowercase: bool = False) -> str:
    """A SELECT-family question.

    kind: other | comparison | count | count_distinct | ranking | aggregate. `key_value`: for
    `other`, the value of the key column the single condition names (allows "what is the X of Y?").
    """
    if style == "tiny":
        return _tiny_select(rng, kind, target, conds, rows, key_value, number, direction, agg)
    quote = rng.random() < 0.2
    slots = dict(t=target, row=rows[0], rows=rows[1], n=number or "")
    if kind == "other":
        if key_value is not None and rng.random() < 0.5:
            text = rng.choice(_OTHER_KEY).format(t=target, v=key_value)
        else:
            text = _fill(rng, rng.choice(_OTHER), conds, quote, **slots)
    elif kind == "comparison":
        text = _fill(rng, rng.choice(_COMPARISON), conds, quote, **slots)
    elif kind == "count":
        text = _fill(rng, rng.choice(_COUNT), conds, quote, **slots)
    elif kind == "count_distinct":
        text = _fill(rng, rng.choice(_COUNT_DISTINCT_WHERE if conds else _COUNT_DISTINCT), conds, quote, **slots)
    elif kind == "ranking":
        sup = rng.choice(_SUPERLATIVE[direction])
        text = _fill(rng, rng.choice(_RANKING_WHERE if conds else _RANKING), conds, quote, sup=sup, **slots)
    elif kind == "aggregate":
        if conds:
            templates = _AGG + (_SUM_EXTRA if agg == "SUM" else _AVG_EXTRA if agg == "AVG" else ())
        else:
            templates = _AGG_ALL
        text = _fill(rng, rng.choice(templates), conds, quote, w=rng.choice(_AGG_WORDS[agg]), **slots)
    else:
        raise ValueError(f"unknown question kind {kind!r}")
    return text.lower() if lowercase else text


_TINY_OP = {"<": "under", ">": "over"}
_TINY_AGG = {"SUM": "total", "MIN": "lowest", "MAX": "highest", "AVG": "average"}


def _tiny_select(rng, kind, target, conds, rows, key_value, number, direction, agg) -> str:
    where = " and ".join(f"{c} {v}" if op == "=" else f"{c} {_TINY_OP[op]} {v}" for c, op, v in conds)
    if kind == "other":
        if key_value is not None:
            return f"What is the {target} of {key_value}?"
        return f"Which {target} has {where}?"
    if kind == "comparison":
        return rng.choice((f"Which {target} has {where}?", f"List the {target} with {where}."))
    if kind == "count":
        return rng.choice((f"How many {rows[1]} have {where}?", f"Count the {rows[1]} with {where}."))
    if kind == "ranking":
        sup = "highest" if direction == "DESC" else "lowest"
        return f"Which {target} has the {sup} {number}?"
    if kind == "aggregate":
        tail = f" for {where}" if conds else ""
        return f"What is the {_TINY_AGG[agg]} {number}{tail}?"
    raise ValueError(f"the tiny style has no {kind!r} questions")


# -- INSERT and UPDATE --------------------------------------------------------------------------------


def _pairs(rng: random.Random, pairs: Sequence[tuple[str, str]], form: str, quote: bool) -> str:
    q = "'" if quote else ""
    parts = [form.format(c=c, v=f"{q}{v}{q}") for c, v in pairs]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + (", and " if rng.random() < 0.5 else " and ") + parts[-1]


def _said(rng: random.Random, says: Sequence[str], column: str, value: str) -> str:
    return rng.choice(says).format(v=value) if says else f"{column} {value}"


def insert_description(rng: random.Random, style: str, *, table: str, rows: tuple[str, str],
                       pairs: Sequence[tuple[str, str]], key: int, says: Sequence[Sequence[str]]) -> str:
    """An instruction to add one row: `pairs` (column, value) for every column, `key` the key's position."""
    if style == "tiny":
        rest = [(c, v) for i, (c, v) in enumerate(pairs) if i != key]
        return f"Add {pairs[key][1]} with {_pairs(rng, rest, '{c} {v}', False).replace(', and ', ' and ')}."
    key_column, key_value = pairs[key]
    rest = [(c, v) for i, (c, v) in enumerate(pairs) if i != key]
    quote = rng.random() < 0.3
    choice = rng.randrange(7)
    if choice == 0:
        return f"Add a new {rows[0]} to the {table} table: {_pairs(rng, pairs, '{c} is {v}', quote)}."
    if choice == 1:
        return f"Insert '{key_value}' into '{table}' with " + _pairs(rng, rest, "'{v}' for '{c}'", False) + "."
    if choice == 2:
        return f"Record a new {rows[0]} in {table} with {_pairs(rng, pairs, '{c} set to {v}', quote)}."
    if choice == 3:
        fields = "; ".join(f"{c}: {v}" for c, v in pairs)
        return f"Please add the following {rows[0]} to {table}. {fields}."
    if choice == 4:
        return f"There is a new entry for {table}, with " + _pairs(rng, pairs, "'{v}' under '{c}'", False) + "."
    if choice == 5:
        columns = ", ".join(c for c, _ in pairs)
        values = ", ".join(f"'{v}'" for _, v in pairs)
        return f"Insert a row into {table} with the values {values} for the columns {columns}."
    # A narrative sentence from each column's own phrase, key first.
    phrases = [_said(rng, says[key], key_column, key_value)]
    phrases += [_said(rng, says[i], c, v) for i, (c, v) in enumerate(pairs) if i != key]
    body = ", ".join(phrases[:-1]) + ", and " + phrases[-1] if len(phrases) > 1 else phrases[0]
    return f"A new {rows[0]} should be added to {table}: {body}."


def update_description(rng: random.Random, style: str, *, table: str, rows: tuple[str, str],
                       key: tuple[str, str], sets: Sequence[tuple[str, str]], says: Sequence[Sequence[str]],
                       key_says: Sequence[str]) -> str:
    """An instruction to change the row whose key column equals key[1]: `sets` (column, new value)."""
    key_column, key_value = key
    if style == "tiny":
        column, value = sets[0]
        return f"Set the {column} of {key_value} to {value}."
    quote = rng.random() < 0.3
    q = "'" if quote else ""
    choice = rng.randrange(7 if any(says) else 6)
    if choice == 0:
        return (f"Update the {_pairs(rng, sets, '{c} to {v}', quote)} for the {rows[0]} whose {key_column} is "
                f"{q}{key_value}{q}.")
    if choice == 1:
        return f"Change the {_pairs(rng, sets, '{c} to {v}', True)} for {key_value} in {table}."
    if choice == 2:
        return f"In {table}, set {_pairs(rng, sets, 'the {c} to {v}', quote)} where the {key_column} is {key_value}."
    if choice == 3:
        return f"Modify the row where {key_column} equals '{key_value}' so that " + _pairs(
            rng, sets, "its {c} becomes '{v}'", False) + "."
    if choice == 4:
        changes = _pairs(rng, sets, "its {c} should be {v}", quote)
        return f"Correct the entry for {key_value} in {table}: {changes}."
    if choice == 5:
        assignments = ", ".join(f"{c} = '{v}'" for c, v in sets)
        return f"Set {assignments} for the {rows[0]} with {key_column} {key_value} in the {table} table."
    phrases = [_said(rng, s, c, v) for (c, v), s in zip(sets, says)]
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    subject = _said(rng, key_says, key_column, key_value)
    return f"{table} is being updated so that the {rows[0]} {subject} is listed {body}."
