"""A seeded generator of DBBench-style training tasks, checked by the project's own SQL environment.

    tasks = generate_tasks(n=500, seed=0, profile="dbbench")    # list[SqlTask], no files
    write_tasks("train.jsonl", n=500, seed=0, profile="tiny")  # the JSONL that load_tasks reads

Each task is one freshly drawn Wikipedia-style table (tables.py, domains.py), one question
or change request in words (text.py) and its gold SQL in MySQL's dialect. The
label is what the environment gives for that SQL: for the SELECT family the values
in the result the agent would see after running the gold query (`sql.query`); for
INSERT and UPDATE, `answer_md5` is the environment's own table hash after the gold
statement ran, exactly as grading computes it at the end of an episode. Every label
is also computed independently in Python from the task's meaning (filters, numeric
order, sums), and the two must agree. A draft whose answer would be empty, tied (a
ranking with two tops), longer than the result DBBench shows, or a number with more
than two decimals is dropped and redrawn; a disagreement is a bug and raises.

Determinism: task i of (profile, seed) depends only on those three values: the same
call gives the same tasks (and `write_tasks` the same bytes), and a shorter run is a
prefix of a longer one. Task types follow the profile's cycle, shuffled per cycle, so
every type appears in each run of `len(cycle)` tasks. Task ids are
"gen-<profile>-<seed>-<i>".

Profiles (dbbench, tiny, lookup, hard): profiles.py. Several joined by '+' ("dbbench+hard")
interleave their tasks (`mixture`). The generator's parts: a table
(tables.py), a draft of each task type (drafts.py), its label from the environment
(labels.py).
"""

from __future__ import annotations

import json
import os
import random

from cmat_jax.envs.sql.tasks import SqlTask, parse_task
from cmat_jax.fileio import atomic_write
from cmat_jax.taskgen import drafts, labels, tables
from cmat_jax.taskgen.labels import GeneratorError
from cmat_jax.taskgen.profiles import PROFILES, Profile
from cmat_jax.taskgen.tables import Table

_MAX_ATTEMPTS = 200  # drafts per task before giving up (a profile that needs more is broken)

# Types whose question needs a number column.
_NUMERIC_TYPES = ("comparison", "ranking", "aggregation-SUM", "aggregation-MIN", "aggregation-MAX",
                  "aggregation-AVG")


def task_id(profile: str, seed: int, index: int) -> str:
    return f"gen-{profile}-{seed}-{index}"


_DRAFTERS = {
    "other": drafts.draft_other,
    "counting": drafts.draft_counting,
    "comparison": drafts.draft_comparison,
    "ranking": drafts.draft_ranking,
    "aggregation-SUM": drafts.draft_aggregate("SUM"),
    "aggregation-MIN": drafts.draft_aggregate("MIN"),
    "aggregation-MAX": drafts.draft_aggregate("MAX"),
    "aggregation-AVG": drafts.draft_aggregate("AVG"),
    "INSERT": drafts.draft_insert,
    "UPDATE": drafts.draft_update,
}


# -- the public API ------------------------------------------------------------------------------------------


def _profile(profile: str) -> Profile:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, found {profile!r}")
    return PROFILES[profile]


def mixture(profile: str) -> list[str]:
    """The profiles a name draws from: "dbbench" is one, "dbbench+hard" two, interleaved (task i of the
    mixture is task i // k of its (i % k)-th profile, so every prefix holds each profile's share)."""
    names = profile.split("+")
    for name in names:
        if name not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, or several joined by '+' "
                             f"(e.g. dbbench+hard), found {profile!r}")
    if len(set(names)) < len(names):
        raise ValueError(f"profile {profile!r} names a profile twice; name each once")
    return names


def _members(n: int, seed: int, profile: str) -> list[tuple[str, int]]:
    """(profile, index) of each of the first `n` tasks of `profile` (see `mixture`)."""
    _check_args(n, seed)
    names = mixture(profile)
    return [(names[i % len(names)], i // len(names)) for i in range(n)]


def _check_args(n: int, seed: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of tasks), found {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, found {seed!r}")


def task_type_at(profile: Profile, seed: int, index: int) -> str:
    """Task i's type: position i % len(cycle) of cycle i // len(cycle), each cycle shuffled by its own seed."""
    cycle = list(profile.cycle)
    random.Random(f"gen-{profile.name}-{seed}-cycle-{index // len(cycle)}").shuffle(cycle)
    return cycle[index % len(cycle)]


def _draw_table(rng: random.Random, profile: Profile, task_type: str) -> Table:
    domain = rng.choice(profile.domains)
    n_rows = rng.randint(*profile.rows)
    columns = None
    if profile.columns is not None:
        low, high = profile.columns
        if task_type == "INSERT" and profile.insert_columns is not None:
            high = min(high, profile.insert_columns)
        columns = rng.randint(max(low, 3) if task_type in _NUMERIC_TYPES else low, high)
    return tables.make_table(rng, domain, n_rows, columns=columns, snake_case=profile.snake_case)


def generate_record(profile: str, seed: int, index: int) -> dict:
    """Task `index` of (profile, seed) as a DBBench JSON record."""
    spec = _profile(profile)
    where = task_id(profile, seed, index)
    task_type = task_type_at(spec, seed, index)
    rng = random.Random(where)  # string seeds hash with SHA-512: stable across runs and platforms
    for _ in range(_MAX_ATTEMPTS):
        table = _draw_table(rng, spec, task_type)
        draft = _DRAFTERS[task_type](rng, table, spec)
        if draft is not None:
            record = labels.execute(draft, table, where)
            if record is not None:
                return record
    raise GeneratorError(f"{where}: no valid {task_type} task in {_MAX_ATTEMPTS} draws; the profile cannot "
                         f"make this type")


def generate_records(n: int, seed: int, profile: str = "dbbench") -> list[dict]:
    return [generate_record(name, seed, i) for name, i in _members(n, seed, profile)]


def generate_tasks(n: int, seed: int, profile: str = "dbbench") -> list[SqlTask]:
    """`n` tasks, ids "gen-<profile>-<seed>-<i>" (of its own profile, for a mixture), read exactly as
    load_tasks reads the written file."""
    return [parse_task(generate_record(name, seed, i), task_id(name, seed, i))
            for name, i in _members(n, seed, profile)]


def write_tasks(path: str | os.PathLike, n: int, seed: int, profile: str = "dbbench") -> int:
    """Writes `n` tasks as DBBench JSONL (UTF-8, one record per line) and returns n; atomic."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):  # before generating, so a bad path costs nothing
        raise FileNotFoundError(f"output directory {directory} does not exist; create it first")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; pass the path of the .jsonl file to write, e.g. "
                                f"{os.path.join(path, 'tasks.jsonl')}")
    records = generate_records(n, seed, profile)
    with atomic_write(path, "wb") as f:  # bytes: "\n" line ends on every platform
        for record in records:
            f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    return len(records)
