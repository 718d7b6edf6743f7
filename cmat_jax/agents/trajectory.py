"""The trajectory record: what the rollout engine writes for every episode and trial.

Token ids are the record; text is a view. A `Turn` holds the exact prompt ids
a role was given and the ids it sampled, with the sampler's log-probability of
each sampled id. Turns of one role that extend one append-only context share a
`segment`: each such turn's prompt starts with the previous turn's prompt and
completion. A new segment starts where that stops being true (a role's own
one-turn conversation, a prompt rebuilt after dropping old observations). The
RL update trains each segment as one sequence (cmat_jax/rl/).

Records are plain data: `to_json()` / `from_json()` round-trip them exactly.
A verdict on a turn is a typed dict (`StaticVerdict`, `LearnedVerdict`), so it
is written as it is held.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional, TypedDict, Union

from cmat_jax.envs.base import FAILED, OUT_OF_ROUNDS, SOLVED, UNREADABLE

# Roles that write turns. The Assistant acts in the environment; the learned Checker
# judges its statements; a reflection is the Assistant's self-reflection after a failed trial.
ASSISTANT_ROLE = "assistant"
CHECKER_ROLE = "checker"
REFLECTION_ROLE = "reflection"
ROLE_NAMES = (ASSISTANT_ROLE, CHECKER_ROLE, REFLECTION_ROLE)

# Trajectory statuses.
CORRECT = "correct"
WRONG = "wrong"  # answered (or changed the table) and was graded wrong
FORMAT_FAILURE = "format_failure"  # a reply DBBench cannot read
ROUND_LIMIT = "round_limit"
CONTEXT_OVERFLOW = "context_overflow"  # the next prompt did not fit the sampler's context
STATUSES = (CORRECT, WRONG, FORMAT_FAILURE, ROUND_LIMIT, CONTEXT_OVERFLOW)
# The status of an episode the environment ended, by its outcome (cmat_jax.envs.base OUTCOMES).
STATUS_OF_OUTCOME = {SOLVED: CORRECT, FAILED: WRONG, UNREADABLE: FORMAT_FAILURE, OUT_OF_ROUNDS: ROUND_LIMIT}


class StaticVerdict(TypedDict):
    """The static Checker's verdict on an Assistant turn's statement."""

    source: Literal["static"]
    ok: bool
    reason: str  # "" when ok
    rule: str  # the check that rejected it ("" when ok)


class LearnedVerdict(TypedDict):
    """The learned Checker's parsed reply: on the Assistant turn it judged, and on its own turn."""

    source: Literal["learned"]
    ok: bool  # an unreadable reply approves
    reason: str
    readable: bool  # the reply held a verdict in the Checker's format


Verdict = Union[StaticVerdict, LearnedVerdict]


@dataclasses.dataclass
class Turn:
    role: str  # one of ROLE_NAMES
    segment: int  # turns of one role in one append-only context share it
    prompt_ids: list[int]
    completion_ids: list[int]  # as sampled, EOS included when the reply ended with it
    completion_logprobs: list[float]  # the sampler's log-probability of each completion id
    finish_reason: str  # eos | length | stop | scripted
    text: str  # the reply as the environment (or the engine) read it
    observation: Optional[str] = None  # what came back: the environment's output or the Checker's reason
    verdict: Optional[Verdict] = None  # assistant turns: the Checker's verdict on its statement
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # the environment's step info
    reward: Optional[float] = None  # learned-Checker turns: rewards.checker_reward, set when the episode ends


@dataclasses.dataclass
class Trajectory:
    task_id: str
    task_type: str
    group_id: int  # the task's index in its rollout batch: the G samples of a task share it
    sample: int  # 0 .. G-1
    trial: int  # 0-based; trial t > 0 saw reflections written after failed trials
    turns: list[Turn] = dataclasses.field(default_factory=list)
    reward: float = 0.0  # rewards.outcome_reward, set when the episode ends (rewards.assistant_reward reads it)
    status: str = ""  # one of STATUSES once finished
    memory_shown: list[str] = dataclasses.field(default_factory=list)  # reflections shown in the prompt
    dropped_observations: int = 0  # observation turns left out of the prompt to fit the token budget
    final_info: dict[str, Any] = dataclasses.field(default_factory=dict)  # the environment's last info

    @property
    def correct(self) -> bool:
        return self.status == CORRECT

    def role_turns(self, role: str) -> list[Turn]:
        return [t for t in self.turns if t.role == role]

    def next_segment(self) -> int:
        """The segment of a turn that starts a new one: one past every segment so far."""
        return 1 + max((t.segment for t in self.turns), default=-1)

    def to_json(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "Trajectory":
        record = dict(record)
        record["turns"] = [Turn(**t) for t in record["turns"]]
        return cls(**record)


def _jsonable(value: Any) -> Any:
    """Dataclasses (e.g. a Checker Verdict) as dicts, tuples as lists; everything else as is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
