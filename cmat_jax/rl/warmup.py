"""The SFT warm start's data: the oracle's episodes of the training tasks, as chat conversations.

The demonstrations run through the same rollout engine and the same User
opening as the CMAT iterations, with the scripted oracle as the Assistant
(querying before answering: OracleAgent(query_first=True)). Each episode
becomes one conversation in the OpenAI JSONL form the SFT data layer reads,
with DBBench's injected "Ok." turn untrained, so the warm start is plain SFT
through the existing data pipeline (mixtures, packing, resumable order).
"""

from __future__ import annotations

import json
from typing import Sequence

from cmat_jax.agents.engine import RolloutConfig, RolloutEngine
from cmat_jax.agents.oracle import OracleAgent
from cmat_jax.agents.replies import SamplingSettings, ScriptedReplies
from cmat_jax.agents.user import User
from cmat_jax.chat import ASSISTANT, USER, Message
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from cmat_jax.envs.sql.tasks import SqlTask
from cmat_jax.fileio import write_text_atomic


def demonstrations(tasks: Sequence[SqlTask], user: User, env_config: SqlEnvConfig) -> list[list[Message]]:
    """One conversation per task: the opening, then the oracle's replies and the observations."""
    engine = RolloutEngine(env_config, RolloutConfig(checker="off", assistant=SamplingSettings(1, 0.0)),
                           assistant=ScriptedReplies(lambda: OracleAgent(query_first=True)))
    trajectories = engine.run(tasks, user=user)
    failed = [t.task_id for t in trajectories if not t.correct]
    if failed:
        raise ValueError(f"the oracle fails {len(failed)} training task(s) (first: {failed[0]}); their labels or "
                         "gold SQL do not match the environment, fix or drop them")
    opening_env = SqlEnv(env_config)
    conversations = []
    for task, trajectory in zip(tasks, trajectories):
        messages = user.opening(opening_env.reset(task))
        messages[1] = Message(ASSISTANT, messages[1].content, loss=False)  # DBBench injects "Ok."
        for turn in trajectory.turns:
            messages.append(Message(ASSISTANT, turn.text))
            if turn.observation is not None:
                messages.append(Message(USER, turn.observation))
        conversations.append(messages)
    opening_env.close()
    return conversations


def write_demonstrations(path: str, conversations: Sequence[Sequence[Message]]) -> None:
    lines = [json.dumps({"messages": [m.to_dict() for m in c]}, ensure_ascii=False) for c in conversations]
    write_text_atomic(path, "\n".join(lines) + "\n")
