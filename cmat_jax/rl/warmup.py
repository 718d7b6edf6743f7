"""The SFT warm start's data: the oracle's episodes of the training tasks, as chat conversations.

The demonstrations run through the same rollout engine and the same User
opening as the CMAT iterations, with the scripted oracle as the Assistant
(querying before answering: OracleAgent(query_first=True)). Each episode
becomes one conversation in the OpenAI JSONL form the SFT data layer reads,
with DBBench's injected "Ok." turn untrained, so the warm start is plain SFT
through the existing data pipeline (mixtures, packing, resumable order).

Recovery demonstrations: with `recovery_fraction` > 0 that share of the tasks
(a seeded draw per task) is played with a typical mistaken first statement
(cmat_jax/agents/mistakes.py), confirmed beforehand to error without changing
the table; the oracle then sends the gold statement and answers. The mistaken
turn is kept untrained (loss false): the model learns the fix, not the mistake.
"""

from __future__ import annotations

import json
import random
from typing import Sequence

from cmat_jax.agents.engine import RolloutConfig, RolloutEngine
from cmat_jax.agents.mistakes import checked_mistake, gold_statement
from cmat_jax.agents.oracle import OracleAgent
from cmat_jax.agents.replies import SamplingSettings, ScriptedReplies
from cmat_jax.agents.user import User
from cmat_jax.chat import ASSISTANT, USER, Message
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from cmat_jax.envs.sql.tasks import SqlTask
from cmat_jax.fileio import write_text_atomic


def recovery_mistakes(tasks: Sequence[SqlTask], fraction: float, seed: int,
                      env_config: SqlEnvConfig) -> dict[str, str]:
    """Task id -> mistaken first statement for the share `fraction` of the tasks (each task's own seeded draw,
    so a task's choice does not depend on the others); tasks with no confirmed mistake get none."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"recovery_fraction must be in [0, 1] (the share of tasks played with a mistaken first "
                         f"statement), found {fraction}")
    mistakes: dict[str, str] = {}
    if fraction == 0.0 or env_config.max_rounds < 2:  # the fix needs a second statement
        return mistakes
    for task in tasks:
        rng = random.Random(f"recovery:{seed}:{task.task_id}")
        if rng.random() >= fraction or gold_statement(task) is None:
            continue
        mistake = checked_mistake(task, rng, env_config.limits)
        if mistake is not None and mistakes.setdefault(task.task_id, mistake) != mistake:
            raise ValueError(f"two different training tasks share the id {task.task_id}; task ids must be unique")
    return mistakes


def demonstrations(tasks: Sequence[SqlTask], user: User, env_config: SqlEnvConfig,
                   recovery_fraction: float = 0.0, seed: int = 0) -> list[list[Message]]:
    """One conversation per task: the opening, then the oracle's replies and the observations;
    `recovery_fraction` of them (drawn with `seed`) open with a mistaken statement and its error."""
    mistakes = recovery_mistakes(tasks, recovery_fraction, seed, env_config)
    engine = RolloutEngine(env_config, RolloutConfig(checker="off", assistant=SamplingSettings(1, 0.0)),
                           assistant=ScriptedReplies(lambda: OracleAgent(query_first=True, mistakes=mistakes)))
    trajectories = engine.run(tasks, user=user)
    failed = [t.task_id for t in trajectories if not t.correct]
    if failed:
        raise ValueError(f"the oracle fails {len(failed)} training task(s) (first: {failed[0]}); their labels or "
                         "gold SQL do not match the environment, fix or drop them")
    for trajectory in trajectories:
        first = trajectory.turns[0]
        if trajectory.task_id in mistakes and first.info.get("error") is None:
            raise ValueError(f"task {trajectory.task_id}: the mistaken statement was not answered with a database "
                             f"error in the episode (observation {str(first.observation)[:80]!r}); "
                             "recovery demonstrations need the environment's checker mode 'report' or 'off'")
    opening_env = SqlEnv(env_config)
    conversations = []
    for task, trajectory in zip(tasks, trajectories):
        messages = user.opening(opening_env.reset(task))
        messages[1] = Message(ASSISTANT, messages[1].content, loss=False)  # DBBench injects "Ok."
        for i, turn in enumerate(trajectory.turns):
            mistaken = i == 0 and trajectory.task_id in mistakes
            messages.append(Message(ASSISTANT, turn.text, loss=False) if mistaken else Message(ASSISTANT, turn.text))
            if turn.observation is not None:
                messages.append(Message(USER, turn.observation))
        conversations.append(messages)
    opening_env.close()
    return conversations


def write_demonstrations(path: str, conversations: Sequence[Sequence[Message]]) -> None:
    lines = [json.dumps({"messages": [m.to_dict() for m in c]}, ensure_ascii=False) for c in conversations]
    write_text_atomic(path, "\n".join(lines) + "\n")
