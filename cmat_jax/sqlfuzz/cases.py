"""The cases of the SQL environment's adversarial corpus, and the tables they play on.

A `Case` is one episode: its statements (each sent as an Operation reply), then the
last reply (an Answer, graded, so the final-state hash runs after every mutation),
under one Checker mode. `fuzz_tasks()` gives the tables: the attack report's 76-row
table (writable and read-only), a table of Unicode and edge-case values, a wide table
with NULLs, and every DBBench dev task.
"""

from __future__ import annotations

import dataclasses

from cmat_jax.envs.sql.tasks import DBBENCH_DEV_TASKS, SqlTask, load_tasks, parse_task

ANSWER = "Action: Answer\nFinal Answer: []"


def operation_reply(sql: str) -> str:
    """A reply that runs `sql`, in DBBench's format (docs/sql_env.md, Protocol)."""
    return f"Action: Operation\n```sql\n{sql}\n```"


@dataclasses.dataclass(frozen=True)
class Case:
    """One episode of the corpus."""

    family: str  # which generator made it
    task: str  # key into the corpus's tasks
    statements: tuple[str, ...]
    answer: str = ANSWER  # the last reply
    checker: str = "report"  # SqlEnvConfig.checker
    calls_denied_function: bool = False  # the statements call a function outside the allow-list


def _task(name: str, columns: list[str], rows: list[list], mutation: bool) -> SqlTask:
    record = {
        "description": "fuzz", "add_description": f"The name of this table is {name}.",
        "type": ["UPDATE" if mutation else "other"], "label": ["UPDATE t SET x = 1"] if mutation else ["x"],
        "table": {"table_name": name, "table_info": {"columns": [{"name": c} for c in columns], "rows": rows}},
    }  # fmt: skip
    if mutation:
        record["answer_md5"] = "[(None,)]"
    return parse_task(record, f"fuzz:{name}")


def fuzz_tasks() -> dict[str, SqlTask]:
    """The tables the corpus plays on: the issue's 76-row table, Unicode data, a wide table, the dev tasks."""
    words = ["Émile", "emile", "EMILE", "Zoë", "zoe", "Bob", "ﷺ", "Straße", "ǅ", "İstanbul", "a_b", "a%b", "",
             "x" * 200, "١٢٣", "😀", "NULL", "0", "-1", "1e308", "7.400", "  pad  "]
    tasks = {
        "T": _task("T", ["c"], [[f"r{i}"] for i in range(76)], mutation=True),
        "T_read": _task("T", ["c"], [[f"r{i}"] for i in range(76)], mutation=False),
        "U": _task("U", ["Name", "Score", "City"],
                   [[w, str(i * 7 % 50), words[(i * 5) % len(words)]] for i, w in enumerate(words * 3)], mutation=True),
        "W": _task("W", [f"col{i}" for i in range(12)],
                   [[f"v{r}_{i}" if (r + i) % 7 else None for i in range(12)] for r in range(40)], mutation=True),
    }  # fmt: skip
    for task in load_tasks(DBBENCH_DEV_TASKS):
        tasks[task.task_id] = task
    return tasks
