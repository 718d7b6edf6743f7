"""Reflection demonstrations for the SFT warm start (cmat_jax/demos/warmup.py).

With `reflection_fraction` > 0 a share of the training tasks (its own seeded
draw per task, among those with a confirmed mistake) is
played as two trials through the engine with reflection on, so every prompt is
the one the engine builds at run time. Trial 1 sends the mistaken statement and
answers with the error's code (the failure seen on DBBench), so it is graded
wrong; the engine's reflection call is answered by a template plan that names
the mistake and the right name (REFLECTION_PLANS); trial 2, shown that plan as
memory, is the oracle's gold run. Each becomes its own conversation: trial 1
untrained, the reflection prompt and its plan (trained), and trial 2 with the
memory in its opening (trained as a plain demonstration). These tasks get no
recovery mistake (trial 1 already shows one); a task whose failing trial is
graded correct anyway (a mutation that changes nothing) falls back to a plain
demonstration. Playing reflections needs the tokenizer: the engine's reflection
prompts are token ids, and each rebuilt conversation is checked against them.
"""

from __future__ import annotations

import collections
import re
from typing import Mapping, Optional, Sequence

from cmat_jax.agents import prompts as prompt_lib
from cmat_jax.agents.engine import RolloutConfig, RolloutEngine
from cmat_jax.agents.memory import render_memory
from cmat_jax.agents.replies import ScriptedReplies
from cmat_jax.agents.trajectory import ASSISTANT_ROLE, REFLECTION_ROLE, Trajectory
from cmat_jax.agents.user import User
from cmat_jax.chat import ASSISTANT, USER, Message
from cmat_jax.data.tokenizer import decode_ids, render_chat
from cmat_jax.demos.mistakes import Mistake, demonstration_env, draw_mistakes, plain_name
from cmat_jax.demos.oracle import OracleAgent, answer_reply, operation_reply
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig, SqlEnvironments
from cmat_jax.envs.sql.tasks import SqlTask
from cmat_jax.sampling.policy import SamplingPolicy

REFLECTION_PLANS = {
    "table": ("The statement used the table name {wrong}, which does not exist. The table is named {right}: "
              "copy the name exactly from the task{quotes} and run the statement again instead of answering "
              "with the error."),
    "unquoted": ("The statement wrote the column {wrong} without backquotes, so the database could not read it. "
                 "Write it as {right}{quotes} and run the statement again instead of answering with the error."),
    "column": ("The statement used the column {wrong}, which the table does not have. The column is named "
               "{right}: copy the header exactly from the task{quotes} and run the statement again instead of "
               "answering with the error."),
}
_ERROR_CODE = re.compile(r"\d+ \([0-9A-Z]+\)")  # MySQL's "1054 (42S22)" at the start of an error text


def reflection_mistakes(tasks: Sequence[SqlTask], fraction: float, seed: int,
                        env_config: SqlEnvConfig) -> dict[str, Mistake]:
    """Task id -> the confirmed mistake trial 1 makes, for the share `fraction` of the tasks (each task's own
    seeded draw, independent of the recovery draw); tasks with no confirmed mistake get none."""
    if env_config.max_rounds < 2:  # each trial needs a statement and an answer
        return {}
    return draw_mistakes(tasks, fraction, "reflection", seed, env_config.limits)


def reflection_plan(mistake: Mistake) -> str:
    """The scripted reflection on a trial that failed by `mistake`: names the mistake and the fix (backquotes
    are asked for where the right name needs them, as the gold statement of trial 2 then writes it)."""
    right = "`" + mistake.right.replace("`", "``") + "`"
    quotes = "" if plain_name(mistake.right) else ", in backquotes,"
    return REFLECTION_PLANS[mistake.kind].format(wrong=mistake.wrong, right=right, quotes=quotes)


class FailThenSolveAgent:
    """The Assistant of a reflection demonstration. Trial 1 of a task (the first `begin` of its id on the
    shared `begun` counter): the mistaken statement, then the error's code as the answer. Later trials:
    the oracle (querying first)."""

    name = "fail-then-solve"

    def __init__(self, mistakes: Mapping[str, Mistake], begun: collections.Counter):
        self.mistakes = mistakes
        self.begun = begun
        self._task: Optional[SqlTask] = None
        self._oracle: Optional[OracleAgent] = None
        self._sent = False

    def begin(self, task: SqlTask) -> None:
        if task.task_id not in self.mistakes:
            raise ValueError(f"task {task.task_id} has no mistake to fail with; give FailThenSolveAgent only "
                             "tasks of its mistakes")
        first_trial = self.begun[task.task_id] == 0
        self.begun[task.task_id] += 1
        self._task, self._sent = task, False
        self._oracle = None if first_trial else OracleAgent(query_first=True)
        if self._oracle is not None:
            self._oracle.begin(task)

    def act(self, history: Sequence[Message]) -> str:
        if self._task is None:
            raise RuntimeError("FailThenSolveAgent.act called before begin(task)")
        if self._oracle is not None:
            return self._oracle.act(history)
        if not self._sent:
            self._sent = True
            return operation_reply(self.mistakes[self._task.task_id].sql)
        code = _ERROR_CODE.match(history[-1].content.strip())
        if code is None:
            raise ValueError(f"task {self._task.task_id}: the mistaken statement was answered with "
                             f"{history[-1].content[:80]!r}, not a MySQL error; reflection demonstrations need "
                             "mistakes that `checked_mistake` confirmed")
        return answer_reply([code.group(0)])


