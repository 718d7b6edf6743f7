"""The batched rollout engine: B tasks x G samples x trials of DBBench episodes at once.

Each turn is one reply call per role over every live episode (one sampler call
when a model speaks), with the environment's steps in between:

    Assistant replies (all live episodes)
      -> the Checker role judges each proposed statement: static (sqlglot) checks,
         then a learned Checker (one batched call over the statements still approved)
      -> the environment runs approved statements; a rejection's reason is the observation
      -> finished episodes leave the batch; the others get their observation

The environment itself never gates a statement: only the Checker role does.
After a trial, every failed episode gets one reflection call (batched); the
reflection goes into long-term memory under its task, and the retry shows the
task's last Omega reflections before the task.

Token ids are the record. An episode's next prompt is its previous prompt, the
sampled ids and the ids of the new turns, found as the text the chat template
adds after what the previous ids decode to. Every turn checks that the new
prompt decodes to the full rendering of the conversation; where the template
does not extend the previous text (or old observations were dropped to fit
`prompt_budget`), the prompt is rendered anew and a new segment starts. Text is
never re-tokenized into a prompt otherwise.

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
(open their databases) at most MAX_OPEN_EPISODES at a time. Trials stay in order:
reflections of trial t are written before any retry of trial t starts.

Several processes (the hosts of a TPU slice): each process plays the episodes
of its share of the tasks (task i goes to process i mod the process count),
with its own environments, Checkers and prompts. Every process makes the same
reply calls, turn by turn, until no process has a live episode; a model reply
source joins every process's requests into one sampler call (replies.py). At
the end, every process gets every trajectory, in the order one process gives,
and the run's reflections go into every process's long-term memory. Each
process's share of `slots` and of the reply source's contexts is the whole
divided by the process count.

Randomness: an episode's key is derived from the run's key, its task id, sample
and trial, and each call folds in the role and turn. So results do not depend
on which or how many episodes share a sampler call.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
import zlib
from typing import Any, Callable, Optional, Sequence

import jax

from cmat_jax import distributed
from cmat_jax.agents import prompts as prompt_lib
from cmat_jax.agents.memory import ReflectionMemory, fit_observations, render_memory
from cmat_jax.agents.replies import Reply, Request
from cmat_jax.agents.trajectory import (ASSISTANT_ROLE, CHECKER_ROLE, CONTEXT_OVERFLOW, CORRECT, FORMAT_FAILURE,
                                        REFLECTION_ROLE, ROUND_LIMIT, WRONG, Trajectory, Turn)
from cmat_jax.agents.user import User
from cmat_jax.chat import ASSISTANT, USER, Message
from cmat_jax.data.tokenizer import decode_ids, render_chat, tokenize_text
from cmat_jax.envs.sql import env as sql_env
from cmat_jax.envs.sql.checker import Checker, Verdict
from cmat_jax.envs.sql.env import SqlEnv, SqlEnvConfig
from cmat_jax.envs.sql.tasks import SqlTask
from cmat_jax.sampling.policy import SamplingPolicy

CHECKER_MODES = ("off", "static", "learned", "static+learned")
CACHE_MODES = ("persistent", "reprefill")
_ROLE_STREAMS = {ASSISTANT_ROLE: 0, CHECKER_ROLE: 1, REFLECTION_ROLE: 2}


MAX_OPEN_EPISODES = 512  # episodes of one trial started (databases opened) at a time

@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    assistant: SamplingPolicy = SamplingPolicy(max_new_tokens=256)
    checker_sampling: SamplingPolicy = SamplingPolicy(max_new_tokens=64, temperature=0.0)
    reflection: SamplingPolicy = SamplingPolicy(max_new_tokens=128, temperature=0.0)
    trials: int = 1  # attempts per episode; 1 = no reflection
    checker: str = "static"  # off | static | learned | static+learned
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

    @property
    def static_checker(self) -> bool:
        return "static" in self.checker


@dataclasses.dataclass
class RolloutStats:
    """Where a rollout's time went, and how much it produced."""

    episodes: int = 0
    new_tokens: int = 0
    sampler_calls: int = 0  # reply calls: one per role per turn
    assistant_s: float = 0.0  # the Assistant's reply calls
    static_checker_s: float = 0.0
    learned_checker_s: float = 0.0  # building its prompts and its reply calls
    env_s: float = 0.0  # environment resets and steps
    reflection_s: float = 0.0
    prompt_s: float = 0.0  # rendering and extending prompts, fitting them to the budget
    total_s: float = 0.0


