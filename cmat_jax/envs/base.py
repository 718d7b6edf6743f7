"""The contract between text environments and the agents that act in them.

An episode is a conversation. `Environment.reset(task)` opens it with the turns
that precede the agent's first reply (fixed instructions and the task itself);
`Environment.step(text)` takes the agent's reply and returns the next user turn
as the observation, a reward and whether the episode is over. Agents see only
the conversation so far.

The rollout engine (cmat_jax/agents) needs a little more, and nothing of any
one environment's names: the action a reply would take (`pending_action`), so
that a Checker role can judge it first; `step(text, rejection)`, which refuses
that action with the Checker's reason; how a finished episode ended, in the
environment-neutral `OUTCOMES` (`outcome(info)`); and `close()`. An
`Environments` supplies an engine with fresh environments and each task's
static Checker; the engine reads a task only through `Task`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional, Protocol, Sequence

from cmat_jax.chat import ASSISTANT, USER, Message

# How an episode ended (Environment.outcome of its last step's info).
SOLVED = "solved"
FAILED = "failed"  # ended (answered, or changed what it acts on) and was graded wrong
UNREADABLE = "unreadable"  # a reply the environment could not read
OUT_OF_ROUNDS = "out_of_rounds"  # the episode used up its actions without an answer
OUTCOMES = (SOLVED, FAILED, UNREADABLE, OUT_OF_ROUNDS)

# The step info entry where an environment that checks actions itself reports its own verdict; the rollout
# engine, whose Checker role judges instead, leaves it out of the record.
OWN_VERDICT = "verdict"


class Step(NamedTuple):
    """Unpacks as (observation, reward, done, info), as gym-style loops expect."""

    observation: str  # the next user turn ("" once done)
    reward: float
    done: bool
    info: dict[str, Any]


class Task(Protocol):
    """What agents read of a task."""

    @property
    def task_id(self) -> str:  # unique within a task pool
        ...

    @property
    def task_type(self) -> str:
        ...

    @property
    def prompt(self) -> str:  # the user turn that poses the task
        ...


class Environment(Protocol):
    def reset(self, task: Any) -> tuple[Message, ...]:
        """Starts an episode; returns the opening turns, the last of which is a user turn."""
        ...

    def pending_action(self, text: str) -> Optional[str]:
        """The action `step(text)` would take that a Checker may judge, or None (the reply ends the episode)."""
        ...

    def step(self, text: str, rejection: Optional[str] = None) -> Step:
        """Applies the agent's reply. `rejection`: a Checker's reason for refusing the reply's pending action;
        the action is not taken, it uses up its round, and the reason is the observation."""
        ...

    def outcome(self, info: dict[str, Any]) -> str:
        """How the episode ended, one of OUTCOMES, from the info of its last step."""
        ...

    def close(self) -> None:
        """Ends the current episode, if any, and frees what it holds."""
        ...


class CheckResult(Protocol):
    @property
    def ok(self) -> bool:
        ...

    @property
    def reason(self) -> str:  # one line the agent can act on ("" when ok)
        ...

    @property
    def rule(self) -> str:  # which check rejected the action ("" when ok)
        ...


class StaticChecker(Protocol):
    def check(self, action: str) -> CheckResult:
        """Verifies a pending action of one task without taking it."""
        ...


class Environments(Protocol):
    """Where a rollout engine plays: fresh environments, and the static Checker of each task."""

    def new(self) -> Environment:
        ...

    def static_checker(self, task: Any) -> StaticChecker:
        ...


class Agent(Protocol):
    def begin(self, task: Any) -> None:
        """Called before each episode. Scripted agents may read the task; model agents must not use its label."""
        ...

    def act(self, history: Sequence[Message]) -> str:
        """The agent's next reply, given the conversation so far (ending with a user turn)."""
        ...


@dataclasses.dataclass
class Episode:
    messages: list[Message]
    reward: float  # the final step's reward
    steps: list[dict[str, Any]]  # each step's info

    @property
    def final_info(self) -> dict[str, Any]:
        return self.steps[-1]


def run_episode(env: Environment, agent: Agent, task: Any) -> Episode:
    """Plays one episode to the end, one reply at a time (environments guarantee that it ends)."""
    messages = list(env.reset(task))
    agent.begin(task)
    infos = []
    while True:
        text = agent.act(tuple(messages))
        messages.append(Message(ASSISTANT, text))
        observation, reward, done, info = env.step(text)
        infos.append(info)
        if done:
            return Episode(messages, reward, infos)
        messages.append(Message(USER, observation))
