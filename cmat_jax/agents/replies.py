"""Where replies come from: a model through the batched sampler, or a scripted agent.

The rollout engine asks for the replies of many episodes at once. A
`ModelReplies` answers with one `Sampler.generate` call over all their prompts,
with the weights of the role that speaks; a `ScriptedReplies` asks one scripted
agent per episode (the oracle), so scripted and model agents run through the
same engine. Agents never call the model themselves.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from cmat_jax.chat import Message
from cmat_jax.data.tokenizer import decode_ids, end_of_turn_ids
from cmat_jax.sampling.sampler import Sampler


@dataclasses.dataclass
class Reply:
    text: str
    ids: list[int]  # sampled ids (empty for scripted replies)
    logprobs: list[float]
    finish_reason: str  # eos | length | scripted


@dataclasses.dataclass(frozen=True)
class Request:
    """What a reply source may read of one episode."""

    uid: int  # the episode's stable id (scripted agents keep their state under it)
    task: Any
    messages: Sequence[Message]  # the conversation so far, ending with a user turn
    prompt_ids: Optional[list[int]]  # the model's prompt (None without a tokenizer)
    key: Optional[jax.Array]  # this row's PRNG key (None for greedy decoding)


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_k: Optional[int] = None
    top_p: Optional[float] = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class ModelReplies:
    """One batched sampler call per request list; generation stops at the chat template's end of turn."""

    def __init__(self, sampler: Sampler, tokenizer):
        self.sampler = sampler
        self.tokenizer = tokenizer
        self.eos_ids = sorted(set(end_of_turn_ids(tokenizer)))

    def __call__(self, weights, requests: Sequence[Request], settings: SamplingSettings) -> list[Reply]:
        if not requests:
            return []
        keys = None if settings.greedy else jax.numpy.stack([r.key for r in requests])
        result = self.sampler.generate(
            weights, [r.prompt_ids for r in requests], settings.max_new_tokens, key=keys,
            temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p, eos_ids=self.eos_ids,
            tokenizer=lambda ids: decode_ids(self.tokenizer, ids))
        return [Reply(text, ids, np.asarray(lp, np.float32).tolist(), reason)
                for text, ids, lp, reason in zip(result.texts, result.token_ids, result.logprobs,
                                                  result.finish_reasons)]


class ScriptedReplies:
    """Replies of scripted agents (objects with begin(task) and act(messages)), one agent per episode."""

    def __init__(self, make_agent: Callable[[], Any]):
        self.make_agent = make_agent
        self._agents: dict[int, Any] = {}

    def __call__(self, weights, requests: Sequence[Request], settings: SamplingSettings) -> list[Reply]:
        replies = []
        for r in requests:
            agent = self._agents.get(r.uid)
            if agent is None:
                agent = self._agents[r.uid] = self.make_agent()
                agent.begin(r.task)
            replies.append(Reply(agent.act(tuple(r.messages)), [], [], "scripted"))
        return replies

    def forget(self, uid: int) -> None:
        self._agents.pop(uid, None)
