"""Where replies come from: a model through the batched sampler, or a scripted agent.

The rollout engine asks for the replies of many episodes at once, from a
`ReplySource`: called with a role's weights, the requests and the sampling
settings, it returns one reply per request; it says how many contexts it can
hold at once (`max_contexts`) and lets the engine `forget` one or
`clear_contexts`. A `ModelReplies` answers with one sampler call over all their prompts, with the
weights of the role that speaks; a `ScriptedReplies` asks one scripted agent per
episode (the oracle), so scripted and model agents run through the same engine.
Agents never call the model themselves.

Requests that name a `context` (the engine names the episode for its Assistant
turns) go to persistent KV slots (sampling/slots.py): each context keeps its
cache between calls and only the new ids of its prompt are prefilled. Requests
without one are prefilled whole (`Sampler.generate`). `forget(context)` frees a
context's slot; `clear_contexts()` ends the slots' session and frees their cache
(the engine calls it at the start and end of every rollout: cached keys and
values are only valid for the weights that computed them).

With several processes, each process sends only its own episodes' requests, and
every process makes the same calls: a `ModelReplies` call joins all of them,
ordered by episode id, into one sampler call (a global program, so every
process must enter it with the same inputs), and returns this process's
replies. A forgotten context is released at the next call, on every process,
so every process's slot table stays the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Optional, Protocol, Sequence

import jax
import numpy as np

from cmat_jax import distributed
from cmat_jax.chat import Message
from cmat_jax.data.tokenizer import decode_ids, end_of_turn_ids
from cmat_jax.sampling.policy import SamplingPolicy
from cmat_jax.sampling.sampler import Sampler
from cmat_jax.sampling.slots import SlotSampler


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
    context: Optional[Hashable] = None  # the conversation the prompt extends (persistent KV slots); None: none


class ReplySource(Protocol):
    """What the rollout engine calls for a role's replies. A source that keeps nothing between calls may
    subclass it for the context members: no limit, nothing to forget or clear."""

    def __call__(self, weights, requests: Sequence[Request], settings: SamplingPolicy) -> list[Reply]:
        """One reply per request, in order; `weights` are the speaking role's (None for scripted sources)."""
        ...

    @property
    def max_contexts(self) -> Optional[int]:
        """How many contexts (episodes) the source holds at once; None: no limit."""
        return None

    def forget(self, context: Hashable) -> None:
        """The context's episode is over: what the source keeps for it may go."""

    def clear_contexts(self) -> None:
        """Drops every context (the engine calls it at the start and end of each rollout)."""


class ModelReplies:
    """One batched sampler call per request list; generation stops at the chat template's end of turn.

    Requests with a context use persistent slots (`slots`, a SlotSampler over `sampler`); a call's requests
    either all name one or none does. `max_contexts` is how many contexts the slots can hold at once.
    """

    def __init__(self, sampler: Sampler, tokenizer, *, max_append: int = 256):
        self.sampler = sampler
        self.slots = SlotSampler(sampler, max_append=max_append)
        self.tokenizer = tokenizer
        self.eos_ids = sorted(set(end_of_turn_ids(tokenizer)))
        self._forgotten: list[Hashable] = []  # contexts to release at the next call (several processes)

    @property
    def max_contexts(self) -> Optional[int]:
        return self.sampler.max_batch

    def __call__(self, weights, requests: Sequence[Request], policy: SamplingPolicy) -> list[Reply]:
        if jax.process_count() > 1:
            return self._joined(weights, requests, policy)
        return self._generate(weights, requests, policy)

    def _generate(self, weights, requests: Sequence[Request], policy: SamplingPolicy) -> list[Reply]:
        if not requests:
            return []
        keys = None if policy.greedy else jax.numpy.stack([r.key for r in requests])
        kwargs = dict(key=keys, eos_ids=self.eos_ids, tokenizer=lambda ids: decode_ids(self.tokenizer, ids))
        prompts = [r.prompt_ids for r in requests]
        contexts = [r.context for r in requests]
        if all(c is None for c in contexts):
            result = self.sampler.generate(weights, prompts, policy, **kwargs)
        elif any(c is None for c in contexts):
            raise ValueError("a reply call mixes requests with and without a context; name a context for every "
                             "request (persistent slots) or for none (full prefill)")
        else:
            result = self.slots.generate(weights, contexts, prompts, policy, **kwargs)
        return [Reply(text, ids, np.asarray(lp, np.float32).tolist(), reason)
                for text, ids, lp, reason in zip(result.texts, result.token_ids, result.logprobs,
                                                  result.finish_reasons)]

    def _joined(self, weights, requests: Sequence[Request], policy: SamplingPolicy) -> list[Reply]:
        """Several processes: each plays its own episodes, and every process makes the same calls. The call
        joins every process's requests, ordered by episode id (the order one process would send them in),
        and releases the contexts every process forgot since the last call; this process's replies."""
        mine = [(r.uid, r.prompt_ids, r.context,
                 None if r.key is None else (np.asarray(jax.random.key_data(r.key)), str(jax.random.key_impl(r.key))))
                for r in requests]
        shares = distributed.gather_objects((mine, self._forgotten))
        self._forgotten = []
        for _, forgotten in shares:
            for context in forgotten:
                self.slots.release(context)
        joined = sorted((row for share, _ in shares for row in share), key=lambda row: row[0])
        replies = self._generate(weights, [
            Request(uid, None, (), ids, None if key is None else jax.random.wrap_key_data(key[0], impl=key[1]),
                    context) for uid, ids, context, key in joined], policy)
        by_uid = {row[0]: reply for row, reply in zip(joined, replies)}
        return [by_uid[r.uid] for r in requests]

    def forget(self, context: Hashable) -> None:
        """The context (episode) is over: its slot may go to another (with several processes, at the next call,
        when every process learns of it)."""
        if jax.process_count() > 1:
            self._forgotten.append(context)
        else:
            self.slots.release(context)

    def clear_contexts(self) -> None:
        self.slots.clear()
        self._forgotten = []


class ScriptedReplies:
    """Replies of scripted agents (objects with begin(task) and act(messages)), one agent per episode."""

    def __init__(self, make_agent: Callable[[], Any]):
        self.make_agent = make_agent
        self._agents: dict[int, Any] = {}

    def __call__(self, weights, requests: Sequence[Request], policy: SamplingPolicy) -> list[Reply]:
        replies = []
        for r in requests:
            agent = self._agents.get(r.uid)
            if agent is None:
                agent = self._agents[r.uid] = self.make_agent()
                agent.begin(r.task)
            replies.append(Reply(agent.act(tuple(r.messages)), [], [], "scripted"))
        return replies

    @property
    def max_contexts(self) -> Optional[int]:
        return None  # one agent object per episode: no limit

    def forget(self, uid: int) -> None:
        self._agents.pop(uid, None)

    def clear_contexts(self) -> None:
        self._agents.clear()
