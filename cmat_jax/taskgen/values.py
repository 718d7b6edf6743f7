"""Value makers for the task generator's tables: each draws one column's cells (names, numbers, dates, scores).

A `Maker` takes (rng, count, the earlier columns' values by spec index) and returns
`count` cells, all text, as DBBench stores every column as TEXT. The makers are built
from the word lists of vocab.py; `unique` draws values distinct also under MySQL's
case- and accent-blind collation, so a key column names one row. The same draws from
the same `random.Random` state always give the same cells.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from cmat_jax.taskgen import vocab as V

# A value maker: (rng, count, earlier columns' values by spec index) -> `count` cells.
Maker = Callable[[random.Random, int, dict], list]


def pick(pool: Sequence[str]) -> Maker:
    return lambda rng, n, _: [rng.choice(pool) for _ in range(n)]


def few(pool: Sequence[str], lo: int = 2, hi: int = 4) -> Maker:
    """Repeated values from a small random subset of `pool` (a category with lo..hi members)."""

    def make(rng, n, _):
        members = rng.sample(list(pool), min(len(pool), rng.randint(lo, hi)))
        return [rng.choice(members) for _ in range(n)]

    return make


def unique(draw: Callable[[random.Random], str]) -> Maker:
    """`n` distinct values of `draw` (distinct also under MySQL's case- and accent-blind collation)."""

    def make(rng, n, _):
        seen, values = set(), []
        for _ in range(200 * n):
            value = draw(rng)
            if value.casefold() not in seen:
                seen.add(value.casefold())
                values.append(value)
                if len(values) == n:
                    return values
        raise ValueError(f"cannot draw {n} distinct values from this column's vocabulary; lower the row count")

    return make


def ints(lo: int, hi: int) -> Maker:
    return lambda rng, n, _: [str(rng.randint(lo, hi)) for _ in range(n)]


def decimals(lo: float, hi: float, places: int) -> Maker:
    scale = 10**places
    return lambda rng, n, _: [f"{rng.randint(int(lo * scale), int(hi * scale)) / scale:.{places}f}" for _ in range(n)]


def years(lo: int, hi: int, distinct: bool = False, ordered: bool = False) -> Maker:
    def make(rng, n, _):
        values = rng.sample(range(lo, hi + 1), n) if distinct else [rng.randint(lo, hi) for _ in range(n)]
        return [str(v) for v in (sorted(values) if ordered else values)]

    return make


def dates(style: str, lo: int, hi: int, ordered: bool = True) -> Maker:
    """Dates in one season or span, as Wikipedia writes them: 'August 15, 2000', '15 August 2000', '2000-08-15'."""

    def make(rng, n, _):
        days = sorted(rng.sample(range((hi - lo + 1) * 336), n)) if ordered else [
            rng.randrange((hi - lo + 1) * 336) for _ in range(n)]
        out = []
        for day in days:
            year, rest = lo + day // 336, day % 336
            month, dom = rest // 28 + 1, rest % 28 + 1
            name = V.MONTHS[month - 1]
            if style == "mdy":
                out.append(f"{name} {dom}, {year}")
            elif style == "dmy":
                out.append(f"{dom} {name} {year}")
            else:
                out.append(f"{year}-{month:02d}-{dom:02d}")
        return out

    return make


def football_scores(rng, n, _):
    return [f"{rng.randint(0, 4)}–{rng.randint(0, 3)}" for _ in range(n)]


def gridiron_results(rng, n, _):
    out = []
    for _ in range(n):
        a, b = rng.randint(3, 45), rng.randint(0, 42)
        if a == b:
            a += 3
        out.append(f"{'W' if a > b else 'L'} {a}–{b}")
    return out


def tennis_scores(rng, n, _):
    sets = [("6", "3"), ("6", "4"), ("7", "5"), ("6", "2"), ("3", "6"), ("4", "6"), ("7", "6"), ("6", "1")]
    return [", ".join("–".join(rng.choice(sets)) for _ in range(rng.randint(2, 3))) for _ in range(n)]


def ordinals(rng, n, _):
    def ordinal(k):
        return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"

    return [ordinal(rng.randint(1, 8)) for _ in range(n)]


def medal_totals(*columns: int) -> Maker:
    return lambda rng, n, earlier: [str(sum(int(earlier[c][i]) for c in columns)) for i in range(n)]


def person(rng):
    return f"{rng.choice(V.FIRST_NAMES)} {rng.choice(V.SURNAMES)}"


def people_pool(size: int = 5) -> Maker:
    """A few people repeated across rows (drivers who win several rounds, directors of several episodes)."""

    def make(rng, n, _):
        pool = unique(person)(rng, size, {})
        return [rng.choice(pool) for _ in range(n)]

    return make


def _title(rng):
    adjective, noun, other = rng.choice(V.ADJECTIVES), rng.choice(V.NOUNS), rng.choice(V.NOUNS)
    return rng.choice((f"The {adjective} {noun}", f"{adjective} {noun}", f"{noun} of the {adjective} {other}",
                       f"{adjective} {noun}s", f"The {noun}"))


def _code(rng, letters: str = "ABCDEFGHJKLMNPRSTVWXYZ", size: int = 3):
    return "".join(rng.choice(letters) for _ in range(size))


def _callsign(rng):
    return rng.choice("KW") + _code(rng, size=rng.choice((2, 3)))


PERSON = unique(person)
TEAM = unique(lambda rng: f"{rng.choice(V.CITIES)} {rng.choice(V.MASCOTS)}")
CLUB = unique(lambda rng: f"{rng.choice(V.CITIES)} {rng.choice(V.CLUB_SUFFIXES)}")
TITLE = unique(_title)
QUOTED_TITLE = unique(lambda rng: f'"{_title(rng)}"')
SHIP = unique(lambda rng: f"{rng.choice(V.SHIP_PREFIXES)} {rng.choice(V.SHIP_NAMES)}")
SCHOOL = unique(lambda rng: f"{rng.choice(V.SURNAMES + V.CITIES)} {rng.choice(V.SCHOOL_KINDS)}")
COUNTRY = unique(lambda rng: rng.choice(V.COUNTRIES))
CIRCUIT = unique(lambda rng: f"{rng.choice(V.CITIES)} {rng.choice(V.CIRCUIT_WORDS)}")
TOURNAMENT = unique(lambda rng: f"{rng.choice(V.CITIES)} {rng.choice(V.TOURNAMENT_WORDS)}")
PEAK = unique(lambda rng: rng.choice((f"Mount {rng.choice(V.SURNAMES)}", f"{rng.choice(V.ADJECTIVES)} Peak",
                                      f"{rng.choice(V.NOUNS)} Peak", f"{rng.choice(V.SURNAMES)} Dome")))
BUILDING = unique(lambda rng: rng.choice((f"{rng.choice(V.NOUNS)} Tower", f"{rng.choice(V.SURNAMES)} Center",
                                          f"One {rng.choice(V.NOUNS)} Plaza", f"{rng.choice(V.CITIES)} Trust")))
CALLSIGN = unique(_callsign)
HULL = unique(lambda rng: f"{rng.choice(('DD', 'FF', 'CL', 'DE'))}-{rng.randint(100, 999)}")
FEE = pick(tuple(f"£{m / 2:g}m" for m in range(1, 40)))


def sequence(rng, n, _):  # placeholder: sequence columns are numbered after the rows are ordered
    return [""] * n
