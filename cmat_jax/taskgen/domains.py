"""The kinds of table the task generator draws: the dbbench profile's Wikipedia-style domains and the tiny ones.

Each `Domain` (tables.py) names its table templates, what a row is called and its
columns; each column spec lists its header variants, the maker of its cells
(values.py), its role and, for INSERT/UPDATE descriptions, its narrative phrases.
`DBBENCH_DOMAINS`: 16 kinds (club seasons, NFL schedules, elections, filmographies,
...), headers with spaces and punctuation. `TINY_DOMAINS`: short one-word headers and
two-digit numbers, so text order is number order.
"""

from __future__ import annotations

from cmat_jax.taskgen import vocab as V
from cmat_jax.taskgen.tables import ColumnSpec, Domain
from cmat_jax.taskgen.values import (BUILDING, CALLSIGN, CIRCUIT, CLUB, COUNTRY, FEE, HULL, Maker, PEAK, PERSON,
                                     QUOTED_TITLE, SCHOOL, SHIP, TEAM, TITLE, TOURNAMENT, dates, decimals, few,
                                     football_scores, gridiron_results, ints, medal_totals, ordinals, people_pool,
                                     pick, sequence, tennis_scores, unique, years)


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
