"""Random Wikipedia-style tables for the task generator: domains, column kinds and the values in them.

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
The same draw from the same `random.Random` state always gives the same table.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Sequence

from cmat_jax.taskgen import vocab as V

ROLES = ("key", "text", "category", "number", "display")
NUMERIC_KINDS = ("int", "decimal")

# A value maker: (rng, count, earlier columns' values by spec index) -> `count` cells.
Maker = Callable[[random.Random, int, dict], list]


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


# -- value makers -------------------------------------------------------------------------------------


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


def _person(rng):
    return f"{rng.choice(V.FIRST_NAMES)} {rng.choice(V.SURNAMES)}"


def people_pool(size: int = 5) -> Maker:
    """A few people repeated across rows (drivers who win several rounds, directors of several episodes)."""

    def make(rng, n, _):
        pool = unique(_person)(rng, size, {})
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


PERSON = unique(_person)
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


def col(names: tuple[str, ...], make: Maker, role: str, *says: str, **options) -> ColumnSpec:
    """A non-number column; `says` are its narrative phrases."""
    return ColumnSpec(names, make, role, say=says, **options)


def num(names: tuple[str, ...], make: Maker, *says: str, kind: str = "int", **options) -> ColumnSpec:
    return ColumnSpec(names, make, "number", numeric=kind, say=says, **options)


# -- domains of the dbbench profile ---------------------------------------------------------------------

DBBENCH_DOMAINS = (
    Domain("club_season", ("{yr}–{yy} {club} season", "{club} results {yr}", "{club} fixtures {yr}–{yy}",
                           "{club} in the {yr}–{yy} {competition}"), ("match", "matches"), (
        col(("Date",), dates("dmy", 2001, 2001), "display", "on {v}", "played on {v}"),
        col(("Round", "Stage"), pick(V.ROUNDS), "category", "in the {v}", "a round of {v}", optional=True),
        col(("Opponent", "Opponents", "Opposition"), CLUB, "key", "against {v}", "with {v} as the opponent"),
        col(("H / A", "Venue", "H/A"), pick(V.VENUE_SIDES), "category", "with venue code {v}"),
        col(("Result F–A", "Score", "Result"), football_scores, "display", "ending {v}", "with a score of {v}"),
        num(("Attendance", "Att.", "Crowd"), ints(1200, 68000), "in front of {v} spectators",
            "with an attendance of {v}", comma=True),
        col(("Competition",), pick(V.COMPETITIONS), "category", "in a {v} match", optional=True),
    )),
    Domain("gridiron_season", ("{yr} {team} season", "{team} {yr} schedule", "{yr} {team} game log"),
           ("game", "games"), (
        num(("Week", "Game"), sequence, "in week {v}", "as game {v}", sequence=True),
        col(("Date",), dates("mdy", 1997, 1997), "display", "on {v}"),
        col(("Opponent",), TEAM, "key", "against the {v}", "versus {v}"),
        col(("Result", "Final score"), gridiron_results, "display", "with a result of {v}", "finishing {v}"),
        col(("Game site", "Stadium"), pick(tuple(f"{s} Stadium" for s in V.SURNAMES)), "text", "at {v}",
            optional=True),
        col(("TV", "Network"), pick(V.TV_NETWORKS), "category", "broadcast on {v}", optional=True),
        num(("Attendance",), ints(31000, 82000), "before a crowd of {v}", comma=True),
    )),
    Domain("election", ("{state} House elections {yr}", "United States House elections in {state}, {yr}",
                        "{yr} {state} state legislative elections"), ("district", "districts"), (
        col(("District",), unique(lambda rng: f"District {rng.randint(1, 40)}"), "key", "for {v}"),
        col(("Incumbent", "Member"), PERSON, "text", "held by {v}", "whose incumbent is {v}"),
        col(("Party",), few(V.PARTIES, 2, 4), "category", "of the {v} party", "representing the {v} party"),
        num(("First elected", "Elected"), years(1966, 2008), "first elected in {v}", measure=False),
        col(("Result", "Outcome"), few(V.ELECTION_RESULTS, 2, 4), "category", "with the outcome {v}"),
        num(("Votes", "Votes cast"), ints(18000, 260000), "receiving {v} votes", comma=True),
        num(("Vote %", "Share (%)"), decimals(20, 80, 1), "a vote share of {v}", kind="decimal", measure=False),
    )),
    Domain("filmography", ("{person} filmography", "Films distributed by {studio}", "{studio} releases {yr}–{yy}"),
           ("film", "films"), (
        num(("Year", "Release year"), years(1972, 2019), "released in {v}", measure=False),
        col(("Title", "Film"), TITLE, "key", "titled {v}", "called {v}"),
        col(("Director", "Directed by"), people_pool(6), "text", "directed by {v}"),
        col(("Studio", "Distributor"), few(V.FILM_STUDIOS, 2, 4), "category", "from {v}", "distributed by {v}"),
        col(("Genre",), few(V.GENRES, 2, 4), "category", "in the {v} genre", "a {v} title", optional=True),
        num(("Gross ($m)", "Box office (millions)"), decimals(0.5, 480, 1), "grossing {v} million", kind="decimal"),
        num(("Runtime (min)", "Length (min.)"), ints(78, 185), "running {v} minutes", optional=True),
    )),
    Domain("singles", ("{person} discography", "{person} singles", "Singles of {label} {yr}"),
           ("single", "singles"), (
        num(("Year",), years(1981, 2015, ordered=True), "from {v}", "released in {v}", measure=False),
        col(("Single", "Title", "Song"), QUOTED_TITLE, "key", "the single {v}", "titled {v}"),
        num(("Peak position", "Highest pos.", "Chart peak"), ints(1, 99), "peaking at number {v}",
            "with a peak position of {v}", measure=False),
        num(("Weeks on chart", "Weeks charted"), ints(1, 40), "charting for {v} weeks"),
        col(("Album",), TITLE, "text", "from the album {v}", "on {v}"),
        col(("Label", "Record label"), few(V.RECORD_LABELS, 2, 3), "category", "on the {v} label", optional=True),
    )),
    Domain("ships", ("{ship_word}-class destroyers", "Ships built by {yard}", "{ship_word}-class frigates"),
           ("ship", "ships"), (
        col(("Ship", "Name"), SHIP, "key", "named {v}", "the {v}"),
        col(("Hull number", "Pennant"), HULL, "display", "with hull number {v}", "pennant {v}", optional=True),
        col(("Builder", "Shipyard"), few(V.SHIPYARDS, 2, 4), "category", "built by {v}"),
        col(("Laid down",), dates("mdy", 1939, 1941), "display", "laid down on {v}"),
        col(("Launched",), dates("mdy", 1942, 1943), "display", "launched on {v}"),
        num(("Tonnage (GRT)", "Tonnage", "Displacement (tons)"), ints(900, 41000), "of {v} tons", comma=True),
        col(("Fate", "Status"), few(V.SHIP_FATES, 2, 4), "category", "with the fate {v}", "whose fate was {v}"),
    )),
    Domain("schools", ("High schools in {city}", "{state} high school athletics", "Schools of the {city} district"),
           ("school", "schools"), (
        col(("School", "School name"), SCHOOL, "key", "named {v}"),
        col(("Location", "City", "Town"), few(V.CITIES, 2, 5), "category", "located in {v}", "in {v}"),
        num(("Enrollment", "Students"), ints(180, 3400), "with {v} students", comma=True),
        num(("Founded", "Year founded"), years(1858, 2006), "founded in {v}", measure=False),
        col(("Mascot", "Nickname"), pick(V.MASCOTS), "text", "whose mascot is the {v}", "nicknamed the {v}"),
        col(("Type",), few(V.SCHOOL_TYPES, 2, 3), "category", "a {v} school"),
        col(("Division", "Class"), few(V.SCHOOL_DIVISIONS, 2, 4), "category", "in division {v}", optional=True),
    )),
    Domain("medal_table", ("{yr} {city} Games medal table", "Medal count at the {yr} {city} championships",
                           "{city} {yr} medal standings"), ("nation", "nations"), (
        num(("Rank",), sequence, "ranked {v}", sequence=True),
        col(("Nation", "Country", "NOC"), COUNTRY, "key", "for {v}"),
        num(("Gold",), ints(0, 14), "{v} gold medals"),
        num(("Silver",), ints(0, 12), "{v} silver"),
        num(("Bronze",), ints(0, 12), "{v} bronze"),
        num(("Total",), medal_totals(2, 3, 4), "{v} in total"),
    ), order_by=5),
    Domain("racing", ("{yr} {country} Touring Car season", "{yr} Formula {letter} season",
                      "{yr} {country} GT Championship"), ("round", "rounds"), (
        num(("Round", "Rd."), sequence, "as round {v}", sequence=True),
        col(("Circuit", "Track"), CIRCUIT, "key", "at {v}"),
        col(("Date",), dates("dmy", 2008, 2008), "display", "on {v}"),
        col(("Pole position", "Pole Position"), people_pool(4), "text", "with {v} on pole"),
        col(("Fastest lap",), people_pool(4), "text", "with the fastest lap by {v}"),
        col(("Winning driver", "Winner"), people_pool(4), "category", "won by {v}"),
        col(("Winning team",), few(tuple(f"Team {s}" for s in V.SURNAMES[:20]), 2, 4), "category",
            "for the winning team {v}", optional=True),
        num(("Laps",), ints(24, 78), "over {v} laps", optional=True),
    )),
    Domain("squad", ("{club} squad {yr}–{yy}", "{yr}–{yy} {club} player statistics", "{club} players {yr}"),
           ("player", "players"), (
        col(("Player", "Name"), PERSON, "key", "for {v}", "named {v}"),
        col(("Position", "Pos."), pick(V.FOOTBALL_POSITIONS), "category", "playing as a {v}"),
        col(("Nationality", "Nat."), few(V.COUNTRIES, 3, 5), "category", "from {v}"),
        num(("Apps", "Games played", "Games"), ints(1, 46), "with {v} appearances"),
        num(("Goals",), ints(0, 24), "scoring {v} goals"),
        num(("Assists",), ints(0, 15), "with {v} assists", optional=True),
        col(("Fee", "Signing fee"), FEE, "display", "signed for {v}", optional=True),
    )),
    Domain("tv_episodes", ("List of {show} episodes", "{show} (season {small})", "{show} episode guide"),
           ("episode", "episodes"), (
        num(("No. in series", "No.", "Episode #"), sequence, "as episode {v}", sequence=True),
        col(("Title", "Episode title"), QUOTED_TITLE, "key", "titled {v}", "called {v}"),
        col(("Directed by", "Director"), people_pool(4), "text", "directed by {v}"),
        col(("Written by", "Writer"), people_pool(5), "text", "written by {v}"),
        col(("Original air date", "Air date"), dates("mdy", 2011, 2011), "display", "first aired on {v}"),
        num(("U.S. viewers (millions)", "Viewers (millions)"), decimals(1, 24, 2), "watched by {v} million viewers",
            kind="decimal"),
    )),
    Domain("buildings", ("Tallest buildings in {city}", "{city} skyline", "Skyscrapers of {city}"),
           ("building", "buildings"), (
        num(("Rank",), sequence, "ranked {v}", sequence=True),
        col(("Name", "Building"), BUILDING, "key", "called {v}", "named {v}"),
        num(("Height ft", "Height (ft)"), ints(320, 1450), "standing {v} feet tall"),
        num(("Floors", "Stories"), ints(18, 104), "with {v} floors"),
        num(("Year", "Completed"), years(1924, 2021), "completed in {v}", measure=False),
        col(("Use", "Primary use"), few(V.BUILDING_USES, 2, 4), "category", "used as {v}", optional=True),
    ), order_by=2),
    Domain("radio", ("Radio stations in {state}", "{city} area radio stations", "FM translators in {state}"),
           ("station", "stations"), (
        col(("Call sign", "Callsign"), CALLSIGN, "key", "with call sign {v}", "called {v}"),
        num(("Frequency MHz", "Frequency"), decimals(88.1, 107.9, 1), "on {v} MHz", kind="decimal", measure=False),
        col(("City of license", "City"), few(V.CITIES, 2, 5), "category", "licensed to {v}"),
        num(("ERP W", "Power (W)"), ints(10, 100000), "with an ERP of {v} watts"),
        col(("Class",), few(V.STATION_CLASSES, 2, 4), "category", "in class {v}"),
        col(("Format",), few(V.STATION_FORMATS, 2, 4), "category", "playing {v}", optional=True),
    )),
    Domain("tennis_finals", ("{person} career finals", "{person} singles titles", "{person} tournament record"),
           ("final", "finals"), (
        col(("Outcome",), pick(V.OUTCOMES), "category", "as {v}"),
        num(("Year", "Season"), years(1992, 2016), "in {v}", measure=False),
        col(("Tournament", "Championship"), TOURNAMENT, "key", "at the {v}"),
        col(("Surface",), few(V.SURFACES, 2, 3), "category", "on {v} courts", "on a {v} court"),
        col(("Opponent in the final", "Opponent"), people_pool(6), "text", "against {v}"),
        col(("Score in the final", "Score"), tennis_scores, "display", "with a score of {v}"),
    )),
    Domain("peaks", ("Highest peaks of the {range}", "Mountains of {country}", "Summits in the {range}"),
           ("peak", "peaks"), (
        col(("Peak", "Mountain"), PEAK, "key", "named {v}"),
        num(("Elevation (m)", "Height (m)"), ints(1200, 4800), "rising to {v} metres"),
        num(("Prominence (m)",), ints(90, 2600), "with {v} metres of prominence"),
        col(("Range", "Mountain range"), few(V.MOUNTAIN_RANGES, 2, 3), "category", "in the {v} range"),
        col(("Region", "Country"), few(V.COUNTRIES, 2, 3), "category", "in the country {v}", optional=True),
        num(("First ascent",), years(1786, 1988), "first climbed in {v}", measure=False),
    ), order_by=1),
    Domain("team_seasons", ("{team} seasons", "{team} year-by-year record", "List of {team} seasons"),
           ("season", "seasons"), (
        col(("Season", "Year"), years(1960, 2015, distinct=True, ordered=True), "key", "for the {v} season"),
        col(("League", "Division"), few(("Eastern League", "Western League", "Pacific League", "Central League",
                                         "Northern League"), 2, 3), "category", "in the {v}"),
        num(("Wins", "W"), ints(38, 101), "with {v} wins"),
        num(("Losses", "L"), ints(40, 104), "with {v} losses"),
        col(("Finish", "Place"), ordinals, "display", "finishing {v}"),
        col(("Manager",), people_pool(4), "text", "managed by {v}"),
        col(("Playoffs", "Postseason"), few(("Did not qualify", "Lost semifinal", "Lost final", "Won title"), 2, 4),
            "category", "with a postseason result of {v}", optional=True),
    )),
)

# -- domains of the tiny profile: short one-word headers, two-digit numbers (text order = number order) ---

TINY_DOMAINS = (
    Domain("tiny_players", ("Players",), ("player", "players"), (
        col(("Name",), unique(lambda rng: rng.choice(V.TINY_NAMES)), "key"),
        col(("Team",), few(V.TINY_COLORS, 2, 3), "category"),
        num(("Goals",), ints(10, 99), optional=True),
        num(("Age",), ints(18, 39), optional=True),
    )),
    Domain("tiny_songs", ("Songs",), ("song", "songs"), (
        col(("Title",), unique(lambda rng: rng.choice(V.TINY_TITLES)), "key"),
        col(("Genre",), few(V.TINY_GENRES, 2, 3), "category"),
        num(("Plays",), ints(10, 99), optional=True),
        num(("Year",), years(1990, 2019), optional=True, measure=False),
    )),
    Domain("tiny_ships", ("Ships",), ("ship", "ships"), (
        col(("Ship",), unique(lambda rng: rng.choice(V.TINY_SHIPS)), "key"),
        col(("Port",), few(V.TINY_CITIES, 2, 3), "category"),
        num(("Crew",), ints(10, 99), optional=True),
        num(("Guns",), ints(10, 60), optional=True),
    )),
    Domain("tiny_towns", ("Towns",), ("town", "towns"), (
        col(("Town",), unique(lambda rng: rng.choice(V.TINY_CITIES)), "key"),
        col(("Zone",), few(V.TINY_COLORS, 2, 3), "category"),
        num(("Shops",), ints(10, 99), optional=True),
        num(("Parks",), ints(10, 40), optional=True),
    )),
    Domain("tiny_racers", ("Racers",), ("racer", "racers"), (
        col(("Name",), unique(lambda rng: rng.choice(V.TINY_NAMES)), "key"),
        col(("Car",), few(V.TINY_COLORS, 2, 3), "category"),
        num(("Laps",), ints(10, 99), optional=True),
        num(("Wins",), ints(10, 30), optional=True),
    )),
)


# -- drawing a table ----------------------------------------------------------------------------------


def _name_slots(rng: random.Random) -> dict[str, str]:
    year = rng.randint(1958, 2016)
    return {
        "yr": str(year), "yy": f"{(year + 1) % 100:02d}", "club": CLUB(rng, 1, {})[0], "team": TEAM(rng, 1, {})[0],
        "person": _person(rng), "state": rng.choice(V.US_STATES), "city": rng.choice(V.CITIES),
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
