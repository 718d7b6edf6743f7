"""SQL environment throughput on the DBBench dev tasks, on one CPU core.

An episode is reset + one SELECT + one Final Answer, the shortest real episode.
The SELECT filters the task table on its second column's first value (so the
MySQL collation runs on every row). Measured in the same run:

- sqlite3 floor: a bare in-memory SQLite table built from the task rows and the
  same query, with no parsing, translation, sandbox or grading: what any
  embedded-database environment pays at least;
- cmat_jax env with the Checker off, and with the Checker on (report mode, the
  evaluation default; enforce costs the same);
- the same SELECT with ORDER BY its first column (Checker off): the sort key per
  row and the plan check (EXPLAIN) a statement that may sort pays.

Each figure is the best of --repeats passes over all tasks (--passes rounds each).

  python bench/bench_env.py
  python bench/bench_env.py --passes 20
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from cmat_jax.demos.oracle import answer_reply, operation_reply  # noqa: E402
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig  # noqa: E402
from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS, SqlTask, load_tasks  # noqa: E402

DEFAULT_TASKS = DBBENCH_DEV_TASKS


def select_for(task: SqlTask, order_by: bool = False) -> str:
    """A MySQL SELECT on the task table: first column where the second equals its first value."""
    columns = [f"`{c.replace('`', '``')}`" for c in task.columns]
    value = task.rows[0][min(1, len(columns) - 1)] if task.rows else ""
    literal = "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    where = columns[min(1, len(columns) - 1)]
    order = f" ORDER BY {columns[0]}" if order_by else ""
    return f"SELECT {columns[0]} FROM `{task.table_name.replace('`', '``')}` WHERE {where} = {literal}{order}"


def run_env(env: SqlEnv, tasks: list[SqlTask], passes: int, order_by: bool = False) -> int:
    episodes = 0
    replies = [(operation_reply(select_for(t, order_by)), answer_reply(t.label if not t.is_mutation else []))
               for t in tasks]
    for _ in range(passes):
        for task, (operation, answer) in zip(tasks, replies):
            env.reset(task)
            env.step(operation)
            step = env.step(answer)
            assert step.done
            episodes += 1
    return episodes


def run_sqlite_floor(tasks: list[SqlTask], passes: int) -> int:
    prepared = []
    for task in tasks:
        quoted = [f'"{c.replace(chr(34), chr(34) * 2)}"' for c in task.columns]
        table = '"' + task.table_name.replace('"', '""') + '"'
        create = f"CREATE TABLE {table} ({', '.join(q + ' TEXT' for q in quoted)})"
        insert = f"INSERT INTO {table} VALUES ({', '.join('?' * len(quoted))})"
        where = quoted[min(1, len(quoted) - 1)]
        query = f"SELECT {quoted[0]} FROM {table} WHERE {where} = ?"
        value = task.rows[0][min(1, len(quoted) - 1)] if task.rows else ""
        rows = [tuple(None if v is None else str(v) for v in row) for row in task.rows]
        prepared.append((create, insert, rows, query, value))
    episodes = 0
    for _ in range(passes):
        for create, insert, rows, query, value in prepared:
            conn = sqlite3.connect(":memory:")
            conn.execute(create)
            conn.executemany(insert, rows)
            str(conn.execute(query, (value,)).fetchall())
            conn.close()
            episodes += 1
    return episodes


def best_rate(fn, repeats: int) -> tuple[float, float]:
    """(episodes per second, microseconds per episode) of the fastest repeat."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        episodes = fn()
        best = min(best, (time.perf_counter() - start) / episodes)
    return 1.0 / best, best * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="DBBench .jsonl file (default: the dev tasks)")
    parser.add_argument("--passes", type=int, default=10, help="passes over all tasks per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not os.path.isfile(args.tasks):
        raise SystemExit(f"error: no task file at {args.tasks}; pass --tasks <DBBench .jsonl>")
    tasks = load_tasks(args.tasks)

    start = time.perf_counter()
    cold = SqlEnv(SqlEnvConfig(checker="off"))
    run_env(cold, tasks, 1)  # first episode per task also builds and serializes its table
    first_pass_us = (time.perf_counter() - start) / len(tasks) * 1e6

    floor = best_rate(lambda: run_sqlite_floor(tasks, args.passes), args.repeats)
    rows = [("sqlite3 floor (no parse/sandbox/grading)", floor)]
    for mode in ("off", "report"):
        env = SqlEnv(SqlEnvConfig(checker=mode))
        run_env(env, tasks, 1)  # warm the per-task table images
        rows.append((f"cmat_jax env, checker {mode}", best_rate(lambda: run_env(env, tasks, args.passes), args.repeats)))
    env = SqlEnv(SqlEnvConfig(checker="off"))
    rows.append(("cmat_jax env, checker off, ORDER BY",
                 best_rate(lambda: run_env(env, tasks, args.passes, order_by=True), args.repeats)))

    print(f"{len(tasks)} tasks x {args.passes} passes, best of {args.repeats}; Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, {platform.processor() or platform.machine()}, one thread")
    print(f"{'episode = reset + SELECT + answer':<42} {'episodes/s':>11} {'us/episode':>11}")
    print("-" * 66)
    for name, (rate, micros) in rows:
        print(f"{name:<42} {rate:>11,.0f} {micros:>11,.0f}")
    print(f"{'first episode per task (builds the table)':<42} {1e6 / first_pass_us:>11,.0f} {first_pass_us:>11,.0f}")


if __name__ == "__main__":
    main()
