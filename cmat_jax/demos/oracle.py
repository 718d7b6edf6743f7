"""The scripted oracle: answers every DBBench task from its label, to validate the environment and grading.

INSERT/UPDATE/DELETE tasks: runs the gold SQL, then answers. SELECT-family tasks:
answers with the label at once. On a faithful environment it scores 100%.

With `query_first=True` (demonstrations for training) a SELECT-family task with a
gold query runs that query before answering, so the answer follows from what
the episode showed, as a model's must.

With `mistakes` (task id -> statement; cmat_jax/demos/mistakes.py) the oracle
first sends the task's mistaken statement, then carries on as without it: the
gold statement after the error, then the answer.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from cmat_jax.chat import Message
from cmat_jax.envs.sql.tasks import SqlTask


def operation_reply(sql: str) -> str:
    return f"Action: Operation\n```sql\n{sql}\n```"


def answer_reply(answers: Sequence) -> str:
    # repr gives a Python literal that the grader reads back exactly.
    return f"Action: Answer\nFinal Answer: {list(answers)!r}"


class OracleAgent:
    """Follows the Agent protocol of cmat_jax.envs.base."""

    name = "oracle"

    def __init__(self, query_first: bool = False, mistakes: Mapping[str, str] | None = None):
        self.query_first = query_first
        self.mistakes = mistakes or {}
        self._task: SqlTask | None = None
        self._operated = False
        self._mistake: str | None = None

    def begin(self, task: SqlTask) -> None:
        self._task = task
        self._operated = False
        self._mistake = self.mistakes.get(task.task_id)
        if self._mistake is not None and not (task.is_mutation or (self.query_first and task.gold_query)):
            raise ValueError(f"a mistaken statement is given for task {task.task_id}, but the oracle runs no "
                             "statement for it to recover with; give mistakes only for tasks with gold SQL "
                             "(with query_first=True for SELECT-family tasks)")

    def act(self, history: Sequence[Message]) -> str:
        if self._task is None:
            raise RuntimeError("OracleAgent.act called before begin(task)")
        if self._mistake is not None:
            mistake, self._mistake = self._mistake, None
            return operation_reply(mistake)
        if not self._operated and (self._task.is_mutation or (self.query_first and self._task.gold_query)):
            self._operated = True
            return operation_reply(self._task.gold_sql if self._task.is_mutation else self._task.gold_query)
        return answer_reply([] if self._task.is_mutation else self._task.label)