class _Episode:
    def __init__(self, uid: int, task: SqlTask, trajectory: Trajectory, env: SqlEnv, messages: list[Message],
                 key: Optional[jax.Array]):
        self.uid = uid
        self.task = task
        self.trajectory = trajectory
        self.env = env
        self.messages = messages
        self.opening_length = len(messages)
        self.key = key
        self.prompt_ids: Optional[list[int]] = None
        self.segment = 0
        self.turn = 0
        self.done = False
        self.checker: Optional[Checker] = None


class RolloutEngine:
    """Plays DBBench episodes for many tasks at once (see the module docstring).

    `assistant`, `checker_model` and `reflector` are reply sources
    (cmat_jax.agents.replies); `weights` passed to `run` holds each model role's
    weights ('assistant', 'checker'). A tokenizer is needed for model roles.
    """

    def __init__(self, env_config: SqlEnvConfig, config: RolloutConfig, *, assistant, tokenizer=None,
                 checker_model=None, reflector=None, max_len: Optional[int] = None):
        self.env_config = dataclasses.replace(env_config, checker="off")  # only the Checker role gates
        self.config = config
        self.assistant = assistant
        self.checker_model = checker_model
        self.reflector = reflector
        self.tokenizer = tokenizer
        if config.learned_checker and checker_model is None:
            raise ValueError(f"checker={config.checker!r} needs a model for the Checker role; use 'static' or 'off' "
                             "with a scripted agent, or give the engine a checker_model")
        if config.trials > 1 and reflector is None:
            raise ValueError(f"reflection.trials={config.trials} needs a model to write reflections; use trials=1 "
                             "or give the engine a reflector")
        self.budget = config.prompt_budget
        if self.budget is None and max_len is not None:
            self.budget = max_len - config.assistant.max_new_tokens
        self._envs: list[SqlEnv] = []
        self._images: dict = {}
        self.stats = RolloutStats()
        self._on_finish: Optional[Callable[[Trajectory], None]] = None

    # -- public ------------------------------------------------------------

    def run(self, tasks: Sequence[SqlTask], *, group_size: int = 1, key: Optional[jax.Array] = None,
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
        self._clear_contexts()  # cached keys and values of earlier weights are stale
        try:
            for trial in range(self.config.trials):
                episodes = []
                # Each open episode holds an in-memory database, and SQLite's heap cap is process-wide.
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
                self._reflect(failed, weights, memory)
                pending = [(e.trajectory.group_id, e.task, e.trajectory.sample) for e in failed]
        finally:
            self._clear_contexts()  # frees the cache's device memory for the update that follows
        trajectories = sorted((t for share in distributed.gather_objects(played) for t in share),
                              key=lambda t: (t.trial, t.group_id, t.sample))
        _remember(memory, memory_before, trajectories)
        self.stats.episodes += len(played)
        self.stats.total_s += time.perf_counter() - start
        self.last_stats = _difference(self.stats, stats_before)
        return trajectories

    # -- episodes ----------------------------------------------------------

    def _start(self, slot: int, index: int, task: SqlTask, sample: int, trial: int, group_size: int, key, memory,
               user) -> _Episode:
        uid = (index * group_size + sample) * self.config.trials + trial
        shown = memory.recent(task.task_id) if trial > 0 else []
        env = self._env(slot)
        with self._timed("env_s"):
            opening = env.reset(task)
        messages = user.opening(opening, render_memory(shown))
        trajectory = Trajectory(task_id=task.task_id, task_type=task.task_type, group_id=index, sample=sample,
                                trial=trial, memory_shown=list(shown))
        episode = _Episode(uid, task, trajectory, env, messages, None if key is None else episode_key(key, task, sample, trial))
        if self.config.static_checker:
            episode.checker = Checker.for_task(task)
        if self.tokenizer is not None:
            with self._timed("prompt_s"):
                episode.prompt_ids = tokenize_text(self.tokenizer, self._render(messages))
        return episode

    def _env(self, slot: int) -> SqlEnv:
        # One environment per episode of a trial, reused across trials and calls; all share one cache
        # of table images (an image is built once per task).
        while len(self._envs) <= slot:
            self._envs.append(SqlEnv(self.env_config, self._images))
        return self._envs[slot]

    def _play(self, episodes: list[_Episode], weights: dict) -> None:
        """Plays the episodes of one trial to their end, at most `_live_limit` at once."""
        waiting = collections.deque(episodes)
        live: list[_Episode] = []
        limit = self._live_limit(len(episodes))
        while True:
            live = [e for e in live if not e.done]
            while waiting and len(live) < limit:  # a finished episode's place goes to the next waiting one
                live.append(waiting.popleft())
            if not distributed.any_process(bool(live)):  # every process takes part in every reply call
                return
            with self._timed("prompt_s"):
                turn_live = [e for e in live if self._fit_prompt(e)]
            with self._timed("assistant_s"):
                replies = self._call(self.assistant, weights.get(ASSISTANT_ROLE),
                                     [self._assistant_request(e) for e in turn_live], self.config.assistant)
            turns = [self._assistant_turn(e, r) for e, r in zip(turn_live, replies)]
            verdicts = self._check(turn_live, turns, weights)
            for episode, turn, verdict in zip(turn_live, turns, verdicts):
                self._apply(episode, turn, verdict)

    def _live_limit(self, episodes: int) -> int:
        """Episodes this process plays at once: its share of `config.slots`, and of the contexts persistent
        slots can hold (each process's episodes join one reply call)."""
        processes = jax.process_count()
        limit = self.config.slots // processes if self.config.slots else episodes
        capacity = getattr(self.assistant, "max_contexts", None)
        if self.config.cache == "persistent" and capacity:
            limit = min(limit, capacity // processes)
        return max(1, min(limit, episodes))

    def _assistant_request(self, episode: _Episode) -> Request:
        request = self._request(episode, ASSISTANT_ROLE)
        if self.config.cache == "persistent":
            request = dataclasses.replace(request, context=episode.uid)
        return request

    def _clear_contexts(self) -> None:
        if hasattr(self.assistant, "clear_contexts"):
            self.assistant.clear_contexts()

    @contextlib.contextmanager
    def _timed(self, field: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self.stats, field, getattr(self.stats, field) + time.perf_counter() - start)

    def _call(self, source, weights, requests: list[Request], settings: SamplingPolicy) -> list[Reply]:
        replies = source(weights, requests, settings)
        self.stats.sampler_calls += bool(requests)
        self.stats.new_tokens += sum(len(r.ids) for r in replies)
        return replies

    def _request(self, episode: _Episode, role: str, prompt_ids=None, messages=None) -> Request:
        key = None
        if episode.key is not None:
            key = jax.random.fold_in(jax.random.fold_in(episode.key, _ROLE_STREAMS[role]), episode.turn)
        return Request(episode.uid, episode.task, messages or episode.messages,
                       prompt_ids if prompt_ids is not None else episode.prompt_ids, key)

    def _assistant_turn(self, episode: _Episode, reply: Reply) -> Turn:
        turn = Turn(role=ASSISTANT_ROLE, segment=episode.segment, prompt_ids=list(episode.prompt_ids or []),
                    completion_ids=list(reply.ids), completion_logprobs=list(reply.logprobs),
                    finish_reason=reply.finish_reason, text=reply.text)
        episode.trajectory.turns.append(turn)
        return turn

    # -- the Checker role --------------------------------------------------

    def _check(self, episodes: list[_Episode], turns: list[Turn], weights: dict) -> list[Optional[Verdict]]:
        """The Checker role's rejection of each turn's statement (None: approved, or no statement)."""
        verdicts: list[Optional[Verdict]] = [None] * len(episodes)
        to_learn = []
        for i, (episode, turn) in enumerate(zip(episodes, turns)):
            sql = episode.env.pending_sql(turn.text)
            if sql is None or self.config.checker == "off":
                continue
            if episode.checker is not None:
                with self._timed("static_checker_s"):
                    static = episode.checker.check(sql)
                turn.verdict = {"source": "static", "ok": static.ok, "reason": static.reason, "rule": static.rule}
                if not static.ok:
                    verdicts[i] = static
                    continue
            if self.config.learned_checker:
                to_learn.append((i, sql))
        if self.config.learned_checker:  # a call even without statements: other processes may have some
            with self._timed("learned_checker_s"):
                self._learned_verdicts(episodes, turns, to_learn, verdicts, weights)
        return verdicts

    def _learned_verdicts(self, episodes: list[_Episode], turns: list[Turn], to_learn: list[tuple[int, str]],
                          verdicts: list[Optional[Verdict]], weights: dict) -> None:
        """One batched reply call of the learned Checker over the statements in `to_learn`; records its turns."""
        requests, prompts = [], []
        for i, sql in to_learn:
            episode = episodes[i]
            messages = prompt_lib.checker_prompt(episode.task.prompt, sql)
            ids = tokenize_text(self.tokenizer, self._render(messages))
            requests.append(self._request(episode, CHECKER_ROLE, ids, messages))
            prompts.append(ids)
        replies = self._call(self.checker_model, weights.get(CHECKER_ROLE), requests, self.config.checker_sampling)
        for (i, sql), ids, reply in zip(to_learn, prompts, replies):
            parsed = prompt_lib.parse_checker_reply(reply.text)
            reason = parsed.reason or "the Checker rejected this statement"
            trajectory = episodes[i].trajectory
            trajectory.turns.append(Turn(
                role=CHECKER_ROLE, segment=_next_segment(trajectory), prompt_ids=ids,
                completion_ids=list(reply.ids), completion_logprobs=list(reply.logprobs),
                finish_reason=reply.finish_reason, text=reply.text,
                verdict={"source": "learned", "ok": parsed.approve, "readable": parsed.readable,
                         "reason": parsed.reason},
                info={"judged_turn": trajectory.turns.index(turns[i])}))
            turns[i].verdict = {"source": "learned", "ok": parsed.approve, "reason": parsed.reason,
                                "readable": parsed.readable}
            if not parsed.approve:
                verdicts[i] = Verdict(False, f"The Checker rejected this statement: {reason}", "learned")

    # -- the environment ---------------------------------------------------

    def _apply(self, episode: _Episode, turn: Turn, rejection: Optional[Verdict]) -> None:
        with self._timed("env_s"):
            observation, reward, done, info = episode.env.step(turn.text, rejection)
        turn.info = {k: v for k, v in info.items() if k != "verdict"}
        episode.turn += 1
        episode.messages.append(Message(ASSISTANT, turn.text))
        if done:
            turn.observation = None
            self._finish(episode, info)
            return
        turn.observation = observation
        episode.messages.append(Message(USER, observation))
        if self.tokenizer is not None:
            with self._timed("prompt_s"):
                self._extend_prompt(episode, turn)

    def _finish(self, episode: _Episode, info: dict, status: Optional[str] = None) -> None:
        trajectory = episode.trajectory
        trajectory.final_info = dict(info)
        if status is None:
            env_status = info.get("status")
            status = CORRECT if info.get("correct") else {
                sql_env.FORMAT_FAILURE: FORMAT_FAILURE, sql_env.ROUND_LIMIT: ROUND_LIMIT}.get(env_status, WRONG)
        trajectory.status = status
        trajectory.reward = 1.0 if status == CORRECT else 0.0
        for turn in trajectory.role_turns(CHECKER_ROLE):
            turn.reward = checker_reward(turn, trajectory)
        episode.done = True
        if hasattr(self.assistant, "forget"):
            self.assistant.forget(episode.uid)
        if self._on_finish is not None:
            self._on_finish(trajectory)

    # -- prompts -----------------------------------------------------------

    def _render(self, messages: Sequence[Message]) -> str:
        return render_chat(self.tokenizer, messages, add_generation_prompt=True)

    def _extend_prompt(self, episode: _Episode, turn: Turn) -> None:
        """prompt + completion + the ids of the turns the template adds; a new segment where that cannot be."""
        previous_ids = episode.prompt_ids + turn.completion_ids
        previous_text = decode_ids(self.tokenizer, previous_ids)
        full_text = self._render(episode.messages)
        if full_text.startswith(previous_text):
            ids = previous_ids + tokenize_text(self.tokenizer, full_text[len(previous_text):])
            if decode_ids(self.tokenizer, ids) == full_text:
                episode.prompt_ids = ids
                return
        episode.segment = _next_segment(episode.trajectory)
        episode.prompt_ids = tokenize_text(self.tokenizer, full_text)

    def _fit_prompt(self, episode: _Episode) -> bool:
        """Drops old observations until the prompt fits the budget; ends the episode when nothing does."""
        if self.budget is None or episode.prompt_ids is None or len(episode.prompt_ids) <= self.budget:
            return True
        fits = lambda messages: len(tokenize_text(self.tokenizer, self._render(messages))) <= self.budget  # noqa
        messages, dropped = fit_observations(episode.messages, episode.opening_length, fits)
        if dropped:
            episode.messages = messages
            episode.trajectory.dropped_observations += dropped
            episode.segment = _next_segment(episode.trajectory)
            episode.prompt_ids = tokenize_text(self.tokenizer, self._render(messages))
        if len(episode.prompt_ids) <= self.budget:
            return True
        episode.env.close()
        self._finish(episode, {"status": CONTEXT_OVERFLOW, "correct": False, "task_id": episode.task.task_id,
                               "task_type": episode.task.task_type, "rounds": episode.turn,
                               "prompt_tokens": len(episode.prompt_ids)}, CONTEXT_OVERFLOW)
        return False

    # -- reflection --------------------------------------------------------

    def _reflect(self, failed: list[_Episode], weights: dict, memory: ReflectionMemory) -> None:
        with self._timed("reflection_s"):
            self._reflect_batch(failed, weights, memory)

    def _reflect_batch(self, failed: list[_Episode], weights: dict, memory: ReflectionMemory) -> None:
        requests, prompts = [], []
        for episode in failed:
            messages = prompt_lib.reflection_prompt(episode.task.prompt, episode.messages[episode.opening_length:])
            ids = tokenize_text(self.tokenizer, self._render(messages))
            requests.append(self._request(episode, REFLECTION_ROLE, ids, messages))
            prompts.append(ids)
        replies = self._call(self.reflector, weights.get(ASSISTANT_ROLE), requests, self.config.reflection)
        for episode, ids, reply in zip(failed, prompts, replies):
            trajectory = episode.trajectory
            trajectory.turns.append(Turn(
                role=REFLECTION_ROLE, segment=_next_segment(trajectory), prompt_ids=ids,
                completion_ids=list(reply.ids), completion_logprobs=list(reply.logprobs),
                finish_reason=reply.finish_reason, text=reply.text))
            memory.add(episode.task.task_id, reply.text)


def episode_key(key: jax.Array, task: SqlTask, sample: int, trial: int) -> jax.Array:
    """The episode's PRNG key: a function of the task id, sample and trial only, so an episode
    draws the same tokens whatever batch it runs in."""
    key = jax.random.fold_in(key, zlib.crc32(task.task_id.encode("utf-8")) & 0x7FFFFFFF)
    return jax.random.fold_in(jax.random.fold_in(key, sample), trial)


def checker_reward(turn: Turn, trajectory: Trajectory) -> float:
    """+1 when a learned Checker's verdict agrees with what execution showed: it approved a statement
    that ran without error in an episode that succeeded, or rejected one in an episode that failed."""
    if not turn.verdict["ok"]:
        return float(not trajectory.correct)
    judged = trajectory.turns[turn.info["judged_turn"]]
    ran_clean = judged.info.get("executed", False) and judged.info.get("error") is None
    return float(ran_clean and trajectory.correct)


def _remember(memory: ReflectionMemory, before: dict, trajectories: Sequence[Trajectory]) -> None:
    """Long-term memory after a run: `before` plus the run's reflections in trial, task, sample order (with
    several processes, each wrote only its own episodes' reflections during the run)."""
    memory.restore(before)
    for trajectory in trajectories:
        for turn in trajectory.role_turns(REFLECTION_ROLE):
            memory.add(trajectory.task_id, turn.text)


def _next_segment(trajectory: Trajectory) -> int:
    return 1 + max((t.segment for t in trajectory.turns), default=-1)


def _difference(after: RolloutStats, before: RolloutStats) -> RolloutStats:
    return RolloutStats(**{f.name: getattr(after, f.name) - getattr(before, f.name)
                           for f in dataclasses.fields(RolloutStats)})