class PlanReflector:
    """The reflector of a reflection demonstration: the template plan of the task's mistake."""

    name = "plan-reflector"

    def __init__(self, mistakes: Mapping[str, Mistake]):
        self.mistakes = mistakes
        self._task: Optional[SqlTask] = None

    def begin(self, task: SqlTask) -> None:
        self._task = task

    def act(self, history: Sequence[Message]) -> str:
        if self._task is None:
            raise RuntimeError("PlanReflector.act called before begin(task)")
        return reflection_plan(self.mistakes[self._task.task_id])


def _episode_turns(trajectory: Trajectory, trained: bool) -> list[Message]:
    """The Assistant's replies and the observations of one trial, as the engine appended them."""
    messages = []
    for turn in trajectory.role_turns(ASSISTANT_ROLE):
        messages.append(Message(ASSISTANT, turn.text, loss=None if trained else False))
        if turn.observation is not None:
            messages.append(Message(USER, turn.observation))
    return messages


def _check_prompt(tokenizer, messages: Sequence[Message], prompt_ids: Sequence[int], what: str) -> None:
    """The rebuilt conversation before a reply must be exactly the prompt the engine sent."""
    shown = decode_ids(tokenizer, prompt_ids)
    if render_chat(tokenizer, messages, add_generation_prompt=True) != shown:
        raise ValueError(f"{what}: the rebuilt conversation differs from the prompt the engine showed "
                         f"({shown[-120:]!r}); the demonstrations would not match the rollouts")


def reflection_conversations(task: SqlTask, first: Trajectory, second: Trajectory, user: User,
                              env: SqlEnv, tokenizer) -> list[list[Message]]:
    """[trial 1 (untrained), the reflection prompt and its plan, trial 2 with its memory] of one task."""
    conversations = []
    for trial in (first, second):
        # The retry's opening carries the memory the engine showed; "Ok." is DBBench's injected turn.
        messages = user.opening(env.reset(task), render_memory(trial.memory_shown))
        opening = len(messages)
        messages[1] = Message(ASSISTANT, messages[1].content, loss=False)
        messages += _episode_turns(trial, trained=trial is second)
        for i, turn in enumerate(trial.role_turns(ASSISTANT_ROLE)):  # every prompt the engine sent
            _check_prompt(tokenizer, messages[:opening + 2 * i], turn.prompt_ids,
                          f"task {task.task_id}'s trial {trial.trial + 1}")
        conversations.append(messages)
        if trial is first:
            reflection, = first.role_turns(REFLECTION_ROLE)
            prompt = prompt_lib.reflection_prompt(task.prompt, messages[opening:])
            _check_prompt(tokenizer, prompt, reflection.prompt_ids, f"task {task.task_id}'s reflection")
            conversations.append(prompt + [Message(ASSISTANT, reflection.text)])
    return conversations


def play_reflections(tasks: Sequence[SqlTask], mistakes: Mapping[str, Mistake], user: User,
                     env_config: SqlEnvConfig, tokenizer) -> dict[str, tuple[Trajectory, Trajectory]]:
    """Task id -> (failed trial, retry) of every task whose failing trial was graded wrong."""
    begun: collections.Counter = collections.Counter()
    config = RolloutConfig(checker="off", assistant=SamplingPolicy(1, 0.0), trials=2,
                           reflection=SamplingPolicy(1, 0.0))
    engine = RolloutEngine(SqlEnvironments(demonstration_env(env_config)), config, tokenizer=tokenizer,
                           assistant=ScriptedReplies(lambda: FailThenSolveAgent(mistakes, begun)),
                           reflector=ScriptedReplies(lambda: PlanReflector(mistakes)))
    trajectories = engine.run(tasks, user=user)
    firsts = {t.task_id: t for t in trajectories if t.trial == 0}
    seconds = {t.task_id: t for t in trajectories if t.trial == 1}
    failed = [t for t in seconds.values() if not t.correct]
    if failed:
        raise ValueError(f"the oracle fails {len(failed)} training task(s) after a reflection (first: "
                         f"{failed[0].task_id}); their labels or gold SQL do not match the environment, fix or "
                         "drop them")
    return {task_id: (firsts[task_id], second) for task_id, second in seconds.items()}
