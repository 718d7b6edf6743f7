"""A seeded corpus of adversarial episodes for the SQL environment, and a runner that checks the sandbox's promises.

`corpus(seed)` builds the same cases for the same seed: every attack vector
docs/sql_env.md's safety model names (native pointers, filesystem and schema
access, statements that outrun the timeout or fill memory, tables grown past
their cap, oversized observations, every function of the running SQLite build),
plus thousands of random statements from a small MySQL grammar, token soup and
mutations of the DBBench gold SQL. A case is one episode: its statements, then
an Answer step (graded, so the final-state hash runs after every mutation).

`run(cases)` drives SqlEnv exactly as training does and reports: exceptions that
escaped `step`/`reset`; the slowest steps (Answer steps included) and those over
timeout + 0.5 s; the process's peak RSS; observations over their limit;
statements that called a function outside the allow-list and got rows back;
task tables changed (a fresh episode's final-state hash differs from the one
taken before the run); files created or changed in the working directory; and
episode databases failing SQLite's integrity check.

The families: attacks.py (hand-written vectors), grammar.py (random statements);
the cases and their tables: cases.py.

    python tools/fuzz_sql.py                 # the full corpus, default limits
    python tools/fuzz_sql.py --sample 300    # what the test suite runs
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import random
import re
import resource
import sqlite3
import time
import traceback
from typing import Iterable

from cmat_jax.envs.sql import allowlist, grading
from cmat_jax.envs.sql.database import EpisodeDatabase, Limits, build_image
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from cmat_jax.envs.sql.tasks import SqlTask
from cmat_jax.sqlfuzz import attacks
from cmat_jax.sqlfuzz.cases import Case, fuzz_tasks, operation_reply
from cmat_jax.sqlfuzz.grammar import Grammar, mutate, soup

SLACK_S = 0.5  # a step may take the statement timeout plus this


# -- the corpus -----------------------------------------------------------------------------------


def _build_functions() -> list[tuple[str, int]]:
    """(name, argument count) of every function the running SQLite build offers, and known names it may lack."""
    conn = sqlite3.connect(":memory:")
    try:
        found = {(name, narg) for name, narg in conn.execute("SELECT name, narg FROM pragma_function_list")}
    finally:
        conn.close()
    for name in ("fts3_tokenizer", "rtreenode", "rtreedepth", "rtreecheck", "load_extension", "printf", "format",
                 "sqlite_version", "sqlite_source_id", "sqlite_offset", "geopoly_blob", "json_each", "readfile",
                 "writefile", "edit", "fts5_source_id", "sqlite_dbpage", "zipfile", "eval", "shell_add_schema"):
        found.add((name, 1))
    return sorted(found)


def corpus(seed: int = 0, statements: int = 10_000, tmp: str = ".") -> list[Case]:
    """The cases, deterministic for a seed; random families are sized so the corpus holds at least
    `statements` statements. `tmp`: the directory paths in attacks point into."""
    rng = random.Random(seed)
    tasks = fuzz_tasks()
    cases = [*attacks.issue_vectors(tmp), *attacks.escapes(tmp), *attacks.functions(rng, _build_functions()),
             *attacks.heavy_time(rng), *attacks.heavy_memory(rng), *attacks.answers(rng)]
    dev = [t for key, t in tasks.items() if key.startswith("dev")]
    grammar_tasks = ["T", "T_read", "U", "W"] + [t.task_id for t in dev]
    gold = [t.gold_sql if t.is_mutation else t.gold_query for t in dev]
    gold = [g for g in gold if g]
    count = sum(len(c.statements) for c in cases)
    while count < statements:
        kind = rng.random()
        key = rng.choice(grammar_tasks)
        task = tasks[key]
        checker = "enforce" if rng.random() < 0.25 else "report"
        if kind < 0.55:
            grammar = Grammar(rng, task)
            sql = tuple(grammar.statement(task.is_mutation) for _ in range(rng.choice([1, 1, 1, 2, 3])))
            family = "grammar"
        elif kind < 0.8:
            sql, family = (soup(rng, task),), "soup"
        else:
            source = rng.choice(dev)
            text = source.gold_sql if source.is_mutation else source.gold_query
            if not text:
                continue
            key, sql, family = source.task_id, (mutate(rng, text),), "mutation"
        cases.append(Case(family, key, sql, checker=checker))
        count += len(sql)
    denied = _denied_names()
    return [dataclasses.replace(c, calls_denied_function=_calls_denied(c.statements, denied)) for c in cases]


_LITERAL = re.compile(r"'(?:[^'\\]|\\.|'')*'")
_CALL = re.compile(r"\b([A-Za-z_]\w*)`?\s*\(")  # a name, maybe in backticks, then "("


def _denied_names() -> frozenset[str]:
    return frozenset(name.lower() for name, _ in _build_functions()) - allowlist.ALLOWED_FUNCTIONS


def _calls_denied(statements: tuple[str, ...], denied: frozenset[str]) -> bool:
    """Whether a statement names a function outside the allow-list (its MySQL spelling may be translated to
    another SQLite function; the sandbox must deny that one just the same)."""
    for sql in statements:
        sql = _LITERAL.sub("''", sql)
        if re.search(r"->>?\s*''|\b(MATCH|GLOB)\s+''", sql, re.IGNORECASE):  # operators that are functions
            return True
        if any(name.lower() in denied for name in _CALL.findall(sql)):
            return True
    return False


def sample(cases: list[Case], size: int, seed: int = 0) -> list[Case]:
    """A deterministic sample holding every family, for the test suite."""
    rng = random.Random(seed)
    by_family = collections.defaultdict(list)
    for case in cases:
        by_family[case.family].append(case)
    picked = []
    share = max(1, size // len(by_family))
    for family in sorted(by_family):
        members = by_family[family]
        picked.extend(rng.sample(members, min(share, len(members))))
    return picked


# -- the runner -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    limits: Limits
    episodes: int = 0
    statements: int = 0
    answer_steps: int = 0
    escaped: list = dataclasses.field(default_factory=list)  # (family, statement, traceback)
    slow: list = dataclasses.field(default_factory=list)  # (seconds, family, reply), over timeout + SLACK_S
    slowest: list = dataclasses.field(default_factory=list)  # the ten slowest steps
    oversized: list = dataclasses.field(default_factory=list)  # (length, family, reply)
    denied_functions_ran: list = dataclasses.field(default_factory=list)  # (family, statement, observation)
    changed_tables: list = dataclasses.field(default_factory=list)  # task keys
    created_files: list = dataclasses.field(default_factory=list)
    corrupted: list = dataclasses.field(default_factory=list)  # (family, statements, integrity message)
    peak_rss_mib: float = 0.0
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # error kind -> steps
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not (self.escaped or self.slow or self.oversized or self.denied_functions_ran or self.changed_tables
                    or self.created_files or self.corrupted) and self.peak_rss_mib < 1024

    def summary(self) -> dict:
        """The counts, and the first few examples of each finding, as JSON-ready values."""
        return {
            "passed": self.passed, "episodes": self.episodes, "statements": self.statements,
            "answer_steps": self.answer_steps, "seconds": round(self.seconds, 1),
            "timeout_s": self.limits.timeout_s, "heap_limit_mib": self.limits.heap_limit_bytes >> 20,
            "escaped_exceptions": len(self.escaped), "steps_over_limit": len(self.slow),
            "slowest_steps": [[round(s, 3), family, reply[:200]] for s, family, reply in self.slowest],
            "peak_rss_mib": round(self.peak_rss_mib), "oversized_observations": len(self.oversized),
            "functions_outside_allow_list": len(self.denied_functions_ran),
            "changed_task_tables": self.changed_tables, "created_files": self.created_files,
            "corrupted_databases": len(self.corrupted),
            "errors_by_kind": {str(k): v for k, v in sorted(self.errors.items(), key=str)},
            "examples": {"escaped": [e[:2] for e in self.escaped[:5]], "slow": [e[:2] for e in self.slow[:5]],
                         "oversized": self.oversized[:5], "functions": self.denied_functions_ran[:5],
                         "corrupted": [[f, list(s)[:2], m] for f, s, m in self.corrupted[:5]]},
        }  # fmt: skip

    def lines(self) -> list[str]:
        limit = self.limits.timeout_s + SLACK_S
        slowest = self.slowest[0][0] if self.slowest else 0.0
        lines = [
            f"episodes {self.episodes}, statements {self.statements}, answer steps {self.answer_steps}, "
            f"{self.seconds:.0f} s",
            f"escaped exceptions          {len(self.escaped)}",
            f"steps over {limit:.1f} s            {len(self.slow)} (slowest {slowest:.2f} s)",
            f"peak RSS                    {self.peak_rss_mib:.0f} MiB",
            f"oversized observations      {len(self.oversized)} (limit {self.limits.max_observation_chars})",
            f"functions outside the list  {len(self.denied_functions_ran)}",
            f"changed task tables         {len(self.changed_tables)}",
            f"created or changed files    {len(self.created_files)}",
            f"corrupted databases         {len(self.corrupted)}",
            "errors by kind              " + ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items(), key=str)),
        ]
        for seconds, family, reply in self.slowest[:5]:
            lines.append(f"  {seconds:6.2f} s  {family:9} {reply[:100]!r}")
        for family, statement, trace in self.escaped[:5]:
            lines.append(f"  escaped in {family}: {statement[:100]!r}\n{trace}")
        return lines


def _snapshot(directory: str) -> dict[str, tuple[int, str]]:
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    files[path] = (os.stat(path).st_mtime_ns, hashlib.sha256(f.read()).hexdigest())
            except OSError:
                files[path] = (0, "unreadable")
    return files


def _fresh_hash(task: SqlTask) -> str | None:
    database = EpisodeDatabase(build_image(task))
    try:
        return grading.mysql_table_hash(database.table_rows()) if database.image.state == "ok" else None
    finally:
        database.close()


def run(cases: Iterable[Case], limits: Limits = Limits(), workdir: str = ".", progress=None) -> Report:
    """Plays every case through SqlEnv with `limits` (the working directory should be `workdir`, the
    directory the corpus's paths point into, so that relative paths land there too)."""
    tasks = fuzz_tasks()
    report = Report(limits)
    before_files = _snapshot(workdir)
    before_hashes = {key: _fresh_hash(task) for key, task in tasks.items()}
    images: dict = {}
    envs = {mode: SqlEnv(SqlEnvConfig(checker=mode, limits=limits), image_cache=images)
            for mode in ("report", "enforce")}
    limit_s = limits.timeout_s + SLACK_S
    start = time.monotonic()
    for number, case in enumerate(cases):
        env = envs[case.checker]
        report.episodes += 1
        replies = [operation_reply(sql) for sql in case.statements]
        try:
            env.reset(tasks[case.task])
            for sql, reply in zip(case.statements, replies):
                step = _timed(report, env, case, reply, limit_s)
                report.statements += 1
                report.errors[step.info.get("error")] += 1
                if case.calls_denied_function and step.info.get("executed") and step.info.get("error") is None:
                    report.denied_functions_ran.append((case.family, sql, step.observation[:200]))
                if step.done:
                    break
            else:
                check = env._db.integrity()  # noqa: SLF001 - the fuzz inspects the episode's database
                if check != "ok":
                    report.corrupted.append((case.family, case.statements, check[:300]))
                _timed(report, env, case, case.answer, limit_s)
                report.answer_steps += 1
        except Exception:  # noqa: BLE001 - counting these is the point
            report.escaped.append((case.family, "\n".join(case.statements)[:300], traceback.format_exc()))
            env.close()
        if progress is not None:
            progress(number, report)
    report.seconds = time.monotonic() - start
    after_hashes = {key: _fresh_hash(task) for key, task in tasks.items()}
    report.changed_tables = sorted(key for key in tasks if after_hashes[key] != before_hashes[key])
    after_files = _snapshot(workdir)
    report.created_files = sorted(path for path in set(before_files) | set(after_files)
                                  if before_files.get(path) != after_files.get(path))
    report.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _timed(report: Report, env: SqlEnv, case: Case, reply: str, limit_s: float):
    started = time.monotonic()
    step = env.step(reply)
    seconds = time.monotonic() - started
    entry = (seconds, case.family, reply)
    if seconds > limit_s:
        report.slow.append(entry)
    if len(report.slowest) < 10 or seconds > report.slowest[-1][0]:
        report.slowest = sorted([*report.slowest, entry], key=lambda e: -e[0])[:10]
    if len(step.observation) > report.limits.max_observation_chars:
        report.oversized.append((len(step.observation), case.family, reply[:200]))
    return step
