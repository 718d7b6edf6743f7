"""The SFT warm start's data: the oracle's episodes of the training tasks, as chat conversations.

The demonstrations run through the same rollout engine and the same User
opening as the CMAT iterations, with the scripted oracle as the Assistant
(querying before answering: OracleAgent(query_first=True)). Each episode
becomes one conversation in the OpenAI JSONL form the SFT data layer reads,
with DBBench's injected "Ok." turn untrained, so the warm start is plain SFT
through the existing data pipeline (mixtures, packing, resumable order).

Recovery demonstrations: with `recovery_fraction` > 0 that share of the tasks
(a seeded draw per task) is played with a typical mistaken first statement
(cmat_jax/demos/mistakes.py), confirmed beforehand to error without changing
the table; the oracle then sends the gold statement and answers. The mistaken
turn is kept untrained (loss false): the model learns the fix, not the mistake.

Reflection demonstrations (`reflection_fraction`): cmat_jax/demos/reflections.py.
"""

from __future__ import annotations

import json
from typing import Sequence

from cmat_jax.agents.engine import RolloutConfig, RolloutEngine
from cmat_jax.agents.replies import ScriptedReplies
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.agents.trajectory import Trajectory
from cmat_jax.agents.user import User
from cmat_jax.chat import ASSISTANT, USER, Message
from cmat_jax.data.tokenizer import encode_conversation
from cmat_jax.demos.mistakes import demonstration_env, draw_mistakes
from cmat_jax.demos.oracle import OracleAgent
from cmat_jax.demos.reflections import play_reflections, reflection_conversations, reflection_mistakes
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig, SqlEnvironments
from cmat_jax.envs.sql.tasks import SqlTask
from cmat_jax.fileio import write_text_atomic


_SHARES = {"recovery_fraction": "the share of tasks played with a mistaken first statement",
           "reflection_fraction": "the share of tasks played as a failed trial, its reflection and the retry"}


def recovery_mistakes(tasks: Sequence[SqlTask], fraction: float, seed: int,
                      env_config: SqlEnvConfig) -> dict[str, str]:
    """Task id -> mistaken first statement for the share `fraction` of the tasks (each task's own seeded draw,
    so a task's choice does not depend on the others); tasks with no confirmed mistake get none."""
    if env_config.max_rounds < 2:  # the fix needs a second statement
        return {}
    drawn = draw_mistakes(tasks, fraction, "recovery", seed, env_config.limits)
    return {task_id: mistake.sql for task_id, mistake in drawn.items()}


def demonstrations(tasks: Sequence[SqlTask], user: User, env_config: SqlEnvConfig,
                   recovery_fraction: float = 0.0, seed: int = 0, reflection_fraction: float = 0.0,
                   tokenizer=None, checker: str = "off") -> list[list[Message]]:
    """One conversation per task: the opening, then the oracle's replies and the observations;
    `recovery_fraction` of them (drawn with `seed`) open with a mistaken statement and its error (the static
    Checker's rejection when `checker`, the run's Checker mode, has the static one).
    `reflection_fraction` of them (their own draw) give three: a failed trial, its reflection and the
    retry (see the module docstring; needs `tokenizer`, the one the rollouts use)."""
    for name, value in (("recovery_fraction", recovery_fraction), ("reflection_fraction", reflection_fraction)):
        if not 0.0 <= value <= 1.0:  # refused before any episode is played
            raise ValueError(f"{name} must be in [0, 1] ({_SHARES[name]}), found {value}")
    chosen = reflection_mistakes(tasks, reflection_fraction, seed, env_config)
    reflected: dict[str, tuple[Trajectory, Trajectory]] = {}
    if chosen:
        if tokenizer is None:
            raise ValueError("reflection demonstrations need the tokenizer (the engine's reflection prompts are "
                             "token ids); pass tokenizer=, or set reflection_fraction=0")
        reflected = play_reflections([t for t in tasks if t.task_id in chosen], chosen, user, env_config,
                                     tokenizer)
    plain_tasks = [t for t in tasks if t.task_id not in reflected]
    plain = iter(_plain_demonstrations(plain_tasks, user, env_config, recovery_fraction, seed, checker))
    env = SqlEnv(env_config)
    conversations = []
    for task in tasks:  # in the tasks' order, each task's conversations together
        if task.task_id in reflected:
            conversations += reflection_conversations(task, *reflected[task.task_id], user, env, tokenizer)
        else:
            conversations.append(next(plain))
    env.close()
    return conversations


def _plain_demonstrations(tasks: Sequence[SqlTask], user: User, env_config: SqlEnvConfig,
                          recovery_fraction: float, seed: int, checker: str) -> list[list[Message]]:
    """One conversation per task, `recovery_fraction` of them opening with a mistake (see `demonstrations`)."""
    if not tasks:
        return []
    mistakes = recovery_mistakes(tasks, recovery_fraction, seed, env_config)
    static = "static" if "static" in checker else "off"
    engine = RolloutEngine(SqlEnvironments(demonstration_env(env_config)),
                           RolloutConfig(checker=static, assistant=SamplingPolicy(1, 0.0)),
                           assistant=ScriptedReplies(lambda: OracleAgent(query_first=True, mistakes=mistakes)))
    trajectories = engine.run(tasks, user=user)
    failed = [t.task_id for t in trajectories if not t.correct]
    if failed:
        raise ValueError(f"the oracle fails {len(failed)} training task(s) (first: {failed[0]}); their labels or "
                         "gold SQL do not match the environment, fix or drop them")
    for trajectory in trajectories:
        first = trajectory.turns[0]
        blocked = first.verdict is not None and not first.verdict["ok"]
        if trajectory.task_id in mistakes and first.info.get("error") is None and not blocked:
            raise ValueError(f"task {trajectory.task_id}: the mistaken statement was not answered with a database "
                             f"error or a Checker rejection in the episode (observation "
                             f"{str(first.observation)[:80]!r}); recovery demonstrations need the environment's "
                             "checker mode 'report' or 'off'")
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


def check_lengths(conversations: Sequence[Sequence[Message]], tokenizer, seq_len: int) -> None:
    """Refuses demonstrations longer than a data.seq_len row: the data layer would cut their end (the gold
    statement or the answer), so the warm start would learn to stop before it, or with data.overlong=drop
    leave them out, and a demonstration-scarce run has none to spare."""
    lengths = [len(encode_conversation(tokenizer, c)[0]) for c in conversations]
    longest = max(lengths, default=0)
    if longest > seq_len + 1:
        over = sum(n > seq_len + 1 for n in lengths)
        raise ValueError(f"{over} of the {len(lengths)} warm-start demonstrations are longer than a data.seq_len="
                         f"{seq_len} row holds (the longest has {longest} tokens, a row {seq_len + 1}), so their "
                         f"ends would be cut (or, with data.overlong=drop, they would be left out); set "
                         f"--config.data.seq_len={longest - 1} or more (recovery and reflection demonstrations "
                         "are longer than plain ones)")


def write_demonstrations(path: str, conversations: Sequence[Sequence[Message]]) -> None:
    lines = [json.dumps({"messages": [m.to_dict() for m in c]}, ensure_ascii=False) for c in conversations]
    write_text_atomic(path, "\n".join(lines) + "\n")
