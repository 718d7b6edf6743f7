"""The fixed prompts of the model roles other than the Assistant's DBBench turns.

- The reflection prompt shows a failed episode and asks for a short plan for the
  next attempt (Reflexion's self-reflection, one model call per failed trial).
- The Checker prompt shows the task, the table's schema and one proposed
  statement, and asks for a verdict in a fixed, parseable format:

      Verdict: APPROVE
      Reason: <one sentence>

  or `Verdict: REJECT`. A reply without a readable verdict approves (the
  statement runs) and is recorded as unreadable, so a Checker that has not
  learned the format can never block the Assistant.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from cmat_jax.chat import ASSISTANT, USER, Message

REFLECTION_INSTRUCTIONS = (
    "Below is a record of an attempt at a database task that failed. Think about what went wrong: "
    "the statements that were run, the outputs they gave, and the final answer. Then write, in a few "
    "sentences, a plan for the next attempt that avoids the mistake: which columns, conditions or "
    "answer format to use. Do not restate the task."
)

CHECKER_INSTRUCTIONS = (
    "You check SQL statements before they run against a MySQL database. Given the task, the table and "
    "one proposed statement, decide whether the statement is valid for this table and helps to solve "
    "the task. Reply in exactly this format:\n"
    "Verdict: APPROVE or REJECT\n"
    "Reason: <one sentence>"
)

# A short statement of DBBench's protocol (the same actions and answer format) for small demo models,
# whose prompt cost is dominated by the 446-token original (bundled tokenizer): instructions='short'.
SHORT_INSTRUCTIONS = (
    "Answer the question with a MySQL database. Each turn, either run one SQL statement:\n"
    "Action: Operation\n```sql\nSELECT * FROM table WHERE condition;\n```\n"
    "or give the final answer:\n"
    "Action: Answer\nFinal Answer: [\"ANSWER1\", ...]"
)

_VERDICT = re.compile(r"Verdict:\s*(APPROVE|REJECT)\b", re.IGNORECASE)
_REASON = re.compile(r"Reason:\s*(.*)")
MAX_SHOWN_CHARS = 400  # an observation shown in a reflection prompt is cut to this


def reflection_prompt(task_prompt: str, episode: Sequence[Message]) -> list[Message]:
    """One user turn: the instructions, the task and the failed episode's turns after it."""
    lines = [REFLECTION_INSTRUCTIONS, "", "Task:", task_prompt, "", "Attempt:"]
    for message in episode:
        speaker = "Agent" if message.role == ASSISTANT else "Database"
        lines.append(f"{speaker}: {message.content[:MAX_SHOWN_CHARS]}")
    lines += ["", "Plan for the next attempt:"]
    return [Message(USER, "\n".join(lines))]


def checker_prompt(task_prompt: str, sql: str) -> list[Message]:
    """One user turn: the instructions, the task (with the table's name and headers) and the statement."""
    text = f"{CHECKER_INSTRUCTIONS}\n\nTask:\n{task_prompt}\n\nProposed statement:\n```sql\n{sql}\n```"
    return [Message(USER, text)]


@dataclasses.dataclass(frozen=True)
class CheckerReply:
    readable: bool
    approve: bool
    reason: str


def parse_checker_reply(text: str) -> CheckerReply:
    verdict = _VERDICT.search(text)
    if verdict is None:
        return CheckerReply(readable=False, approve=True, reason="")
    reason = _REASON.search(text, verdict.end())
    approve = verdict.group(1).upper() == "APPROVE"
    reason_text = reason.group(1).strip() if reason else ""
    return CheckerReply(readable=True, approve=approve, reason=reason_text)
