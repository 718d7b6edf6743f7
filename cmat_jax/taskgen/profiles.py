"""The task generator's profiles: table sizes, the cycle of task types and the phrasing style of each.

  dbbench  realistic tables (10-30 rows, 5-8 columns, headers with spaces and
           punctuation), half SELECT family and a quarter each INSERT and UPDATE,
           many phrasings; MIN/MAX/ranking cast text to numbers as MySQL needs.
  tiny     for the CPU demo's 2-layer model: 3-6 rows, 2-4 one-word columns,
           two-digit numbers (equal widths, so text order is number order and the
           gold SQL needs no casts), one or two phrasings per kind, 78% SELECT family,
           prompts of about 40-60 tokens (bundled tokenizer); one operation solves
           every task.
  lookup   the tiny tables with only lookups by key ('other') and counts by
           category ('counting'): the tasks of the embedded CMAT demo
           (configs/cmat_tiny.py), which a 2-layer model learns within minutes.
  hard     dbbench's tables, 15-30 rows, every table name in need of backquotes,
           up to three conditions, a cycle weighted to multi-condition UPDATEs,
           ranking and aggregations over casts: meant to be failed more often by a
           warm-started small model, so that sampled groups carry signal (not
           measured yet).
"""

from __future__ import annotations

import dataclasses

from cmat_jax.envs.sql.tasks import SELECT_TYPES
from cmat_jax.taskgen import domains
from cmat_jax.taskgen.tables import Domain

GENERATED_TYPES = SELECT_TYPES + ("INSERT", "UPDATE")  # every type DBBench has (it has no DELETE tasks)


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    domains: tuple[Domain, ...]
    rows: tuple[int, int]  # rows per table, inclusive
    columns: tuple[int, int] | None  # headers per table (None: each domain's own, some optional ones left out)
    cycle: tuple[str, ...]  # task types of one cycle; each cycle holds each entry once, in a seeded order
    style: str  # text.py style
    max_answers: int  # most values a SELECT-family answer may list
    max_conditions: int
    lowercase: float  # share of SELECT-family questions written in lower case, as WikiTQ's are
    snake_case: float  # share of table names written like identifiers (race_results)
    numeric_cast: bool  # MIN/MAX and ORDER BY cast text to numbers (tiny tables need not: equal widths)
    insert_columns: int | None = None  # fewer headers for INSERT tasks (their description lists every value)


PROFILES = {
    "dbbench": Profile(
        name="dbbench", domains=domains.DBBENCH_DOMAINS, rows=(10, 30), columns=None,
        cycle=("other", "other", "counting", "counting", "comparison", "comparison", "ranking", "ranking",
               "aggregation-SUM", "aggregation-MIN", "aggregation-MAX", "aggregation-AVG") + ("INSERT",) * 6
        + ("UPDATE",) * 6,
        style="dbbench", max_answers=8, max_conditions=2, lowercase=0.25, snake_case=0.2, numeric_cast=True,
    ),
    "tiny": Profile(
        name="tiny", domains=domains.TINY_DOMAINS, rows=(3, 6), columns=(2, 4),
        cycle=("other",) * 3 + ("counting",) * 3 + ("comparison",) * 2 + ("ranking",) * 2
        + ("aggregation-SUM", "aggregation-MIN", "aggregation-MAX", "aggregation-AVG") + ("INSERT",) * 2
        + ("UPDATE",) * 2,
        style="tiny", max_answers=3, max_conditions=1, lowercase=0.0, snake_case=0.0, numeric_cast=False,
        insert_columns=3,
    ),
    # The CPU demo's tasks (configs/cmat_tiny.py): tiny tables, and only the two question kinds a 2-layer,
    # d=64 model learns within minutes (a lookup by key, a count by category).
    "lookup": Profile(
        name="lookup", domains=domains.TINY_DOMAINS, rows=(3, 6), columns=(2, 4),
        cycle=("other", "counting"), style="tiny", max_answers=3, max_conditions=1, lowercase=0.0, snake_case=0.0,
        numeric_cast=False, insert_columns=3,
    ),
    # Meant to be harder than dbbench for a warm-started small model: no identifier-style table names (every
    # name needs backquotes, so an unquoted first statement errors), bigger tables, up to three conditions, and
    # a cycle weighted to multi-condition UPDATEs, ranking and aggregations over casts.
    "hard": Profile(
        name="hard", domains=domains.DBBENCH_DOMAINS, rows=(15, 30), columns=None,
        cycle=("other", "counting", "comparison", "comparison", "ranking", "ranking", "aggregation-SUM",
               "aggregation-MIN", "aggregation-MAX", "aggregation-AVG") + ("INSERT",) * 2 + ("UPDATE",) * 6,
        style="dbbench", max_answers=8, max_conditions=3, lowercase=0.25, snake_case=0.0, numeric_cast=True,
    ),
}  # fmt: skip
