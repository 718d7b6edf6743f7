"""Where a rollout's time went, and how much it produced: the engine's `stats` and `last_stats`.

Every reply call of every role goes through `RolloutStats.call`, which counts
it (one per role per turn) and the ids it returned; `timed(field)` adds the
seconds of a block to one field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Sequence

from cmat_jax.agents.replies import Reply, ReplySource, Request
from cmat_jax.sampling.policy import SamplingPolicy


@dataclasses.dataclass
class RolloutStats:
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

    @contextlib.contextmanager
    def timed(self, field: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, field, getattr(self, field) + time.perf_counter() - start)

    def call(self, source: ReplySource, weights, requests: Sequence[Request], settings: SamplingPolicy
             ) -> list[Reply]:
        """One reply call, counted (a call without requests is made, since other processes may have some,
        but not counted)."""
        replies = source(weights, requests, settings)
        self.sampler_calls += bool(requests)
        self.new_tokens += sum(len(r.ids) for r in replies)
        return replies

    def since(self, before: RolloutStats) -> RolloutStats:
        """What was added after `before` (a copy of these stats taken earlier)."""
        return RolloutStats(**{f.name: getattr(self, f.name) - getattr(before, f.name)
                               for f in dataclasses.fields(RolloutStats)})
