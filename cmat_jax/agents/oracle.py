"""The scripted oracle: answers every DBBench task from its label, to validate the environment and grading.

INSERT/UPDATE/DELETE tasks: runs the gold SQL, then answers. SELECT-family tasks:
answers with the label at once. On a faithful environment it scores 100%.

With `query_first=True` (demonstrations for training) a SELECT-family task with a
gold query runs that query before answering, so the answer follows from what
the episode showed, as a model's must.
"""

from __future__ import annotations

from typing import Sequence

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

    def __init__(self, query_first: bool = False):
        self.query_first = query_first
        self._task: SqlTask | None = None
        self._operated = False

    def begin(self, task: SqlTask) -> None:
        self._task = task
        self._operated = False

    def act(self, history: Sequence[Message]) -> str:
        if self._task is None:
            raise RuntimeError("OracleAgent.act called before begin(task)")
        if not self._operated and (self._task.is_mutation or (self.query_first and self._task.gold_query)):
            self._operated = True
            return operation_reply(self._task.gold_sql if self._task.is_mutation else self._task.gold_query)
        return answer_reply([] if self._task.is_mutation else self._task.label)
