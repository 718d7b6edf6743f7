"""The batched rollout engine: B tasks x G samples x trials of episodes at once, turn by turn.

Each turn is one reply call per role over every live episode (one sampler call
when a model speaks), with the environment's steps in between:

    Assistant replies (all live episodes)
      -> the Checker role judges each reply's pending action (checker_role.py)
      -> the environment steps; a rejection's reason is the observation
      -> finished episodes leave the batch; the others get their observation

The environment itself never gates an action: only the Checker role does.
After a trial, every failed episode gets one reflection call (reflection.py),
and the retry shows the task's last Omega reflections before the task.
Prompts are token ids, extended turn by turn (prompt_ids.py); rewards are set
as each episode ends (rewards.py).

What is particular to one kind of task comes from the caller: `environments`
(cmat_jax.envs.base Environments) makes the environments and each task's static
Checker; the engine reads tasks only through envs.base's Task protocol and maps
an environment's outcome to a trajectory status. Reply sources follow
replies.ReplySource.

KV cache (`RolloutConfig.cache`): 'persistent' (the default) names the episode as
the context of its Assistant requests, so a model reply source keeps the
episode's keys and values between turns and prefills only the new ids; a new
segment's prompt reuses what still agrees with the cached ids. 'reprefill' sends
no context: every turn prefills the whole conversation. Both give the same
tokens (the tests hold them equal, greedy, at float32). The cache is dropped at
the start and end of each `run`: it is only valid for the weights of one rollout.

Continuous batching: at most `RolloutConfig.slots` episodes (and no more than the
reply source's `max_contexts`) play at once; when one ends, the next waiting
episode of the trial takes its place at the next turn. A trial's episodes start
(reset their environments) at most MAX_OPEN_EPISODES at a time. Trials stay in
order: reflections of trial t are written before any retry of trial t starts.

Several processes (the hosts of a TPU slice): each process plays the episodes
of its share of the tasks (task i goes to process i mod the process count),
with its own environments, Checkers and prompts. Every process makes the same
reply calls, turn by turn, until no process has a live episode; a model reply
source joins every process's requests into one sampler call (replies.py). At
the end, every process gets every trajectory, in the order one process gives,
and the run's reflections go into every process's long-term memory. Each
process's share of `slots` and of the reply source's contexts is the whole
divided by the process count.

Randomness: episode.py derives an episode's key from the run's key, its task
id, sample and trial, and each request folds in the role and turn. So results
do not depend on which or how many episodes share a sampler call.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import jax

from cmat_jax import distributed
from cmat_jax.agents import rewards
from cmat_jax.agents.checker_role import CHECKER_MODES, CheckerRole
from cmat_jax.agents.episode import Episode, episode_key
from cmat_jax.agents.memory import ReflectionMemory, render_memory
from cmat_jax.agents.prompt_ids import PromptIds
from cmat_jax.agents.reflection import reflect, remember
from cmat_jax.agents.replies import Reply, ReplySource, Request
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.agents.stats import RolloutStats
from cmat_jax.agents.trajectory import ASSISTANT_ROLE, CONTEXT_OVERFLOW, STATUS_OF_OUTCOME, Trajectory, Turn
from cmat_jax.agents.user import User
from cmat_jax.chat import ASSISTANT, USER, Message
from cmat_jax.envs.base import OWN_VERDICT, Environment, Environments, Task

CACHE_MODES = ("persistent", "reprefill")
MAX_OPEN_EPISODES = 512  # episodes of one trial started (databases opened) at a time


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    assistant: SamplingPolicy = SamplingPolicy(max_new_tokens=256)
    checker_sampling: SamplingPolicy = SamplingPolicy(max_new_tokens=64, temperature=0.0)
    reflection: SamplingPolicy = SamplingPolicy(max_new_tokens=128, temperature=0.0)
    trials: int = 1  # attempts per episode; 1 = no reflection
    checker: str = "static"  # one of CHECKER_MODES: off | static | learned | static+learned
    prompt_budget: Optional[int] = None  # prompt tokens; None: the sampler's max_len - assistant max_new_tokens
    cache: str = "persistent"  # persistent: keep each episode's KV cache across turns | reprefill: prefill all
    slots: Optional[int] = None  # episodes played at once (continuous batching); None: every episode of a trial

    def __post_init__(self):
        if self.checker not in CHECKER_MODES:
            raise ValueError(f"checker is {self.checker!r}; choose from {', '.join(CHECKER_MODES)}")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"rollout cache is {self.cache!r}; choose from {', '.join(CACHE_MODES)}")
        if self.slots is not None and (not isinstance(self.slots, int) or self.slots < 1):
            raise ValueError(f"rollout slots must be a positive int (episodes at once) or None (all), "
                             f"found {self.slots!r}")
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"reflection.trials must be a positive int (1 = no reflection), found {self.trials!r}")

    @property
    def learned_checker(self) -> bool:
        return "learned" in self.checker


class RolloutEngine:
    """Plays episodes for many tasks at once (see the module docstring).

    `environments` makes the environments and static Checkers (envs/sql: SqlEnvironments(SqlEnvConfig)).
    `assistant`, `checker_model` and `reflector` are reply sources; `weights` passed to `run` holds each
    model role's weights ('assistant', 'checker'). A tokenizer is needed for model roles.
    """

    def __init__(self, environments: Environments, config: RolloutConfig, *, assistant: ReplySource,
                 tokenizer=None, checker_model: Optional[ReplySource] = None,
                 reflector: Optional[ReplySource] = None, max_len: Optional[int] = None):
        self.environments = environments
        self.config = config
        self.assistant = assistant
        self.reflector = reflector
        budget = config.prompt_budget
        if budget is None and max_len is not None:
            budget = max_len - config.assistant.max_new_tokens
        self.prompts = PromptIds(tokenizer, budget, max_len)
        self.stats = RolloutStats()
        self.checker = CheckerRole(config.checker, environments, checker_model, config.checker_sampling,
                                   self.prompts, self.stats)
        if config.trials > 1 and reflector is None:
            raise ValueError(f"reflection.trials={config.trials} needs a model to write reflections; use trials=1 "
                             "or give the engine a reflector")
        self._envs: list[Environment] = []
        self._on_finish: Optional[Callable[[Trajectory], None]] = None

    # -- public ------------------------------------------------------------

    def run(self, tasks: Sequence[Task], *, group_size: int = 1, key: Optional[jax.Array] = None,
            weights: Optional[dict[str, Any]] = None, memory: Optional[ReflectionMemory] = None,
            user: Optional[User] = None, on_finish: Optional[Callable[[Trajectory], None]] = None
            ) -> list[Trajectory]:
        """Every trial of every (task, sample) episode; trajectories ordered by trial, task, sample.

        `on_finish(trajectory)` is called as each trial's episode ends (status and reward set, before
        any reflection on it is written), e.g. to drive a progress bar.
        """
        weights = weights or {}
        memory = memory if memory is not None else ReflectionMemory()
        user = user or User(tasks, seed=0, curriculum=False)
        if key is None and not self.config.assistant.greedy:
            raise ValueError("sampling with temperature > 0 needs a key; pass key=jax.random.key(seed)")
        start = time.perf_counter()
        stats_before = dataclasses.replace(self.stats)
        self._on_finish = on_finish
        memory_before = memory.state()
        processes, process = jax.process_count(), jax.process_index()
        pending = [(index, task, sample) for index, task in enumerate(tasks) if index % processes == process
                   for sample in range(group_size)]
        played: list[Trajectory] = []
        self.assistant.clear_contexts()  # cached keys and values of earlier weights are stale
        try:
            for trial in range(self.config.trials):
                episodes = []
                # An open episode holds its environment's resources (DBBench: an in-memory SQLite database,
                # and SQLite's heap cap is process-wide).
                chunks = max(distributed.gather_objects(-(-len(pending) // MAX_OPEN_EPISODES)))
                for first in range(0, chunks * MAX_OPEN_EPISODES, MAX_OPEN_EPISODES):
                    part = pending[first:first + MAX_OPEN_EPISODES]
                    chunk = [self._start(slot, index, task, sample, trial, group_size, key, memory, user)
                             for slot, (index, task, sample) in enumerate(part)]
                    self._play(chunk, weights)
                    episodes += chunk
                played += [e.trajectory for e in episodes]
                failed = [e for e in episodes if not e.trajectory.correct]
                if trial + 1 == self.config.trials or not distributed.any_process(bool(failed)):
                    break
                with self.stats.timed("reflection_s"):
                    reflect(failed, self.reflector, weights.get(ASSISTANT_ROLE), self.config.reflection, memory,
                            self.prompts, self.stats)
                pending = [(e.trajectory.group_id, e.task, e.trajectory.sample) for e in failed]
        finally:
            self.assistant.clear_contexts()  # frees the cache's device memory for the update that follows
        trajectories = sorted((t for share in distributed.gather_objects(played) for t in share),
                              key=lambda t: (t.trial, t.group_id, t.sample))
        remember(memory, memory_before, trajectories)
        self.stats.episodes += len(played)
        self.stats.total_s += time.perf_counter() - start
        self.last_stats = self.stats.since(stats_before)
        return trajectories

    # -- episodes ----------------------------------------------------------

    def _start(self, slot: int, index: int, task: Task, sample: int, trial: int, group_size: int, key, memory,
               user) -> Episode:
        uid = (index * group_size + sample) * self.config.trials + trial
        shown = memory.recent(task.task_id) if trial > 0 else []
        env = self._env(slot)
        with self.stats.timed("env_s"):
            opening = env.reset(task)
        messages = user.opening(opening, render_memory(shown))
        trajectory = Trajectory(task_id=task.task_id, task_type=task.task_type, group_id=index, sample=sample,
                                trial=trial, memory_shown=list(shown))
        episode = Episode(uid, task, trajectory, env, messages,
                          None if key is None else episode_key(key, task, sample, trial))
        self.checker.begin(episode)
        with self.stats.timed("prompt_s"):
            self.prompts.start(episode)
        return episode

    def _env(self, slot: int) -> Environment:
        # One environment per episode of a trial, reused across trials and calls.
        while len(self._envs) <= slot:
            self._envs.append(self.environments.new())
        return self._envs[slot]

    def _play(self, episodes: list[Episode], weights: dict) -> None:
        """Plays the episodes of one trial to their end, at most `_live_limit` at once."""
        waiting = collections.deque(episodes)
        live: list[Episode] = []
        limit = self._live_limit(len(episodes))
        while True:
            live = [e for e in live if not e.done]
            while waiting and len(live) < limit:  # a finished episode's place goes to the next waiting one
                live.append(waiting.popleft())
            if not distributed.any_process(bool(live)):  # every process takes part in every reply call
                return
            with self.stats.timed("prompt_s"):
                turn_live = [e for e in live if self._fit_prompt(e)]
            with self.stats.timed("assistant_s"):
                replies = self.stats.call(self.assistant, weights.get(ASSISTANT_ROLE),
                                          [self._assistant_request(e) for e in turn_live], self.config.assistant)
            turns = [self._assistant_turn(e, r) for e, r in zip(turn_live, replies)]
            rejections = self.checker.judge(turn_live, turns, weights)
            for episode, turn, rejection in zip(turn_live, turns, rejections):
                self._apply(episode, turn, rejection)

    def _live_limit(self, episodes: int) -> int:
        """Episodes this process plays at once: its share of `config.slots`, and of the contexts persistent
        slots can hold (each process's episodes join one reply call)."""
        processes = jax.process_count()
        limit = self.config.slots // processes if self.config.slots else episodes
        capacity = self.assistant.max_contexts
        if self.config.cache == "persistent" and capacity:
            limit = min(limit, capacity // processes)
        return max(1, min(limit, episodes))

    def _assistant_request(self, episode: Episode) -> Request:
        request = episode.request(ASSISTANT_ROLE)
        if self.config.cache == "persistent":
            request = dataclasses.replace(request, context=episode.uid)
        return request

    def _assistant_turn(self, episode: Episode, reply: Reply) -> Turn:
        turn = Turn(role=ASSISTANT_ROLE, segment=episode.segment, prompt_ids=list(episode.prompt_ids or []),
                    completion_ids=list(reply.ids), completion_logprobs=list(reply.logprobs),
                    finish_reason=reply.finish_reason, text=reply.text)
        episode.trajectory.turns.append(turn)
        return turn

    def _apply(self, episode: Episode, turn: Turn, rejection: Optional[str]) -> None:
        with self.stats.timed("env_s"):
            observation, _, done, info = episode.env.step(turn.text, rejection)
        turn.info = {k: v for k, v in info.items() if k != OWN_VERDICT}  # the turn's verdict is the Checker role's
        episode.turn += 1
        episode.messages.append(Message(ASSISTANT, turn.text))
        if done:
            turn.observation = None
            self._finish(episode, info, STATUS_OF_OUTCOME[episode.env.outcome(info)])
            return
        turn.observation = observation
        episode.messages.append(Message(USER, observation))
        with self.stats.timed("prompt_s"):
            self.prompts.extend(episode, turn.completion_ids)

    def _fit_prompt(self, episode: Episode) -> bool:
        """Fits the prompt to the budget (prompt_ids.py); ends the episode when nothing fits."""
        if self.prompts.fit(episode):
            return True
        episode.env.close()
        self._finish(episode, {"status": CONTEXT_OVERFLOW, "correct": False, "task_id": episode.task.task_id,
                               "task_type": episode.task.task_type, "rounds": episode.turn,
                               "prompt_tokens": len(episode.prompt_ids)}, CONTEXT_OVERFLOW)
        return False

    def _finish(self, episode: Episode, info: dict, status: str) -> None:
        trajectory = episode.trajectory
        trajectory.final_info = dict(info)
        trajectory.status = status
        rewards.score(trajectory)
        episode.done = True
        self.assistant.forget(episode.uid)
        if self._on_finish is not None:
            self._on_finish(trajectory)
