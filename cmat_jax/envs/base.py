"""The contract between text environments and the agents that act in them.

An episode is a conversation. `Environment.reset(task)` opens it with the turns
that precede the agent's first reply (fixed instructions and the task itself);
`Environment.step(text)` takes the agent's reply and returns the next user turn
as the observation, a reward and whether the episode is over. Agents see only
the conversation so far.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol, Sequence

from cmat_jax.chat import ASSISTANT, USER, Message

class Step(NamedTuple):
    """Unpacks as (observation, reward, done, info), as gym-style loops expect."""

    observation: str  # the next user turn ("" once done)
    reward: float
    done: bool
    info: dict[str, Any]


class Environment(Protocol):
    def reset(self, task: Any) -> tuple[Message, ...]:
        """Starts an episode; returns the opening turns, the last of which is a user turn."""
        ...

    def step(self, text: str) -> Step:
        """Applies the agent's reply."""
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
