"""The DBBench v0.2 text protocol as an Environment.

Each reply is read as DBBench reads it. The first "Action: <x>" line decides: for
"Operation" (while fewer than `max_rounds` statements have run) the first ```sql
block is executed, its newlines turned into spaces, and the database's raw result
comes back as the next user turn; a reply without such a block fails the task.
Any other reply ends the episode: the text after "\\nFinal Answer:" is the answer
(a reply without one fails the task, or counts as hitting the round limit when
the limit was reached). INSERT/UPDATE/DELETE tasks are graded on the table's
final state whatever the episode's status; SELECT-family tasks on the answer.
The reward is 1.0 for a correct episode, 0.0 otherwise, given on the last step.

`SqlEnv` implements cmat_jax.envs.base's Environment: the pending action of a
reply is its statement, a rejection passed to `step` keeps it from running, and
`outcome` names DBBench's statuses in the protocol's words. Played alone
(`run_episode`, the fuzz harness), the environment can apply the static Checker
itself (`SqlEnvConfig.checker`); the rollout engine's environments
(`SqlEnvironments`) leave that off, since there the Checker role gates.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from cmat_jax.chat import ASSISTANT, USER, Message
from cmat_jax.envs.base import FAILED, OUT_OF_ROUNDS, OWN_VERDICT, SOLVED, UNREADABLE, Step
from cmat_jax.envs.sql import grading
from cmat_jax.envs.sql.checker import Checker, Verdict
from cmat_jax.envs.sql.database import EpisodeDatabase, Limits, TableImage, build_image
from cmat_jax.envs.sql.mysql_errors import MysqlError
from cmat_jax.envs.sql.dialect import parse_mysql
from cmat_jax.envs.sql.tasks import SqlTask

# DBBench v0.2's instructions (THUDM/AgentBench, Apache-2.0), verbatim: models are measured on this exact text.
DBBENCH_INSTRUCTIONS = """
I will ask you a question, then you should help me operate a MySQL database with SQL to answer the question.
You have to explain the problem and your solution to me and write down your thoughts.
After thinking and explaining thoroughly, every round you can choose to operate or to answer.
your operation should be like this:
Action: Operation
```sql
SELECT * FROM table WHERE condition;
```
You MUST put SQL in markdown format without any other comments. Your SQL should be in one line.
Every time you can only execute one SQL statement. I will only execute the statement in the first SQL code block. Every time you write a SQL, I will execute it for you and give you the output.
If you are done operating, and you want to commit your final answer, then write down:
Action: Answer
Final Answer: ["ANSWER1", "ANSWER2", ...]
DO NOT write this pattern unless you are sure about your answer. I expect an accurate and correct answer.
Your answer should be accurate. Your answer must be exactly the same as the correct answer.
If the question is about modifying the database, then after done operation, your answer field can be anything.
If your response cannot match any pattern I mentioned earlier, you will be judged as FAIL immediately.
Your input will be raw MySQL response, you have to deal with it by yourself.
"""
INSTRUCTIONS_REPLY = "Ok."  # the agent turn DBBench injects after its instructions

# Episode statuses, named as DBBench's sample statuses.
COMPLETED = "completed"
FORMAT_FAILURE = "agent_validation_failed"
ROUND_LIMIT = "task_limit_reached"

_FINAL_ANSWER = re.compile(r"\nFinal Answer:(.*)")

# What the environment does with the static Checker of its own (not the rollout engine's Checker role).
OWN_CHECKER_MODES = ("enforce", "report", "off")


def _between(text: str, opening: str, closing: str) -> str | None:
    """What re.search(opening + "(.*?)" + closing) captures (DBBench's "Action: (.*?)\\n" and
    "```sql\\n([\\s\\S]*?)\\n```"), in linear time: the regex tries every opening to the end of the text."""
    start = text.find(opening)
    if start < 0:
        return None
    start += len(opening)
    end = text.find(closing, start)  # no closing after the first opening means none after any later one
    return None if end < 0 else text[start:end]


@dataclasses.dataclass(frozen=True)
class SqlEnvConfig:
    max_rounds: int = 15  # statements per episode, as configured for DBBench v0.2
    # enforce: a statement the Checker rejects is not run and its reason is the observation;
    # report: the verdict goes into info but the statement runs (observations exactly as DBBench's);
    # off: no Checker.
    checker: str = "report"
    limits: Limits = Limits()

    def __post_init__(self):
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be at least 1, found {self.max_rounds}")
        if self.checker not in OWN_CHECKER_MODES:
            raise ValueError(f"checker must be one of {', '.join(OWN_CHECKER_MODES)}, found {self.checker!r}")


class SqlEnv:
    """DBBench episodes on private in-memory SQLite databases. One episode at a time per instance."""

    _MAX_CACHED_IMAGES = 4096

    def __init__(self, config: SqlEnvConfig = SqlEnvConfig(), image_cache: dict | None = None):
        """`image_cache`: a dict shared by environments that play the same tasks (one image per task)."""
        self.config = config
        self._images: dict[int, tuple[SqlTask, TableImage]] = {} if image_cache is None else image_cache
        self._task: SqlTask | None = None
        self._db: EpisodeDatabase | None = None
        self._checker: Checker | None = None
        self._done = True
        self._rounds = 0
        self._rejections = 0

    def _image(self, task: SqlTask) -> TableImage:
        cached = self._images.get(id(task))
        if cached is not None and cached[0] is task:
            return cached[1]
        if len(self._images) >= self._MAX_CACHED_IMAGES:
            self._images.clear()
        image = build_image(task)
        self._images[id(task)] = (task, image)  # holding the task keeps its id from being reused
        return image

    def reset(self, task: SqlTask) -> tuple[Message, ...]:
        if not isinstance(task, SqlTask):
            raise TypeError(f"SqlEnv.reset expects an SqlTask (see load_tasks), found {type(task).__name__}")
        self.close()
        self._task = task
        self._db = EpisodeDatabase(self._image(task), self.config.limits)
        self._checker = None if self.config.checker == "off" else Checker.for_task(task)
        self._done = False
        self._rounds = 0
        self._rejections = 0
        return (Message(USER, DBBENCH_INSTRUCTIONS), Message(ASSISTANT, INSTRUCTIONS_REPLY), Message(USER, task.prompt))

    def pending_action(self, text: str) -> str | None:
        """The statement `step(text)` would execute, or None when the reply ends the episode."""
        if _between(text, "Action: ", "\n") == "Operation" and self._rounds < self.config.max_rounds:
            block = _between(text, "```sql\n", "\n```")
            return None if block is None else block.strip().replace("\n", " ")
        return None

    def step(self, text: str, rejection: str | None = None) -> Step:
        """Applies the agent's reply. `rejection`: a Checker role's reason for refusing the reply's
        statement; the statement then does not run, it uses up its round, and the reason is the
        observation."""
        if self._done:
            raise RuntimeError("the episode is over (or was never started); call reset(task) first")
        if not isinstance(text, str):
            raise TypeError(f"step expects the agent's reply as a string, found {type(text).__name__}")
        if _between(text, "Action: ", "\n") == "Operation" and self._rounds < self.config.max_rounds:
            sql = self.pending_action(text)
            if sql is None:
                return self._finish(FORMAT_FAILURE, "")
            if rejection is not None:
                return self._reject(sql, rejection)
            return self._operate(sql)
        final = _FINAL_ANSWER.search(text)
        answer = final.group(1) if final else ""
        status = COMPLETED if final else FORMAT_FAILURE
        if self._rounds >= self.config.max_rounds and not answer:
            status = ROUND_LIMIT
        return self._finish(status, answer)

    def _operate(self, sql: str) -> Step:
        self._rounds += 1
        parsed = parse_mysql(sql, max_chars=self.config.limits.max_sql_chars)
        verdict: Verdict | None = self._checker.check_parsed(parsed) if self._checker else None
        rejected = verdict is not None and not verdict.ok
        self._rejections += rejected
        if rejected and self.config.checker == "enforce":
            observation, error, executed = verdict.reason[: self.config.limits.max_output_chars], None, False
        else:
            execution = self._db.run(parsed)
            observation, error, executed = execution.text, execution.error, True
        info = {
            "action": "operation",
            "sql": sql,
            OWN_VERDICT: verdict,
            "executed": executed,
            "error": error,
            "round": self._rounds,
        }
        return Step(observation, 0.0, False, info)

    def _reject(self, sql: str, reason: str) -> Step:
        self._rounds += 1
        self._rejections += 1
        # The environment's own Checker did not judge the statement: the Checker role did, before it.
        info = {"action": "operation", "sql": sql, OWN_VERDICT: None, "executed": False, "error": None,
                "round": self._rounds}
        return Step(reason[: self.config.limits.max_output_chars], 0.0, False, info)

    def _finish(self, status: str, answer: str) -> Step:
        task = self._task
        if task.is_mutation:
            try:
                answer = grading.hash_result_text(grading.mysql_table_hash(self._db.iter_table_rows()))
            except MysqlError as e:  # the table never existed: DBBench's hash query printed MySQL's error
                answer = e.text
            correct = grading.table_state_is_correct(answer, task.answer_md5)
        else:
            correct = grading.answer_is_correct(answer, task.label)
        self.close()
        info = {
            "action": "answer",
            "status": status,
            "answer": answer,
            "correct": correct,
            "task_id": task.task_id,
            "task_type": task.task_type,
            "rounds": self._rounds,
            "checker_rejections": self._rejections,
        }
        return Step("", 1.0 if correct else 0.0, True, info)

    def outcome(self, info: dict[str, Any]) -> str:
        """The protocol's name (envs/base.py OUTCOMES) for how the episode of this last step's info ended."""
        if info["correct"]:
            return SOLVED
        return {FORMAT_FAILURE: UNREADABLE, ROUND_LIMIT: OUT_OF_ROUNDS}.get(info["status"], FAILED)

    def close(self) -> None:
        """Ends the current episode, if any, and frees its database."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._done = True


class SqlEnvironments:
    """The rollout engine's DBBench (cmat_jax.envs.base Environments): environments that share one cache of
    table images (an image is built once per task), with their own Checker off, since only the engine's
    Checker role gates statements; and each task's static Checker."""

    def __init__(self, config: SqlEnvConfig = SqlEnvConfig()):
        self.config = dataclasses.replace(config, checker="off")
        self._images: dict = {}

    def new(self) -> SqlEnv:
        return SqlEnv(self.config, self._images)

    def static_checker(self, task: SqlTask) -> Checker:
        return Checker.for_task(task)
