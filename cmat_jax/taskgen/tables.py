"""Random Wikipedia-style tables for the task generator: what a domain, a column and a table are, and the draw.

A `Domain` describes one kind of table (a club's season, an election, a filmography,
...): name templates, what a row is called, and its columns. `make_table(rng, domain,
n_rows)` draws one table: a name, a header per column (each column has a few variants,
such as "Attendance" / "Att." / "Crowd"), `n_rows` rows of text cells and one spare row
drawn the same way, which INSERT and UPDATE tasks use for new values (its key is new).

Every cell is text, as DBBench creates every column as TEXT. Column roles say what a
question may do with a column:
  key       unique per table; names a row (lookups, UPDATE's WHERE)
  text      free text (a director, a mascot)
  category  few distinct values, repeated (a party, a surface): filters and counts
  number    a plain number ("17", "107.7", "1994"), so MySQL reads it as written in
            numeric contexts: comparisons, SUM/AVG/MIN/MAX, ordering
  display   formatted text ("August 15, 2000", "2–1", "W 27–20", "5,200"): looked up
            and written, never used as a number (MySQL would read "5,200" as 5)
The same draw from the same `random.Random` state always gives the same table. The
domains themselves: domains.py; the makers of their cells: values.py.
"""

from __future__ import annotations

import dataclasses
import random

from cmat_jax.taskgen import vocab as V
from cmat_jax.taskgen.values import CLUB, TEAM, Maker, person

ROLES = ("key", "text", "category", "number", "display")
NUMERIC_KINDS = ("int", "decimal")


@dataclasses.dataclass(frozen=True)
class ColumnSpec:
    names: tuple[str, ...]  # header variants; one is drawn per table
    make: Maker
    role: str
    numeric: str | None = None  # "int" or "decimal" for number columns
    say: tuple[str, ...] = ()  # narrative phrases with a {v} slot, for INSERT/UPDATE descriptions
    optional: bool = False  # a table may leave it out
    comma: bool = False  # an int column some tables print with thousands separators (then display)
    sequence: bool = False  # 1, 2, 3, ... in row order (Week, Round, Rank)
    measure: bool = True  # a quantity worth summing or averaging (not a year, a frequency or a position)

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"column role must be one of {ROLES}, found {self.role!r}")
        if self.numeric not in (None,) + NUMERIC_KINDS or (self.role == "number") != (self.numeric is not None):
            raise ValueError(f"column {self.names[0]!r}: number columns need numeric='int' or 'decimal'")


@dataclasses.dataclass(frozen=True)
class Domain:
    name: str
    table_names: tuple[str, ...]  # templates over the slots of `_name_slots`
    row_noun: tuple[str, str]  # singular, plural
    columns: tuple[ColumnSpec, ...]
    order_by: int | None = None  # spec index of a number column the rows are sorted by, descending

    def __post_init__(self):
        seen: dict[str, int] = {}
        for i, spec in enumerate(self.columns):
            for name in spec.names:  # MySQL refuses a table whose headers repeat (ignoring case)
                if seen.setdefault(name.casefold(), i) != i:
                    raise ValueError(f"domain {self.name}: header {name!r} is a variant of two columns")
        if [spec.role for spec in self.columns].count("key") != 1:
            raise ValueError(f"domain {self.name}: needs exactly one key column")


@dataclasses.dataclass(frozen=True)
class Column:
    """A column as one table has it."""

    name: str
    role: str
    numeric: str | None
    say: tuple[str, ...]
    sequence: bool = False
    measure: bool = True


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    row_noun: tuple[str, str]
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    spare: tuple[str, ...]  # a further row drawn like the others, not in the table

    def index(self, column: Column) -> int:
        return self.columns.index(column)

    def values(self, column: Column) -> list[str]:
        i = self.index(column)
        return [row[i] for row in self.rows]

    @property
    def key(self) -> Column:
        return next(c for c in self.columns if c.role == "key")


# -- drawing a table ----------------------------------------------------------------------------------


def _name_slots(rng: random.Random) -> dict[str, str]:
    year = rng.randint(1958, 2016)
    return {
        "yr": str(year), "yy": f"{(year + 1) % 100:02d}", "club": CLUB(rng, 1, {})[0], "team": TEAM(rng, 1, {})[0],
        "person": person(rng), "state": rng.choice(V.US_STATES), "city": rng.choice(V.CITIES),
        "country": rng.choice(V.COUNTRIES), "studio": rng.choice(V.FILM_STUDIOS),
        "label": rng.choice(V.RECORD_LABELS), "yard": rng.choice(V.SHIPYARDS),
        "ship_word": rng.choice(V.SHIP_NAMES), "range": rng.choice(V.MOUNTAIN_RANGES),
        "show": f"The {rng.choice(V.ADJECTIVES)} {rng.choice(V.NOUNS)}", "small": str(rng.randint(1, 9)),
        "letter": rng.choice(("Two", "Three", "Four", "Ford")), "competition": rng.choice(("league", "cup")),
    }  # fmt: skip


def _table_name(rng: random.Random, domain: Domain, snake_case: float) -> str:
    name = rng.choice(domain.table_names).format(**_name_slots(rng))
    if rng.random() < snake_case:  # some DBBench tables are named like identifiers: race_results
        words = name.replace("–", " ").split()
        name = "_".join(w for w in ("".join(ch for ch in word if ch.isalnum()) for word in words) if w)
    return name[:64].rstrip()


def make_table(rng: random.Random, domain: Domain, n_rows: int, columns: int | None = None,
               snake_case: float = 0.0) -> Table:
    """One table of `domain` with `n_rows` rows (plus the spare row); `columns` caps the header count."""
    specs = list(domain.columns)
    optional = [i for i, spec in enumerate(specs) if spec.optional]
    keep = set(range(len(specs)))
    if columns is None:  # leave out some optional columns
        keep -= {i for i in optional if rng.random() < 0.4}
    else:
        # The key and the first category always stay; fill up to `columns` with the rest in a random choice.
        required = [i for i, spec in enumerate(specs) if spec.role in ("key", "category")][:2]
        others = [i for i in range(len(specs)) if i not in required]
        keep = set(required) | set(rng.sample(others, max(0, min(len(others), columns - len(required)))))
    total = n_rows + 1
    values: dict[int, list] = {}
    for i, spec in enumerate(specs):
        values[i] = spec.make(rng, total, values)
    order = list(range(total))
    if domain.order_by is not None:
        order.sort(key=lambda r: -float(values[domain.order_by][r]))
    for i, spec in enumerate(specs):
        if spec.sequence:
            for position, r in enumerate(order):
                values[i][r] = str(position + 1)
    kept = sorted(keep)
    header, cols = [], []
    for i in kept:
        spec = specs[i]
        comma = spec.comma and rng.random() < 0.5
        role = "display" if comma else spec.role
        header.append(rng.choice(spec.names))
        cols.append(Column(header[-1], role, None if comma else spec.numeric, spec.say, spec.sequence,
                           spec.measure and not spec.sequence))
        if comma:
            values[i] = [f"{int(v):,}" for v in values[i]]
    rows = [tuple(values[i][r] for i in kept) for r in order]
    # The spare row of a ranked table is its last (a new row joins at the bottom); of any other table a
    # random one, so that new rows are not always the latest date or the next week.
    spare = rows.pop(total - 1 if domain.order_by is not None else rng.randrange(total))
    return Table(_table_name(rng, domain, snake_case), domain.row_noun, tuple(cols), tuple(rows), spare)
