"""The Checker role: it judges each statement the Assistant proposes, before the environment sees it.

Modes (`CHECKER_MODES`, the one vocabulary of the rollout, evaluation and
benchmark settings): off; static (the task's static Checker, supplied by the
environments); learned (a model role: one batched reply call per turn over the
statements of every live episode); static+learned (static first: only the
statements it approves go to the learned Checker).

A rejection keeps the statement from running; its reason is the observation:
the static Checker's own sentence, or "The Checker rejected this statement:
<reason>". Each judged Assistant turn records the verdict (`StaticVerdict` or
`LearnedVerdict`); each learned Checker call writes a turn of its own (a
one-turn conversation: the next segment), whose reward is set when the
episode ends (agents/rewards.py). A statement whose Checker prompt is too long
for the sampler is not sent to the learned Checker: it goes through unjudged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from cmat_jax.agents import prompts as prompt_lib
from cmat_jax.agents.trajectory import CHECKER_ROLE, LearnedVerdict, StaticVerdict, Turn

if TYPE_CHECKING:  # kept out of the import, so settings parsers can read CHECKER_MODES without JAX
    from cmat_jax.agents.episode import Episode
    from cmat_jax.agents.prompt_ids import PromptIds
    from cmat_jax.agents.replies import ReplySource
    from cmat_jax.sampling.policy import SamplingPolicy
    from cmat_jax.agents.stats import RolloutStats
    from cmat_jax.envs.base import Environments

CHECKER_MODES = ("off", "static", "learned", "static+learned")


class CheckerRole:
    """The Checker of one engine, in `mode` (one of CHECKER_MODES); `model` speaks for the learned Checker."""

    def __init__(self, mode: str, environments: Environments, model: Optional[ReplySource],
                 settings: SamplingPolicy, prompts: PromptIds, stats: RolloutStats):
        self.static = "static" in mode
        self.learned = "learned" in mode
        if self.learned and model is None:
            raise ValueError(f"checker={mode!r} needs a model for the Checker role; use 'static' or 'off' "
                             "with a scripted agent, or give the engine a checker_model")
        self.environments = environments
        self.model = model
        self.settings = settings
        self.prompts = prompts
        self.stats = stats

    def begin(self, episode: Episode) -> None:
        if self.static:
            episode.checker = self.environments.static_checker(episode.task)

    def judge(self, episodes: list[Episode], turns: list[Turn], weights: dict) -> list[Optional[str]]:
        """The reason the Checker rejects each turn's pending action (None: approved, or no action)."""
        rejections: list[Optional[str]] = [None] * len(episodes)
        if not (self.static or self.learned):
            return rejections
        to_learn = []
        for i, (episode, turn) in enumerate(zip(episodes, turns)):
            action = episode.env.pending_action(turn.text)
            if action is None:
                continue
            if episode.checker is not None:
                with self.stats.timed("static_checker_s"):
                    static = episode.checker.check(action)
                turn.verdict = StaticVerdict(source="static", ok=static.ok, reason=static.reason, rule=static.rule)
                if not static.ok:
                    rejections[i] = static.reason
                    continue
            if self.learned:
                to_learn.append((i, action))
        if self.learned:  # a call even without statements: other processes may have some
            with self.stats.timed("learned_checker_s"):
                self._learned(episodes, turns, to_learn, rejections, weights)
        return rejections

    def _learned(self, episodes: list[Episode], turns: list[Turn], to_learn: list[tuple[int, str]],
                 rejections: list[Optional[str]], weights: dict) -> None:
        """One batched reply call of the learned Checker over the statements in `to_learn`; records its turns."""
        limit = self.prompts.reply_budget(self.settings.max_new_tokens)
        judged, requests, prompts = [], [], []
        for i, action in to_learn:
            episode = episodes[i]
            messages = prompt_lib.checker_prompt(episode.task.prompt, action)
            ids = self.prompts.encode(messages)
            if limit is not None and len(ids) > limit:
                continue  # too long for the sampler: the learned Checker lets this statement through unjudged
            judged.append(i)
            requests.append(episode.request(CHECKER_ROLE, ids, messages))
            prompts.append(ids)
        replies = self.stats.call(self.model, weights.get(CHECKER_ROLE), requests, self.settings)
        for i, ids, reply in zip(judged, prompts, replies):
            parsed = prompt_lib.parse_checker_reply(reply.text)
            trajectory = episodes[i].trajectory
            # The Checker's own turn writes `readable` before `reason`: the record's key order.
            trajectory.turns.append(Turn(
                role=CHECKER_ROLE, segment=trajectory.next_segment(), prompt_ids=ids,
                completion_ids=list(reply.ids), completion_logprobs=list(reply.logprobs),
                finish_reason=reply.finish_reason, text=reply.text,
                verdict=LearnedVerdict(source="learned", ok=parsed.approve, readable=parsed.readable,
                                       reason=parsed.reason),
                info={"judged_turn": trajectory.turns.index(turns[i])}))
            turns[i].verdict = LearnedVerdict(source="learned", ok=parsed.approve, reason=parsed.reason,
                                              readable=parsed.readable)
            if not parsed.approve:
                reason = parsed.reason or "the Checker rejected this statement"
                rejections[i] = f"The Checker rejected this statement: {reason}"
